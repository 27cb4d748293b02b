// Stands in for the host's `replicator:plugin/digest@0.1.0` import outside the host (plain Node
// tests, jco-transpiled components), with node:crypto.
import { createHash, createHmac } from 'node:crypto';

const ALGORITHMS = { sha256: 'sha256', sha384: 'sha384', sha512: 'sha512' };
const algorithmOf = (a) => {
  if (!(a in ALGORITHMS)) throw new TypeError(`"${a}" is not one of the cases of algorithm`);
  return ALGORITHMS[a];
};

export const hash = (algorithm, data) => createHash(algorithmOf(algorithm)).update(data).digest('hex');
export const hmac = (algorithm, key, data) =>
  createHmac(algorithmOf(algorithm), key).update(data).digest('hex');
