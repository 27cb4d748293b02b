// Loads ../../transform-cases.json and runs its cases against a transform export:
//   { init(bytes), transformBatch(events) -> outcomes }      (batch-transform), or
//   { init(bytes), transform(event) -> outcome }             (record-transform).
// A result's `err` is thrown as a value carrying `payload`, as both componentize-js guests and
// jco-transpiled components do.
import { readFileSync } from 'node:fs';
import { deepStrictEqual } from 'node:assert/strict';

const file = new URL('../../transform-cases.json', import.meta.url);
export const { eventDefaults, cases } = JSON.parse(readFileSync(file, 'utf8'));

const enc = new TextEncoder();
const bytesOf = (obj, key) => {
  if (obj[`${key}Hex`] !== undefined) return Uint8Array.from(Buffer.from(obj[`${key}Hex`], 'hex'));
  if (obj[`${key}Raw`] !== undefined) return enc.encode(obj[`${key}Raw`]);
  if (obj[key] === undefined || obj[key] === null) return undefined;
  return enc.encode(JSON.stringify(obj[key]));
};

export const configBytes = (c) => bytesOf(c, 'config') ?? enc.encode('{}');

export function makeEvent(c) {
  const e = { ...eventDefaults, ...c.event };
  return {
    resource: e.resource,
    action: e.action,
    id: e.id,
    data: bytesOf(e, 'data'),
    before: bytesOf(e, 'before'),
    timestamp: e.timestamp,
    source: e.source ?? undefined,
    sequence: BigInt(e.sequence),
    metadata: bytesOf(e, 'metadata'),
  };
}

const payloadOf = (e) => {
  if (e && e.payload !== undefined) return e.payload;
  throw e;
};

/** Either world as a batch of outcomes. */
export function asBatch(api) {
  if (typeof api.transformBatch === 'function') return api;
  return {
    init: (b) => api.init(b),
    transformBatch: (events) => events.map((e) => api.transform(e)),
  };
}

const same = (a, b) =>
  (a === undefined && b === undefined) ||
  (a !== undefined && b !== undefined && Buffer.from(a).equals(Buffer.from(b)));
const json = (bytes) => JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));

/** Initializes with the case's config; returns false when the case expected init to fail. */
export function initCase(api, c) {
  const x = c.expect;
  let err;
  try {
    api.init(configBytes(c));
  } catch (e) {
    err = payloadOf(e);
  }
  if (x.initError !== undefined) {
    if (!err) throw new Error(`init succeeded, expected ${x.initError}`);
    deepStrictEqual(err.tag, x.initError);
    if (!err.val.message.includes(x.messageContains)) {
      throw new Error(`init message ${JSON.stringify(err.val.message)} lacks ${x.messageContains}`);
    }
    return false;
  }
  if (err) throw new Error(`init failed: ${JSON.stringify(err)}`);
  return true;
}

/** Checks one outcome against the case; throws on a mismatch. */
export function checkOutcome(c, input, o) {
  const x = c.expect;
  const keptFields = (out) => {
    for (const k of ['resource', 'action', 'timestamp', 'source', 'sequence']) {
      deepStrictEqual(out[k], input[k], `field ${k} changed`);
    }
    if (!same(out.metadata, input.metadata)) throw new Error('metadata changed');
  };
  if (x.failed !== undefined) {
    deepStrictEqual(o.tag, 'failed', `expected failed, got ${o.tag}`);
    deepStrictEqual([o.val.tag, o.val.val.code], [x.failed, x.code]);
    return;
  }
  if (o.tag === 'failed') throw new Error(`record failed: ${JSON.stringify(o.val)}`);
  if (x.skip) {
    deepStrictEqual(o.tag, 'skip');
    return;
  }
  if (x.many) {
    deepStrictEqual(o.tag, 'many', `expected many, got ${o.tag}`);
    deepStrictEqual(o.val.map((e) => e.id), x.many);
    for (const e of o.val) {
      keptFields(e);
      deepStrictEqual(json(e.data), x.data);
    }
    return;
  }
  if (x.unchanged) {
    deepStrictEqual(o.tag, 'keep', `expected keep, got ${o.tag}`);
    return;
  }
  // A changed record comes back as its new documents only; `before` none: unchanged.
  deepStrictEqual(o.tag, 'update', `expected update, got ${o.tag}`);
  deepStrictEqual(json(o.val.data), x.data);
  const before = o.val.before ?? input.before;
  if (x.before !== undefined) deepStrictEqual(json(before), x.before);
  else if (!same(before, input.before)) throw new Error('before changed');
}

/** Runs one case as a batch of one. */
export function runCase(api, c) {
  const b = asBatch(api);
  if (!initCase(b, c)) return;
  const input = makeEvent(c);
  const outcomes = b.transformBatch([makeEvent(c)]);
  deepStrictEqual(outcomes.length, 1, 'one outcome per event');
  checkOutcome(c, input, outcomes[0]);
}

/** Runs every case that uses the default config as one batch (order and count must hold). */
export function runDefaultBatch(api) {
  const b = asBatch(api);
  b.init(enc.encode('{}'));
  const picked = cases.filter((c) => c.config === undefined && c.configRaw === undefined);
  const outcomes = b.transformBatch(picked.map(makeEvent));
  deepStrictEqual(outcomes.length, picked.length, 'one outcome per event');
  picked.forEach((c, i) => checkOutcome(c, makeEvent(c), outcomes[i]));
  return picked.length;
}
