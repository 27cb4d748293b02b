// Plain-Node tests of transform.js (run: npm test). The log import is shimmed by register.mjs.
import { test } from 'node:test';
import { strictEqual, ok } from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { sha256, sha256Hex } from '../sha256.js';
import { recordTransform } from '../transform.js';
import { messages } from './log-shim.mjs';
import { cases, runCase } from './cases.mjs';

test('sha256: FIPS 180-2 vectors', () => {
  strictEqual(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  strictEqual(sha256Hex(''), 'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  strictEqual(
    sha256Hex('abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq'),
    '248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1',
  );
  strictEqual(sha256Hex('a'.repeat(1000000)), 'cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0');
});

test('sha256: agrees with node:crypto for every length 0..200 and at block edges', () => {
  for (const n of [...Array(201).keys(), 447, 448, 511, 512, 4095, 4096, 65537]) {
    const b = randomBytes(n);
    strictEqual(Buffer.from(sha256(new Uint8Array(b))).toString('hex'), createHash('sha256').update(b).digest('hex'), `length ${n}`);
  }
});

for (const c of cases) {
  test(`case: ${c.name}`, () => runCase(recordTransform, c));
}

test('skips are logged at debug, init at info', () => {
  messages.length = 0;
  recordTransform.init(new TextEncoder().encode('{}'));
  recordTransform.transform({
    resource: 'users', action: 'insert', id: 'u9', timestamp: 't', sequence: 1n,
    data: new TextEncoder().encode('{"deleted":true}'),
  });
  ok(messages.some(([l, m]) => l === 'info' && m.includes('js-transform ready')));
  ok(messages.some(([l, m]) => l === 'debug' && m.includes('users/u9')));
});

test('an unexpected exception becomes `other`, not a trap', () => {
  recordTransform.init(new TextEncoder().encode('{}'));
  try {
    recordTransform.transform(null);
    ok(false, 'should have thrown');
  } catch (e) {
    strictEqual(e.payload.tag, 'other');
    strictEqual(e.payload.val.code, 'internal');
  }
});
