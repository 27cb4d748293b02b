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
// componentize-js mapping used here: the interface export `batch-transform` is the exported
// object `batchTransform` (functions `init`, `transformBatch`); `json` (list<u8>) is a
// Uint8Array; option<T> is T | undefined; u64 is a BigInt; enums are strings ('insert');
// variants are {tag, val} with the WIT case name as tag ({tag: 'skip'} when there is no payload).
// A `result` export returns its `ok` value normally; its `err` value is the `payload` property of
// whatever is thrown (an Error thrown without `payload` traps the instance instead).
import { log } from 'replicator:plugin/log@0.1.0';
import { hash } from 'replicator:plugin/digest@0.1.0';

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

/** `init` fails by throwing a value whose `payload` is the transform-error. */
class InitError extends Error {
  constructor(message) {
    super(message);
    this.payload = { tag: 'invalid-config', val: { code: 'invalid-config', message } };
  }
}
const badConfig = (message) => {
  throw new InitError(message);
};

const utf8 = new TextDecoder('utf-8', { fatal: true });
const encoder = new TextEncoder();
const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

/** UTF-8 JSON bytes -> value; throws a message on invalid UTF-8 or JSON. */
function parseJson(bytes) {
  let text;
  try {
    text = utf8.decode(bytes);
  } catch {
    throw new SyntaxError('invalid UTF-8');
  }
  return JSON.parse(text);
}

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

/** Validates the config bytes given to `init`; returns the effective config. */
export function parseConfig(bytes) {
  if (bytes.every((b) => b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0c || b === 0x0d)) {
    return DEFAULTS; // no config at all
  }
  let raw;
  try {
    raw = parseJson(bytes);
  } catch (e) {
    badConfig(`config is not JSON: ${e.message}`);
  }
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
    obj.emailHash = hash('sha256', encoder.encode(normalized));
  }
  for (let i = 0; i < c.strip.length; i++) delete obj[c.strip[i]];
  for (const k in c.addFields) obj[k] = c.addFields[k];
  return obj;
}

const failed = (tag, code, message) => ({ tag: 'failed', val: { tag, val: { code, message } } });

const KEEP = Object.freeze({ tag: 'keep' });

/** One event -> one outcome (a variant of transform-types). */
export function transformOne(c, event) {
  if (event.action === 'delete' || event.data === undefined) return KEEP;
  let data;
  try {
    data = parseJson(event.data);
  } catch (e) {
    return failed('invalid-record', 'invalid-json', `data is not valid JSON: ${e.message}`);
  }
  if (!isObject(data)) return KEEP;

  if (data.failMe === true) return failed('invalid-record', 'fail-me', 'record asked to fail');
  // (parsed JSON has no `undefined`: `!= null` means present and not null)
  if (c.skipSoftDeleted && (data.deletedAt != null || data.deleted === true)) {
    return { tag: 'skip' };
  }
  const email = typeof data.email === 'string' ? normalizeEmail(data.email) : undefined;
  if (c.skipEmailDomain && email !== undefined && email.endsWith(c.skipEmailDomain)) {
    return { tag: 'skip' };
  }

  shape(c, data, email);

  let before; // undefined: unchanged
  if (event.before !== undefined) {
    let b;
    try {
      b = parseJson(event.before);
    } catch (e) {
      return failed('invalid-record', 'invalid-json', `before is not valid JSON: ${e.message}`);
    }
    if (isObject(b)) before = encoder.encode(JSON.stringify(shape(c, b)));
  }

  const n = data.fanOut;
  const documents = { data: encoder.encode(JSON.stringify(data)), before };
  if (Number.isInteger(n) && n >= 1 && n <= 10) {
    const out = { ...event, data: documents.data, before: before ?? event.before };
    return { tag: 'many', val: Array.from({ length: n }, (_, i) => ({ ...out, id: `${event.id}-${i}` })) };
  }
  // Only the changed documents cross back to the host: much cheaper than a whole event.
  return { tag: 'update', val: documents };
}

export const batchTransform = {
  init(configBytes) {
    try {
      config = parseConfig(configBytes);
    } catch (e) {
      if (e instanceof InitError) throw e;
      badConfig(`config rejected: ${e && e.message ? e.message : e}`);
    }
    log('info', 'js-transform: config accepted');
  },

  transformBatch(events) {
    let skipped = 0;
    let fails = 0;
    const outcomes = events.map((event) => {
      let o;
      try {
        o = transformOne(config, event);
      } catch (e) {
        // Anything unexpected fails this record only (a throw out of here would trap).
        o = failed('other', 'internal', String(e && e.message ? e.message : e));
      }
      if (o.tag === 'skip') skipped++;
      if (o.tag === 'failed') fails++;
      return o;
    });
    log('debug', `js-transform: ${events.length} events, ${skipped} skipped, ${fails} failed`);
    return outcomes;
  },
};
