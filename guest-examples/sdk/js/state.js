// The host's key/value state for a driver (world `sink-driver` only: a transform's world does not
// import `replicator:plugin/state`, so a transform must not import this file). Shared by the
// driver's instances, kept for the life of the process, at most 1 MiB in all.
//
//   import { state } from './sdk/state.js';
//   state.setJson('token', { value, expires });   const t = state.getJson('token');

import * as host from 'replicator:plugin/state@0.1.0';
import { jsonBytes, parseJson } from './index.js';

const encoder = new TextEncoder();

export const state = Object.freeze({
  /** The bytes stored under `key`, or undefined. */
  get(key) {
    return host.get(key);
  },
  /** The JSON value stored under `key` (by setJson), or undefined. */
  getJson(key) {
    const bytes = host.get(key);
    return bytes === undefined ? undefined : parseJson(bytes);
  },
  /** Stores bytes (a string is stored as UTF-8); throws when the host refuses (over its limit). */
  set(key, value) {
    const bytes = typeof value === 'string' ? encoder.encode(value) : value;
    try {
      host.set(key, bytes);
    } catch (e) {
      throw new Error(`state.set(${JSON.stringify(key)}): ${e && e.payload !== undefined ? e.payload : e}`);
    }
  },
  /** Stores a JSON value. */
  setJson(key, value) {
    state.set(key, jsonBytes(value));
  },
  delete(key) {
    host.delete(key);
  },
});
