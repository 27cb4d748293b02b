// Types of state.js: the host's key/value state, for drivers only.
import type { JsonValue } from './index.js';

export interface State {
  /** The bytes stored under `key`, or undefined. */
  get(key: string): Uint8Array | undefined;
  /** The JSON value stored under `key`, or undefined. */
  getJson(key: string): JsonValue | undefined;
  /** Stores bytes (a string as UTF-8); throws when the host refuses (over its 1 MiB). */
  set(key: string, value: Uint8Array | string): void;
  /** Stores a JSON value. */
  setJson(key: string, value: unknown): void;
  delete(key: string): void;
}
export const state: State;
