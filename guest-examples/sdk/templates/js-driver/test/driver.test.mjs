// The driver's logic in plain Node (npm test): config, answers. (HTTP itself needs the
// replicator: `replicator plugin test {{name}}.wasm cases.json`.)
import '../sdk/test/setup.mjs';
import { test } from 'node:test';
import { deepStrictEqual, strictEqual, throws } from 'node:assert/strict';

const { parseConfig, verdict, retryAfterMs } = await import('../driver.js');

test('config: url required (http or https), headers of strings, nothing else', () => {
  deepStrictEqual(parseConfig({ url: 'https://h.example/in', headers: { Authorization: 'Bearer t' } }), {
    url: 'https://h.example/in',
    headers: { authorization: 'Bearer t' },
  });
  for (const [config, key] of [
    [{}, 'url'],
    [{ url: 'ftp://h/' }, 'url'],
    [{ url: 'h:1' }, 'url'],
    [{ url: 'http://h', headers: { x: 1 } }, 'headers.x'],
    [{ url: 'http://h', headers: { 'a b': 'c' } }, 'headers.a b'],
    [{ url: 'http://h', bogus: 1 }, 'bogus'],
  ]) {
    throws(() => parseConfig(config), (e) => e.code === 'invalid-config' && e.message.includes(key), JSON.stringify(config));
  }
});

test('answers', () => {
  strictEqual(verdict(204, undefined, 'm'), undefined);
  strictEqual(verdict(403, undefined, 'm').code, 'http-403');
  strictEqual(verdict(403, undefined, 'm').constructor.kind, 'unauthorized');
  strictEqual(verdict(404, undefined, 'm').constructor.kind, 'rejected');
  strictEqual(verdict(408, undefined, 'm').constructor.kind, 'retryable');
  strictEqual(verdict(503, '3', 'm').retryAfterMs, 3000);
  strictEqual(retryAfterMs('Wed, 21 Oct 2015 07:28:00 GMT'), undefined);
});
