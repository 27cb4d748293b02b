// @replicator/plugin: replicator plugins in JavaScript, built into WebAssembly components by
// componentize-js 0.23 against wit/plugin.wit (package replicator:plugin@0.1.0).
//
// A transform (world `batch-transformer`):
//
//   import { defineTransform, InvalidConfig, keep, skip, update, fail } from './sdk/index.js';
//   export const batchTransform = defineTransform({
//     init(config) { ... },               // the config as a JSON value, {} when none
//     transform(event) { return keep(); } // one outcome per event
//   });
//
// Outcomes: keep(), skip(), update({ data, before }) (new documents; one left out stays as it
// came), many([partial events]) (each field left out is the input's), fail(code, message)
// (invalid-record: the host dead-letters that record). Anything `transform` throws fails only
// that record: an InvalidRecord as invalid-record with its code, anything else as `other` with
// code "exception". `init` refuses a config by throwing InvalidConfig. The SDK turns a batch
// into one `transform` call per event; a transform may define `transformBatch(events, each)`
// instead, where `each(event)` is that per-event call (outcome or failure, never a throw).
//
// A driver (world `sink-driver`, or `http-driver` of ./wasi-http to make HTTP requests with
// ./http.js):
//
//   export const driver = defineDriver({
//     describe: { name: 'acme', version: '0.1.0', maxBatchSize: 100, idempotent: true },
//     init(config) { ... },
//     async replicate(events) { ...; return []; },  // the failures: [{ index, error }]
//     health() { return ok(); },                      // or degraded(msg), unhealthy(msg)
//     close() { ... },
//   });
//
// A driver refuses a whole batch by throwing Unauthorized, Retryable (retryAfterMs), Rejected,
// Fatal or InvalidConfig; anything else thrown is `fatal` with code "exception". Its methods may
// be async: componentize-js runs the event loop until the promise settles. The host's key/value
// state is in ./state.js, HTTP in ./http.js (drivers only: a transform's world imports neither).
//
// Events are Event objects: resource, action ('insert' | 'update' | 'delete'), id, timestamp,
// source, sequence (a BigInt: u64), and data, before, metadata as JSON values, parsed on first
// read (dataBytes, beforeBytes, metadataBytes are the UTF-8 JSON bytes as the host sent them).
// A document that is not valid JSON throws InvalidRecord (code "invalid-json") when read.
//
// componentize-js resolves relative imports only (no node_modules): import this file by its
// path. The mapping it uses: json is a Uint8Array, option<T> is T | undefined, u64 a BigInt,
// variants {tag, val}, and the `err` of a result export is the `payload` of what is thrown.

import { log as hostLog } from 'replicator:plugin/log@0.1.0';
import { hash, hmac as hostHmac } from 'replicator:plugin/digest@0.1.0';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

// ---------------------------------------------------------------------------------- JSON

/** UTF-8 JSON bytes -> value. Throws SyntaxError on invalid UTF-8 or JSON. */
export function parseJson(bytes) {
  let text;
  try {
    text = decoder.decode(bytes);
  } catch {
    throw new SyntaxError('invalid UTF-8');
  }
  return JSON.parse(text);
}

/** A JSON value -> its UTF-8 JSON bytes; a Uint8Array is taken as JSON bytes already. */
export function jsonBytes(value) {
  if (value instanceof Uint8Array) return value;
  const text = JSON.stringify(value);
  if (text === undefined) throw new TypeError(`${typeof value} is not a JSON value`);
  return encoder.encode(text);
}

// ------------------------------------------------------------------------ log and digest

const logAt = (level) => (message) => hostLog(level, String(message));

/** The host's logger: log.info('...') etc. */
export const log = Object.freeze({
  trace: logAt('trace'),
  debug: logAt('debug'),
  info: logAt('info'),
  warn: logAt('warn'),
  error: logAt('error'),
});

const bytesOf = (v) => (typeof v === 'string' ? encoder.encode(v) : v);

