// Node module hooks (see setup.mjs): the component imports resolve to host.mjs and, for
// wasi:http, to wasi-http.mjs.
const HOST = new URL('./host.mjs', import.meta.url).href;
const HTTP = new URL('./wasi-http.mjs', import.meta.url).href;
const IMPORTS = {
  'replicator:plugin/log@0.1.0': HOST,
  'replicator:plugin/digest@0.1.0': HOST,
  'replicator:plugin/state@0.1.0': HOST,
  'wasi:http/outgoing-handler@0.2.12': HTTP,
  'wasi:http/types@0.2.12': HTTP,
};
export async function resolve(specifier, context, next) {
  if (Object.hasOwn(IMPORTS, specifier)) return { url: IMPORTS[specifier], shortCircuit: true };
  return next(specifier, context);
}
