// Node module hooks: resolve the component imports of transform.js to local shims.
const SHIMS = {
  'replicator:plugin/log@0.1.0': new URL('./log-shim.mjs', import.meta.url).href,
  'replicator:plugin/digest@0.1.0': new URL('./digest-shim.mjs', import.meta.url).href,
};
export async function resolve(specifier, context, next) {
  if (specifier in SHIMS) return { url: SHIMS[specifier], shortCircuit: true };
  return next(specifier, context);
}