/** Lowercase hex digests computed by the host (strings are hashed as UTF-8). */
export function sha256(data) {
  return hash('sha256', typeof data === 'string' ? encoder.encode(data) : data);
}
export function sha384(data) {
  return hash('sha384', typeof data === 'string' ? encoder.encode(data) : data);
}
export function sha512(data) {
  return hash('sha512', typeof data === 'string' ? encoder.encode(data) : data);
}
/** Lowercase hex HMAC of `data` under `key`; algorithm 'sha256' | 'sha384' | 'sha512'. */
export const hmac = (algorithm, key, data) => hostHmac(algorithm, bytesOf(key), bytesOf(data));

// -------------------------------------------------------------------------------- errors

/** Base of the errors the SDK maps to the contract's; `code` defaults to the kind. */
export class PluginError extends Error {
  constructor(message, { code } = {}) {
    super(message);
    this.name = this.constructor.name;
    this.code = code ?? this.constructor.kind;
  }
}
/** This record cannot be handled (transform: failed; driver: rejected). */
export class InvalidRecord extends PluginError {
  static kind = 'invalid-record';
}
/** The config given to `init` is unusable: name the key in the message. */
export class InvalidConfig extends PluginError {
  static kind = 'invalid-config';
}
/** Driver: credentials refused (retried with back-off). */
export class Unauthorized extends PluginError {
  static kind = 'unauthorized';
}
/** Driver: transient (network, 5xx, throttling); `retryAfterMs` is the least wait. */
export class Retryable extends PluginError {
  static kind = 'retryable';
  constructor(message, { code, retryAfterMs } = {}) {
    super(message, { code });
    this.retryAfterMs = retryAfterMs;
  }
}
/** Driver: permanent for this data (dead-lettered). */
export class Rejected extends PluginError {
  static kind = 'rejected';
}
/** Driver: broken; the host replaces the instance. */
export class Fatal extends PluginError {
  static kind = 'fatal';
}

const messageOf = (e) => (e instanceof Error ? e.message : String(e));

/** What componentize-js expects thrown from a result export: the `err` value as `payload`. */
class ResultError extends Error {
  constructor(payload) {
    super(payload.val.message ?? payload.val.info.message);
    this.payload = payload;
  }
}

// -------------------------------------------------------------------------------- events

const UNREAD = Symbol('unread');

/** The error of a document that is not valid JSON (`e`: what decoding or parsing threw). */
const invalidJson = (field, e) =>
  new InvalidRecord(`${field} is not valid JSON: ${e instanceof SyntaxError ? e.message : 'invalid UTF-8'}`, { code: 'invalid-json' });

/** One change of one record, as the host sent it (`raw`), its documents parsed when read. */
export class Event {
  // The envelope's fields are copied, not getters: in the engine's interpreter a getter costs a
  // call on every read.
  constructor(raw) {
    this.raw = raw;
    this.resource = raw.resource;
    this.action = raw.action;
    this.id = raw.id;
    this.timestamp = raw.timestamp;
    this.source = raw.source;
    this.sequence = raw.sequence;
    this._data = UNREAD;
    this._before = UNREAD;
    this._metadata = UNREAD;
  }
  get dataBytes() { return this.raw.data; }
  get beforeBytes() { return this.raw.before; }
  get metadataBytes() { return this.raw.metadata; }
  get data() {
    let v = this._data;
    if (v === UNREAD) {
      const bytes = this.raw.data;
      try {
        v = bytes === undefined ? undefined : JSON.parse(decoder.decode(bytes));
      } catch (e) {
        throw invalidJson('data', e);
      }
      this._data = v;
    }
    return v;
  }
  get before() {
    let v = this._before;
    if (v === UNREAD) {
      const bytes = this.raw.before;
      try {
        v = bytes === undefined ? undefined : JSON.parse(decoder.decode(bytes));
      } catch (e) {
        throw invalidJson('before', e);
      }
      this._before = v;
    }
    return v;
  }
  get metadata() {
    let v = this._metadata;
    if (v === UNREAD) {
      const bytes = this.raw.metadata;
      try {
        v = bytes === undefined ? undefined : JSON.parse(decoder.decode(bytes));
      } catch (e) {
        throw invalidJson('metadata', e);
      }
      this._metadata = v;
    }
    return v;
  }

