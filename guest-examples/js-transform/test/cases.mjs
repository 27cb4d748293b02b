// Loads ../../transform-cases.json and runs its cases against any object with the shape of the
// `record-transform` export: { init(bytes), transform(event) } (a result's `err` is thrown as a
// value carrying `payload`, as both componentize-js guests and jco-transpiled hosts do).
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
const bytesEqual = (a, b) =>
  (a === undefined && b === undefined) ||
  (a !== undefined && b !== undefined && Buffer.from(a).equals(Buffer.from(b)));

/** Runs one case; throws an AssertionError on a mismatch. */
export function runCase(api, c) {
  const x = c.expect;
  let initErr;
  try {
    api.init(configBytes(c));
  } catch (e) {
    initErr = payloadOf(e);
  }
  if (x.initError !== undefined) {
    if (!initErr) throw new Error(`init succeeded, expected ${x.initError}/${x.code}`);
    deepStrictEqual([initErr.tag, initErr.val.code], [x.initError, x.code]);
    if (!initErr.val.message.includes(x.messageContains)) {
      throw new Error(`init message ${JSON.stringify(initErr.val.message)} lacks ${x.messageContains}`);
    }
    return;
  }
  if (initErr) throw new Error(`init failed: ${JSON.stringify(initErr)}`);

  const input = makeEvent(c);
  let out, err;
  try {
    out = api.transform(makeEvent(c));
  } catch (e) {
    err = payloadOf(e);
  }
  if (x.error !== undefined) {
    if (!err) throw new Error(`transform succeeded, expected ${x.error}/${x.code}`);
    deepStrictEqual([err.tag, err.val.code], [x.error, x.code]);
    return;
  }
  if (err) throw new Error(`transform failed: ${JSON.stringify(err)}`);
  if (x.skip) {
    deepStrictEqual(out, undefined, 'expected the record to be skipped');
    return;
  }
  if (out === undefined) throw new Error('record skipped, expected it kept');
  for (const k of ['resource', 'action', 'id', 'timestamp', 'source', 'sequence']) {
    deepStrictEqual(out[k], input[k], `field ${k} changed`);
  }
  for (const k of ['before', 'metadata']) {
    if (!bytesEqual(out[k], input[k])) throw new Error(`field ${k} changed`);
  }
  if (x.unchanged) {
    if (!bytesEqual(out.data, input.data)) throw new Error('data changed, expected unchanged');
    return;
  }
  const data = JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(out.data));
  deepStrictEqual(data, x.data);
}
