// Plain-Node tests of transform.js (run: npm test). The host imports are shimmed by register.mjs.
import { test } from 'node:test';
import { strictEqual, ok, deepStrictEqual } from 'node:assert/strict';
import { batchTransform, normalizeEmail } from '../transform.js';
import { messages } from './log-shim.mjs';
import { cases, runCase, runDefaultBatch } from './cases.mjs';

const enc = new TextEncoder();

test('normalizeEmail trims Unicode White_Space like Rust, not U+FEFF', () => {
  strictEqual(normalizeEmail('\u3000\u0085 A@B.C\t\u2029'), 'a@b.c');
  strictEqual(normalizeEmail('\ufeffa@b.c'), '\ufeffa@b.c');
});

for (const c of cases) {
  test(`case: ${c.name}`, () => runCase(batchTransform, c));
}

test('all default-config cases as one batch', () => {
  ok(runDefaultBatch(batchTransform) > 10);
});

test('an empty batch gives no outcomes', () => {
  batchTransform.init(enc.encode('{}'));
  deepStrictEqual(batchTransform.transformBatch([]), []);
});

test('logs: config accepted at info, nothing per record', () => {
  messages.length = 0;
  batchTransform.init(enc.encode('{}'));
  const ev = (data) => ({ resource: 'users', action: 'insert', id: 'u9', timestamp: 't', sequence: 1n, data: enc.encode(data) });
  batchTransform.transformBatch([ev('{"deleted":true}'), ev('{'), ev('{}')]);
  deepStrictEqual(messages, [['info', 'js-transform: config accepted']]);
});

test('an unexpected exception fails that record with `other`, not the batch', () => {
  batchTransform.init(enc.encode('{}'));
  const good = { resource: 'r', action: 'insert', id: '1', timestamp: 't', sequence: 1n, data: enc.encode('{}') };
  const out = batchTransform.transformBatch([null, good]);
  strictEqual(out[0].tag, 'failed');
  deepStrictEqual([out[0].val.tag, out[0].val.val.code], ['other', 'exception']);
  strictEqual(out[1].tag, 'update');
});