  /** The event for the host: documents read (and maybe changed in place) are encoded again. */
  toRaw() {
    const doc = (cached, bytes) => (cached === UNREAD || cached === undefined ? bytes : jsonBytes(cached));
    return {
      resource: this.resource,
      action: this.action,
      id: this.id,
      timestamp: this.timestamp,
      source: this.source,
      sequence: this.sequence,
      data: doc(this._data, this.raw.data),
      before: doc(this._before, this.raw.before),
      metadata: doc(this._metadata, this.raw.metadata),
    };
  }
}

/**
 * Events -> JSON text of an array of envelopes: resource, action, id, data, before, timestamp,
 * source, sequence, metadata (null when absent), the documents as JSON values. Documents not
 * read are copied as the host sent them, not parsed; sequence is exact. A string, which is also
 * what to give `fetch` as a body: StarlingMonkey traps on a failed request whose body is a
 * Uint8Array (the host's wasmtime; a string body fails with a catchable TypeError).
 */
export function eventsToJson(events) {
  const text = (bytes) => (bytes === undefined ? 'null' : decoder.decode(bytes));
  const parts = new Array(events.length);
  for (let i = 0; i < events.length; i++) {
    const e = events[i] instanceof Event ? events[i].toRaw() : events[i];
    parts[i] =
      `{"resource":${JSON.stringify(e.resource)},"action":"${e.action}","id":${JSON.stringify(e.id)},` +
      `"data":${text(e.data)},"before":${text(e.before)},"timestamp":${JSON.stringify(e.timestamp)},` +
      `"source":${e.source === undefined ? 'null' : JSON.stringify(e.source)},"sequence":${e.sequence},` +
      `"metadata":${text(e.metadata)}}`;
  }
  return `[${parts.join(',')}]`;
}

// ------------------------------------------------------------------------------ outcomes

const KEEP = Object.freeze({ tag: 'keep' });
const SKIP = Object.freeze({ tag: 'skip' });
// A `many` whose partial events still need the input's fields (see finish).
const PARTIAL = Symbol('partial');

const optionalDocument = (v) => (v === undefined || v === null ? undefined : jsonBytes(v));

/** Send the event on as it came. */
export const keep = () => KEEP;
/** Drop the event. */
export const skip = () => SKIP;
/** Send the event on with new documents (JSON values or JSON bytes); one left out is unchanged. */
export function update(documents) {
  const data = documents === undefined ? undefined : documents.data;
  const before = documents === undefined ? undefined : documents.before;
  return {
    tag: 'update',
    val: {
      data: data === undefined || data === null ? undefined : jsonBytes(data),
      before: before === undefined || before === null ? undefined : jsonBytes(before),
    },
  };
}
/** Send these events instead: each field left out (undefined) is the input's; null data, before,
 * source or metadata means none. An Event is taken whole. */
export const many = (events) => ({ tag: 'many', val: Array.from(events), [PARTIAL]: true });
/** This record failed (invalid-record): the host dead-letters it, the others go on. */
export const fail = (code, message) => failed('invalid-record', code, message);

const failed = (kind, code, message) => ({
  tag: 'failed',
  val: { tag: kind, val: { code: String(code), message: String(message) } },
});

const absentOr = (v, input, convert) => (v === undefined ? input : v === null ? undefined : convert(v));

/** A partial event of `many` -> a whole event, its missing fields taken from `input`. */
function wholeEvent(p, input) {
  if (p instanceof Event) return p.toRaw();
  if (p === null || typeof p !== 'object') throw new TypeError(`many: ${String(p)} is not an event`);
  return {
    resource: p.resource ?? input.resource,
    action: p.action ?? input.action,
    id: p.id ?? input.id,
    data: absentOr(p.data, input.data, jsonBytes),
    before: absentOr(p.before, input.before, jsonBytes),
    timestamp: p.timestamp ?? input.timestamp,
    source: absentOr(p.source, input.source, String),
    sequence: p.sequence === undefined ? input.sequence : BigInt(p.sequence),
    metadata: absentOr(p.metadata, input.metadata, jsonBytes),
  };
}

