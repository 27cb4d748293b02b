// Example replicator transform in JavaScript, built into a WebAssembly component of the world
// `record-transformer` (wit/plugin.wit) by componentize-js (see build.mjs).
//
// For insert/update events whose `data` is a JSON object:
//   - skip soft-deleted records (`deletedAt` present and not null, or `deleted: true`);
//   - skip records whose `email` ends with `skipEmailDomain` (default "@test.com");
//   - remove the `strip` fields (default password, ssn, creditCard);
//   - add `fullName` = firstName + " " + lastName when both are strings;
//   - add `emailHash` = lowercase hex SHA-256 of the email, trimmed and lowercased.
// Deletes, and events whose data is absent or not a JSON object, pass through unchanged.
//
// Config (JSON object, every key optional):
//   {"strip": [...], "skipEmailDomain": "@test.com" | null, "hashEmail": true, "fullName": true}
//
// componentize-js mapping used here: the interface export `record-transform` is the exported
// object `recordTransform`; `json` (list<u8>) is a Uint8Array; option<T> is T | undefined;
// u64 is a BigInt; enums are strings; variants are {tag, val}. A `result` export returns its
// `ok` value normally; its `err` value is the `payload` property of whatever is thrown (an
// Error thrown without `payload` traps the instance instead, so every error goes through
// `fail` below).
import { log } from 'replicator:plugin/log@0.1.0';
import { sha256Hex } from './sha256.js';

const DEFAULTS = Object.freeze({
  strip: Object.freeze(['password', 'ssn', 'creditCard']),
  skipEmailDomain: '@test.com',
  hashEmail: true,
  fullName: true,
});
const KNOWN_KEYS = Object.keys(DEFAULTS);

let config = DEFAULTS;

/** A thrown value componentize-js turns into `err(transform-error)`. */
class TransformFailure extends Error {
  constructor(tag, code, message) {
    super(message);
    this.payload = { tag, val: { code, message } };
  }
}
const fail = (tag, code, message) => {
  throw new TransformFailure(tag, code, message);
};

const utf8 = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();

/** Bytes -> text; invalid UTF-8 becomes a `tag` failure. */
function decode(bytes, tag, what) {
  try {
    return utf8.decode(bytes);
  } catch (e) {
    return fail(tag, 'invalid-utf8', `${what} is not valid UTF-8`);
  }
}

/** Text -> JSON value; invalid JSON becomes a `tag` failure. */
function parseJson(text, tag, what) {
  try {
    return JSON.parse(text);
  } catch (e) {
    return fail(tag, 'invalid-json', `${what} is not valid JSON: ${e.message}`);
  }
}

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// Unicode White_Space, the set Rust's str::trim removes (JS trim() and Python strip() differ
// slightly), so every example language hashes the same email the same way.
const TRIM = /^[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+|[\t\n\v\f\r \u0085\u00a0\u1680\u2000-\u200a\u2028\u2029\u202f\u205f\u3000]+$/g;
export const normalizeEmail = (email) => email.replace(TRIM, '').toLowerCase();

/** Validate a config object; returns the effective config. */
export function parseConfig(bytes) {
  const text = decode(bytes, 'invalid-config', 'config');
  if (text.trim() === '') return DEFAULTS; // no config at all: the defaults
  const raw = parseJson(text, 'invalid-config', 'config');
  if (!isObject(raw)) fail('invalid-config', 'invalid-config', 'config must be a JSON object');
  const out = { ...DEFAULTS };
  for (const [key, value] of Object.entries(raw)) {
    switch (key) {
      case 'strip':
        if (!Array.isArray(value) || !value.every((f) => typeof f === 'string')) {
          fail('invalid-config', 'invalid-value', '`strip` must be an array of field names (strings)');
        }
        out.strip = Object.freeze([...value]);
        break;
      case 'skipEmailDomain':
        if (value !== null && typeof value !== 'string') {
          fail('invalid-config', 'invalid-value', '`skipEmailDomain` must be a string or null');
        }
        out.skipEmailDomain = value;
        break;
      case 'hashEmail':
      case 'fullName':
        if (typeof value !== 'boolean') {
          fail('invalid-config', 'invalid-value', `\`${key}\` must be true or false`);
        }
        out[key] = value;
        break;
      default:
        fail('invalid-config', 'unknown-key',
          `unknown config key \`${key}\` (known: ${KNOWN_KEYS.join(', ')})`);
    }
  }
  return Object.freeze(out);
}

/**
 * The record logic on a parsed document: returns the new document, or `null` to skip it.
 * Mutates and returns `doc`.
 */
export function transformDocument(doc, cfg = config) {
  if (('deletedAt' in doc && doc.deletedAt !== null) || doc.deleted === true) return null;
  const email = typeof doc.email === 'string' ? doc.email : undefined;
  if (email !== undefined && cfg.skipEmailDomain
      && normalizeEmail(email).endsWith(normalizeEmail(cfg.skipEmailDomain))) {
    return null;
  }
  for (const field of cfg.strip) delete doc[field];
  if (cfg.fullName && typeof doc.firstName === 'string' && typeof doc.lastName === 'string') {
    doc.fullName = `${doc.firstName} ${doc.lastName}`;
  }
  if (cfg.hashEmail && email !== undefined) doc.emailHash = sha256Hex(normalizeEmail(email));
  return doc;
}

function transformEvent(event) {
  if (event.action === 'delete' || event.data === undefined) return event;
  const what = `data of ${event.resource}/${event.id}`;
  const doc = parseJson(decode(event.data, 'invalid-record', what), 'invalid-record', what);
  if (!isObject(doc)) return event;
  const out = transformDocument(doc, config);
  if (out === null) {
    log('debug', `skipped ${event.resource}/${event.id}`);
    return undefined;
  }
  return { ...event, data: encoder.encode(JSON.stringify(out)) };
}

/** Anything thrown that is not ours becomes `other` rather than a trap. */
function guarded(fn) {
  try {
    return fn();
  } catch (e) {
    if (e instanceof TransformFailure) throw e;
    throw new TransformFailure('other', 'internal', String(e && e.message ? e.message : e));
  }
}

export const recordTransform = {
  init(configBytes) {
    guarded(() => {
      config = parseConfig(configBytes);
    });
    log('info', `js-transform ready: ${JSON.stringify(config)}`);
  },
  transform(event) {
    return guarded(() => transformEvent(event));
  },
};
