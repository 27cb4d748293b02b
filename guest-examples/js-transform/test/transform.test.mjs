// Plain-Node tests of transform.js (run: npm test). The log import is shimmed by register.mjs.
import { test } from 'node:test';
import { strictEqual, ok, deepStrictEqual } from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { sha256, sha256Hex } from '../sha256.js';
import { batchTransform, normalizeEmail } from '../transform.js';
import { messages } from './log-shim.mjs';
import { cases, runCase, runDefaultBatch } from './cases.mjs';

const enc = new TextEncoder();

test('sha256: FIPS 180-2 vectors', () => {
  strictEqual(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  strictEqual(sha256Hex(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  strictEqual(
    sha256Hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'),
    '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
  );
  strictEqual(sha256Hex('a'.repeat(1000000)), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0');
});

test('sha256: agrees with node:crypto for lengths 0..200 and around block edges', () => {
  for (const n of [...Array(201).keys(), 447, 448, 511, 512, 4095, 4096, 65537]) {
    const b = randomBytes(n);
    strictEqual(
      Buffer.from(sha256(new Uint8Array(b))).toString('hex'),
      createHash('sha256').update(b).digest('hex'),
      `length ${n}`,
    );
  }
});

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

test('logs: config accepted at info, one debug line per batch', () => {
  messages.length = 0;
  batchTransform.init(enc.encode('{}'));
  const ev = (data) => ({ resource: 'users', action: 'insert', id: 'u9', timestamp: 't', sequence: 1n, data: enc.encode(data) });
  batchTransform.transformBatch([ev('{"deleted":true}'), ev('{'), ev('{}')]);
  deepStrictEqual(messages, [
    ['info', 'js-transform: config accepted'],
    ['debug', 'js-transform: 3 events, 1 skipped, 1 failed'],
  ]);
});

test('an unexpected exception fails that record with `other`, not the batch', () => {
  batchTransform.init(enc.encode('{}'));
  const good = { resource: 'r', action: 'insert', id: '1', timestamp: 't', sequence: 1n, data: enc.encode('{}') };
  const out = batchTransform.transformBatch([null, good]);
  strictEqual(out[0].tag, 'failed');
  deepStrictEqual([out[0].val.tag, out[0].val.val.code], ['other', 'internal']);
  strictEqual(out[1].tag, 'keep');
});
