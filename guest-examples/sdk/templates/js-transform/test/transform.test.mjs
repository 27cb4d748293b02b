// The transform in plain Node (npm test): the SDK's test setup stands in for the host's imports.
import '../sdk/test/setup.mjs';
import { test } from 'node:test';
import { deepStrictEqual, throws } from 'node:assert/strict';

const { batchTransform, parseConfig } = await import('../transform.js');

const enc = new TextEncoder();
const text = (bytes) => bytes && new TextDecoder().decode(bytes);
const event = (fields) => ({ resource: 'users', action: 'insert', id: 'u1', timestamp: 't', sequence: 1n, ...fields });
const run = (config, events) => {
  batchTransform.init(enc.encode(JSON.stringify(config)));
  return batchTransform.transformBatch(events);
};

test('drops then renames, in data and before; only changed documents come back', () => {
  const [o] = run({ drop: ['password'], rename: { mail: 'email' } }, [
    event({ action: 'update', data: enc.encode('{"mail":"a@x.io","password":"p","n":1}'), before: enc.encode('{"n":0}') }),
  ]);
  deepStrictEqual([o.tag, text(o.val.data), o.val.before], ['update', '{"n":1,"email":"a@x.io"}', undefined]);
});

test('keeps, skips and fails', () => {
  const config = { drop: ['password'], skipResources: ['audit'] };
  const out = run(config, [
    event({ data: enc.encode('{"n":1}') }),
    event({ resource: 'audit', data: enc.encode('{"password":"x"}') }),
    event({ action: 'delete', data: enc.encode('{"password":"x"}') }),
    event({ data: enc.encode('[1]') }),
  ]);
  deepStrictEqual(out.map((o) => o.tag), ['keep', 'skip', 'keep', 'failed']);
  deepStrictEqual(out[3].val.val.code, 'not-an-object');
});

test('a bad config names its key', () => {
  for (const [config, key] of [[{ drop: 'password' }, 'drop'], [{ rename: { a: 1 } }, 'rename.a'], [{ skipResources: [1] }, 'skipResources'], [{ bogus: true }, 'bogus'], [[], 'object']]) {
    throws(() => parseConfig(config), (e) => e.code === 'invalid-config' && e.message.includes(key));
  }
});
