// Stands in for the host's imports (replicator:plugin/log, digest and state @0.1.0) when the SDK
// runs in plain Node: setup.mjs resolves the three specifiers to this module. Validates the
// arguments as componentize-js's bindings would, and records what the SDK asked for.
import { createHash, createHmac } from 'node:crypto';

export const logged = [];
export const stored = new Map();
// When set, state `set` fails with this message (the host's err string).
export const refuse = { set: undefined };

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];
const ALGORITHMS = ['sha256', 'sha384', 'sha512'];
const bytes = (v, what) => {
  if (!(v instanceof Uint8Array)) throw new TypeError(`${what} must be a Uint8Array`);
  return v;
};
const algorithm = (a) => {
  if (!ALGORITHMS.includes(a)) throw new TypeError(`"${a}" is not one of the cases of algorithm`);
  return a;
};

export function log(level, message) {
  if (!LEVELS.includes(level)) throw new TypeError(`"${level}" is not one of the cases of level`);
  if (typeof message !== 'string') throw new TypeError('message must be a string');
  logged.push([level, message]);
}

export const hash = (a, data) => createHash(algorithm(a)).update(bytes(data, 'data')).digest('hex');
export const hmac = (a, key, data) =>
  createHmac(algorithm(a), bytes(key, 'key')).update(bytes(data, 'data')).digest('hex');

export const get = (key) => stored.get(key);
export function set(key, value) {
  bytes(value, 'value');
  if (refuse.set !== undefined) {
    // componentize-js throws the err of an imported result as an Error carrying `payload`.
    throw Object.assign(new Error(refuse.set), { payload: refuse.set });
  }
  stored.set(key, value);
}
function remove(key) {
  stored.delete(key);
}
export { remove as delete };
