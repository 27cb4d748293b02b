// http.js in plain Node against a scripted wasi:http (wasi-http.mjs).
import './setup.mjs';
import { test } from 'node:test';
import { deepStrictEqual, strictEqual, throws, ok } from 'node:assert/strict';

const { httpRequest, HttpError, errorText } = await import('../http.js');
const { server } = await import('./wasi-http.mjs');
const text = (chunks) => new TextDecoder().decode(Buffer.concat(chunks));

test('a POST: method, URL parts, headers with content-length, the body in writes of 4 KiB at most', () => {
  server.answer = () => ({ status: 201, headers: [['retry-after', '3']], body: '{"ok":true}' });
  server.requests.length = 0;
  const body = 'x'.repeat(10000);
  const r = httpRequest('POST', 'https://h.example:8443/in?x=1', { headers: { 'Content-Type': 'application/json' }, body, timeoutMs: 1500 });
  const [q] = server.requests;
  deepStrictEqual([q.method, q.scheme, q.authority, q.path], [{ tag: 'post' }, { tag: 'HTTPS' }, 'h.example:8443', '/in?x=1']);
  deepStrictEqual(q.headers.map(([k, v]) => [k, new TextDecoder().decode(v)]), [['content-type', 'application/json'], ['content-length', '10000']]);
  deepStrictEqual(q.chunks.map((c) => c.length), [4096, 4096, 1808]);
  strictEqual(text(q.chunks), body);
  ok(q.finished);
  strictEqual(q.options.connect, 1500000000n);
  deepStrictEqual([r.status, r.header('Retry-After'), r.header('x'), r.json()], [201, '3', undefined, { ok: true }]);
});

test('no answer is an HttpError naming the error code; so is a refused handle', () => {
  server.answer = () => ({ error: { tag: 'connection-refused' } });
  throws(() => httpRequest('POST', 'http://127.0.0.1:9/', { body: '[]' }), (e) => e instanceof HttpError && e.message === 'POST http://127.0.0.1:9/: connection-refused');
  server.answer = () => ({ error: { tag: 'DNS-error', val: { rcode: 'NXDOMAIN', infoCode: 3 } } });
  throws(() => httpRequest('GET', 'http://nowhere.example/'), /DNS-error: \{"rcode":"NXDOMAIN","infoCode":3\}/);
  server.refuse = { tag: 'HTTP-request-denied' };
  try {
    throws(() => httpRequest('GET', 'http://other.example/'), /HTTP-request-denied/);
  } finally {
    server.refuse = undefined;
  }
});

test('what a request cannot carry is a TypeError, before anything is sent', () => {
  server.requests.length = 0;
  throws(() => httpRequest('GET', 'ftp://h/'), TypeError);
  throws(() => httpRequest('GET', 'http://h/', { headers: { 'a b': 'c' } }), /headers refused: invalid-syntax/);
  strictEqual(server.requests.length, 0);
  strictEqual(errorText({ tag: 'x', val: 5n }), 'x: "5"');
});

test('other methods; a bodyless request sends no content-length; resources are dropped', () => {
  server.answer = () => ({ status: 204, headers: [], body: '' });
  server.requests.length = 0;
  server.dropped = 0;
  const r = httpRequest('PURGE', 'http://h');
  const [q] = server.requests;
  deepStrictEqual([q.method, q.path, q.headers, r.body.length], [{ tag: 'other', val: 'PURGE' }, '/', [], 0]);
  ok(server.dropped >= 6, `${server.dropped} resources dropped`);
});
