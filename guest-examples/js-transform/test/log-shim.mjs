// Stands in for the host's `replicator:plugin/log@0.1.0` import when transform.js runs in plain Node.
export const messages = [];
export function log(level, message) {
  if (!['trace', 'debug', 'info', 'warn', 'error'].includes(level)) {
    throw new TypeError(`"${level}" is not one of the cases of level`);
  }
  if (typeof message !== 'string') throw new TypeError('log message must be a string');
  messages.push([level, message]);
}
