// Node module hooks (see setup.mjs): the component imports resolve to host.mjs.
const HOST = new URL('./host.mjs', import.meta.url).href;
const IMPORTS = new Set([
  'replicator:plugin/log@0.1.0',
  'replicator:plugin/digest@0.1.0',
  'replicator:plugin/state@0.1.0',
]);
export async function resolve(specifier, context, next) {
  if (IMPORTS.has(specifier)) return { url: HOST, shortCircuit: true };
  return next(specifier, context);
}
