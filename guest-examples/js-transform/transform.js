// Example replicator transform in JavaScript: the same job as ../rust-transform (the transforms of
// s3db.js's ReplicatorPlugin docs), built into a WebAssembly component of the world
// `batch-transformer` (wit/plugin.wit) by componentize-js (see build.mjs).
//
// For insert/update events whose `data` is a JSON object, in this order:
//  1. `failMe: true` -> failed(invalid-record, code "fail-me") (lets tests exercise failures);
//  2. soft-deleted records (`deletedAt` non-null, or `deleted: true`) -> skip;
//  3. `email` ending with `skipEmailDomain` (default "@test.com", case-insensitive) -> skip;
//  4. `rename` old -> new fields;
//  5. `fullName` = firstName + " " + lastName when both exist (non-strings as JSON text);
//  6. `emailHash` = lowercase hex SHA-256 of the email, trimmed and lowercased;
//  7. remove the `strip` fields (default password, ssn, creditCard);
//  8. set the `addFields` (overwriting);
//  9. `fanOut: n` (integer 1..10) -> many: n copies with ids `<id>-0` ... `<id>-<n-1>`.
// `before` gets steps 4-8 too (so stripped fields don't leak through it). Deletes, and events
// whose data is absent or not a JSON object, pass through unchanged; invalid JSON in `data` or
// `before` fails that record only (code "invalid-json").
//
// Config (JSON object, every key optional; any other key -> invalid-config):
//   {"strip": [..], "skipEmailDomain": "@test.com" | null | "", "hashEmail": true,
//    "fullName": true, "skipSoftDeleted": true, "rename": {"old": "new"}, "addFields": {"k": v}}
//
// It is written with the JavaScript SDK (../sdk/js, imported by its path): the SDK exports
// `batch-transform`, parses the config and each document on first read (invalid JSON in `data`
// or `before` fails that record as invalid-record/invalid-json), encodes the outcomes, and fails
// a record whose code throws (other/exception) without touching the others. build.mjs bundles
// this file with the SDK first (componentize-js loads relative imports only from below the
// source's directory).
import { defineTransform, fail, InvalidConfig, keep, log, many, jsonBytes, sha256, skip, update } from '../sdk/js/index.js';

const DEFAULTS = Object.freeze({
  strip: Object.freeze(['password', 'ssn', 'creditCard']),
  skipEmailDomain: '@test.com',
  hashEmail: true,
  fullName: true,
  skipSoftDeleted: true,
  rename: Object.freeze([]),
  addFields: Object.freeze({}),
});

let config = DEFAULTS;

const badConfig = (message) => {
  throw new InvalidConfig(message);
};

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

// Unicode White_Space: what Rust's str::trim removes (JS's trim() differs slightly: it removes
// U+FEFF and keeps U+0085), so every example hashes the same email the same way. One list for
// both the quick check of the ends and the regular expression.
const WS = '\t\n\v\f\r \u0085\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000';
const WS_CODES = new Set(Array.from(WS, (ch) => ch.charCodeAt(0)));
const TRIM = new RegExp(`^[${WS}]+|[${WS}]+$`, 'g');
export const normalizeEmail = (email) => {
  // The regular expression only when an end is white space: it is the slow path in the engine.
  const n = email.length;
  const padded = n > 0 && (WS_CODES.has(email.charCodeAt(0)) || WS_CODES.has(email.charCodeAt(n - 1)));
  return (padded ? email.replace(TRIM, '') : email).toLowerCase();
};