/** An outcome as the host takes it (throws on something that is not an outcome). */
function finish(o, input) {
  if (o !== null && typeof o === 'object') {
    switch (o.tag) {
      case 'update':
      case 'keep':
      case 'skip':
      case 'failed':
        return o;
      case 'many':
        return o[PARTIAL] ? { tag: 'many', val: o.val.map((p) => wholeEvent(p, input)) } : o;
    }
  }
  throw new TypeError(`transform returned ${o === null ? 'null' : typeof o === 'object' ? JSON.stringify(o) : String(o)}, not an outcome (keep(), skip(), update(), many(), fail())`);
}

/** An exception -> the failure of one record. */
function recordFailure(e) {
  if (e instanceof InvalidRecord) return failed('invalid-record', e.code, e.message);
  if (e instanceof InvalidConfig) return failed('invalid-config', e.code, e.message);
  return failed('other', e instanceof PluginError ? e.code : 'exception', messageOf(e));
}

/** Config bytes -> JSON value ({} when empty); throws InvalidConfig when not JSON. */
function readConfig(bytes) {
  let blank = true;
  for (let i = 0; i < bytes.length && blank; i++) {
    const b = bytes[i];
    blank = b === 0x20 || b === 0x09 || b === 0x0a || b === 0x0d;
  }
  if (blank) return {};
  try {
    return parseJson(bytes);
  } catch (e) {
    throw new InvalidConfig(`config is not JSON: ${e.message}`);
  }
}

// ----------------------------------------------------------------------------- transform

/**
 * The `batch-transform` export of a transform: `export const batchTransform = defineTransform(t)`.
 * `t.init(config)` is optional; `t.transform(event)` returns an outcome.
 */
export function defineTransform(t) {
  if (typeof t.transform !== 'function' && typeof t.transformBatch !== 'function') {
    throw new TypeError('defineTransform: the transform needs a transform(event) method');
  }
  // The per-event path. The usual outcomes are checked inline: a call costs in the interpreter.
  const each = (event) => {
    try {
      const o = t.transform(event);
      const tag = o !== null && typeof o === 'object' ? o.tag : undefined;
      return tag === 'update' || tag === 'keep' || tag === 'skip' || tag === 'failed' ? o : finish(o, event.raw);
    } catch (e) {
      return recordFailure(e);
    }
  };
  return {
    init(bytes) {
      try {
        const config = readConfig(bytes);
        if (typeof t.init === 'function') t.init(config);
      } catch (e) {
        const f = recordFailure(e).val;
        throw new ResultError(e instanceof InvalidRecord ? { tag: 'invalid-config', val: f.val } : f);
      }
    },

    transformBatch(raws) {
      const n = raws.length;
      if (typeof t.transformBatch !== 'function') {
        // `each`, inlined: the common path saves a call per event.
        const out = new Array(n);
        for (let i = 0; i < n; i++) {
          const raw = raws[i];
          try {
            const o = t.transform(new Event(raw));
            const tag = o !== null && typeof o === 'object' ? o.tag : undefined;
            out[i] = tag === 'update' || tag === 'keep' || tag === 'skip' || tag === 'failed' ? o : finish(o, raw);
          } catch (e) {
            out[i] = recordFailure(e);
          }
        }
        return out;
      }
      let outcomes;
      try {
        const events = new Array(n);
        for (let i = 0; i < n; i++) events[i] = new Event(raws[i]);
        outcomes = t.transformBatch(events, each);
        if (!Array.isArray(outcomes) || outcomes.length !== n) {
          throw new TypeError(`transformBatch returned ${Array.isArray(outcomes) ? `${outcomes.length} outcomes` : typeof outcomes} for ${n} events`);
        }
      } catch (e) {
        return raws.map(() => recordFailure(e));
      }
      // Outcomes from `each` are finished already.
      for (let i = 0; i < n; i++) {
        const o = outcomes[i];
        const tag = o !== null && typeof o === 'object' ? o.tag : undefined;
        if (tag === 'update' || tag === 'keep' || tag === 'skip' || tag === 'failed') continue;
        try {
          outcomes[i] = finish(o, raws[i]);
        } catch (e) {
          outcomes[i] = recordFailure(e);
        }
      }
      return outcomes;
    },
  };
}

// -------------------------------------------------------------------------------- driver

/** Health answers. */
export const ok = () => ({ tag: 'ok' });
export const degraded = (message) => ({ tag: 'degraded', val: String(message) });
export const unhealthy = (message) => ({ tag: 'unhealthy', val: String(message) });

/** An exception -> a driver-error variant. */
export function driverError(e) {
  const info = { code: e instanceof PluginError ? e.code : 'exception', message: messageOf(e) };
  if (e instanceof Retryable) {
    const ms = e.retryAfterMs;
    return { tag: 'retryable', val: { info, retryAfterMs: ms === undefined || ms === null ? undefined : Math.max(0, Math.min(0xffffffff, Math.round(ms))) } };
  }
  if (e instanceof InvalidConfig) return { tag: 'invalid-config', val: info };
  if (e instanceof Unauthorized) return { tag: 'unauthorized', val: info };
  if (e instanceof Rejected || e instanceof InvalidRecord) return { tag: 'rejected', val: info };
  return { tag: 'fatal', val: info };
}

/** Runs `call`, then `map` on its value, awaiting a promise; a throw becomes the result's err. */
function settle(call, map) {
  let value;
  try {
    value = call();
  } catch (e) {
    throw new ResultError(driverError(e));
  }
  if (value !== null && typeof value === 'object' && typeof value.then === 'function') {
    return value.then(map, (e) => {
      throw new ResultError(driverError(e));
    });
  }
  return map(value);
}

function replicateResult(failures, n) {
  const list = failures === undefined || failures === null ? [] : Array.isArray(failures) ? failures : failures.failed;
  if (!Array.isArray(list)) throw new TypeError('replicate must return a list of { index, error } (or nothing)');
  return {
    failed: list.map(({ index, error }) => {
      if (!Number.isInteger(index) || index < 0 || index >= n) {
        throw new TypeError(`replicate: failure index ${index} is not in the batch of ${n}`);
      }
      return { index, error: driverError(error) };
    }),
  };
}

const HEALTH_TAGS = new Set(['ok', 'degraded', 'unhealthy']);
const healthOf = (h) => (h === undefined || h === null || h === 'ok' ? ok() : HEALTH_TAGS.has(h.tag) ? h : unhealthy(`health returned ${JSON.stringify(h)}`));

/**
 * The `driver` export: `export const driver = defineDriver(d)`. `d.describe` is an object (or a
 * function returning one): name, version, configSchema (a JSON value), maxBatchSize (default
 * 100), idempotent (default false). `init`, `health` and `close` are optional.
 */
export function defineDriver(d) {
  if (typeof d.replicate !== 'function') throw new TypeError('defineDriver: the driver needs a replicate(events) method');
  return {
    describe() {
      const i = typeof d.describe === 'function' ? d.describe() : d.describe;
      if (!i || !i.name) throw new TypeError('defineDriver: describe needs at least a name');
      return {
        name: String(i.name),
        version: String(i.version ?? '0.0.0'),
        configSchema: optionalDocument(i.configSchema),
        maxBatchSize: i.maxBatchSize ?? 100,
        idempotent: Boolean(i.idempotent),
      };
    },
    init(bytes) {
      return settle(() => {
        const config = readConfig(bytes);
        return typeof d.init === 'function' ? d.init(config) : undefined;
      }, () => undefined);
    },
    replicate(raws) {
      return settle(() => d.replicate(raws.map((raw) => new Event(raw))), (f) => {
        try {
          return replicateResult(f, raws.length);
        } catch (e) {
          throw new ResultError(driverError(e));
        }
      });
    },
    health() {
      if (typeof d.health !== 'function') return ok();
      try {
        const h = d.health();
        if (h !== null && typeof h === 'object' && typeof h.then === 'function') {
          return h.then(healthOf, (e) => unhealthy(messageOf(e)));
        }
        return healthOf(h);
      } catch (e) {
        return unhealthy(messageOf(e));
      }
    },
    close() {
      return settle(() => (typeof d.close === 'function' ? d.close() : undefined), () => undefined);
    },
  };
}