/** Validates the config given to `init` (a JSON value, `{}` when none); returns the effective config. */
export function parseConfig(raw) {
  if (!isObject(raw)) badConfig('config must be a JSON object');
  const c = { ...DEFAULTS };
  for (const [key, v] of Object.entries(raw)) {
    switch (key) {
      case 'strip':
        if (!Array.isArray(v) || !v.every((s) => typeof s === 'string')) {
          badConfig('`strip` must be an array of strings');
        }
        c.strip = [...v];
        break;
      case 'skipEmailDomain':
        if (v !== null && typeof v !== 'string') badConfig('`skipEmailDomain` must be a string or null');
        c.skipEmailDomain = v ? v.toLowerCase() : null; // null or "" turns it off
        break;
      case 'hashEmail':
      case 'fullName':
      case 'skipSoftDeleted':
        if (typeof v !== 'boolean') badConfig(`\`${key}\` must be a boolean`);
        c[key] = v;
        break;
      case 'rename':
        if (!isObject(v)) badConfig('`rename` must be an object of old → new field names');
        c.rename = Object.entries(v).map(([from, to]) => {
          if (typeof to !== 'string') badConfig(`\`rename.${from}\` must be a string`);
          return [from, to];
        });
        break;
      case 'addFields':
        if (!isObject(v)) badConfig('`addFields` must be an object');
        c.addFields = v;
        break;
      default:
        badConfig(`unknown config key \`${key}\``);
    }
  }
  return Object.freeze(c);
}

const has = (obj, key) => Object.prototype.hasOwnProperty.call(obj, key);

/** A name as `fullName` joins it: strings as they are, other values as JSON text. */
const namePart = (v) => (v === undefined || v === null ? undefined : typeof v === 'string' ? v : JSON.stringify(v));

/**
 * Steps 4-8: the field changes shared by `data` and `before` (mutates `obj`). `email`: the
 * normalized email when the caller has it (used unless a rename may have changed the field).
 */
export function shape(c, obj, email) {
  // Indexed loops: for-of builds an iterator per call, which costs here (no JIT in a component).
  for (let i = 0; i < c.rename.length; i++) {
    const [from, to] = c.rename[i];
    if (has(obj, from)) {
      const v = obj[from];
      delete obj[from];
      obj[to] = v;
    }
  }
  if (c.fullName) {
    const first = namePart(obj.firstName);
    const last = namePart(obj.lastName);
    if (first !== undefined && last !== undefined) obj.fullName = `${first} ${last}`;
  }
  // The host hashes at native speed; SHA-256 in interpreted JavaScript costs about 120 µs.
  if (c.hashEmail && typeof obj.email === 'string') {
    const normalized = email !== undefined && c.rename.length === 0 ? email : normalizeEmail(obj.email);
    obj.emailHash = sha256(normalized);
  }
  for (let i = 0; i < c.strip.length; i++) delete obj[c.strip[i]];
  for (const k in c.addFields) obj[k] = c.addFields[k];
  return obj;
}

export const batchTransform = defineTransform({
  init(raw) {
    config = parseConfig(raw);
    log.info('js-transform: config accepted');
  },

  transform(event) {
    const c = config;
    if (event.action === 'delete') return keep();
    const data = event.data; // parsed here, on first read
    if (!isObject(data)) return keep(); // absent, or not an object

    if (data.failMe === true) return fail('fail-me', 'record asked to fail');
    // (parsed JSON has no `undefined`: `!= null` means present and not null)
    if (c.skipSoftDeleted && (data.deletedAt != null || data.deleted === true)) return skip();
    const email = typeof data.email === 'string' ? normalizeEmail(data.email) : undefined;
    if (c.skipEmailDomain && email !== undefined && email.endsWith(c.skipEmailDomain)) return skip();

    shape(c, data, email);
    const b = event.before;
    const before = isObject(b) ? shape(c, b) : undefined; // undefined: unchanged

    const n = data.fanOut;
    if (Number.isInteger(n) && n >= 1 && n <= 10) {
      // Encoded once for all the copies; a field left out is the input's.
      const copy = { data: jsonBytes(data), before: before === undefined ? undefined : jsonBytes(before) };
      return many(Array.from({ length: n }, (_, i) => ({ ...copy, id: `${event.id}-${i}` })));
    }
    // Only the changed documents cross back to the host: much cheaper than a whole event.
    return update({ data, before });
  },
});
