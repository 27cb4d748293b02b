// The driver half of the SDK in plain Node: describe, errors as the contract's driver-error,
// per-event failures, async methods, health, and the state helpers.
import './setup.mjs';
import { test } from 'node:test';
import { deepStrictEqual, strictEqual, ok, rejects, throws } from 'node:assert/strict';

const sdk = await import('../index.js');
const { state } = await import('../state.js');
const host = await import('./host.mjs');
const { defineDriver, Event, InvalidConfig, Unauthorized, Retryable, Rejected, Fatal, InvalidRecord } = sdk;

const enc = new TextEncoder();
const raw = (id) => ({ resource: 'users', action: 'insert', id, data: enc.encode('{"n":1}'), timestamp: 't', sequence: 1n });
const payloadOf = (fn) => {
  try {
    fn();
  } catch (e) {
    return e.payload;
  }
  throw new Error('did not throw');
};
const driver = (d) => defineDriver({ describe: { name: 'acme' }, ...d });

test('describe: defaults, the config schema as JSON bytes', () => {
  deepStrictEqual(driver({ replicate: () => [] }).describe(), {
    name: 'acme', version: '0.0.0', configSchema: undefined, maxBatchSize: 100, idempotent: false,
  });
  const d = defineDriver({
    describe: () => ({ name: 'acme', version: '1.2.3', configSchema: { type: 'object' }, maxBatchSize: 10, idempotent: true }),
    replicate: () => [],
  }).describe();
  deepStrictEqual({ ...d, configSchema: new TextDecoder().decode(d.configSchema) }, {
    name: 'acme', version: '1.2.3', configSchema: '{"type":"object"}', maxBatchSize: 10, idempotent: true,
  });
});

test('init: the config parsed ({} when none); InvalidConfig and bad JSON are invalid-config', () => {
  const seen = [];
  const d = driver({ init: (c) => seen.push(c), replicate: () => [] });
  d.init(new Uint8Array());
  d.init(enc.encode('{"url":"http://x"}'));
  deepStrictEqual(seen, [{}, { url: 'http://x' }]);
  deepStrictEqual(payloadOf(() => d.init(enc.encode('nope'))).tag, 'invalid-config');
  const refusing = driver({ init: () => { throw new InvalidConfig('`url` is required'); }, replicate: () => [] });
  deepStrictEqual(payloadOf(() => refusing.init(enc.encode('{}'))), {
    tag: 'invalid-config', val: { code: 'invalid-config', message: '`url` is required' },
  });
});

test('replicate: events are Events; nothing or [] means all written; failures per index', () => {
  let got;
  const d = driver({
    replicate(events) {
      got = events;
      return [
        { index: 0, error: new Rejected('mapping refused', { code: 'http-400' }) },
        { index: 2, error: new InvalidRecord('bad doc', { code: 'invalid-json' }) },
      ];
    },
  });
  deepStrictEqual(d.replicate([raw('a'), raw('b'), raw('c')]), {
    failed: [
      { index: 0, error: { tag: 'rejected', val: { code: 'http-400', message: 'mapping refused' } } },
      { index: 2, error: { tag: 'rejected', val: { code: 'invalid-json', message: 'bad doc' } } },
    ],
  });
  ok(got[0] instanceof Event);
  deepStrictEqual(got.map((e) => [e.id, e.data]), [['a', { n: 1 }], ['b', { n: 1 }], ['c', { n: 1 }]]);
  deepStrictEqual(driver({ replicate: () => undefined }).replicate([raw('a')]), { failed: [] });
  deepStrictEqual(driver({ replicate: () => ({ failed: [] }) }).replicate([raw('a')]), { failed: [] });
});

test('replicate: a thrown error is the whole batch’s, mapped to its kind', () => {
  const thrown = (e) => payloadOf(() => driver({ replicate: () => { throw e; } }).replicate([raw('a')]));
  deepStrictEqual(thrown(new Unauthorized('token refused', { code: 'http-401' })), {
    tag: 'unauthorized', val: { code: 'http-401', message: 'token refused' },
  });
  deepStrictEqual(thrown(new Retryable('busy', { code: 'http-503', retryAfterMs: 3000 })), {
    tag: 'retryable', val: { info: { code: 'http-503', message: 'busy' }, retryAfterMs: 3000 },
  });
  deepStrictEqual(thrown(new Retryable('down')), {
    tag: 'retryable', val: { info: { code: 'retryable', message: 'down' }, retryAfterMs: undefined },
  });
  deepStrictEqual(thrown(new Rejected('no')).tag, 'rejected');
  deepStrictEqual(thrown(new Fatal('broken')).val, { code: 'fatal', message: 'broken' });
  deepStrictEqual(thrown(new TypeError('bug')), { tag: 'fatal', val: { code: 'exception', message: 'bug' } });
  // A failure index outside the batch is a driver bug: fatal.
  deepStrictEqual(payloadOf(() => driver({ replicate: () => [{ index: 5, error: new Rejected('x') }] }).replicate([raw('a')])).tag, 'fatal');
});

test('async methods: the value when fulfilled, the err payload when rejected', async () => {
  const d = driver({
    async init() {},
    async replicate(events) {
      await null;
      if (events.length > 1) throw new Retryable('later', { retryAfterMs: 1500.4 });
      return [{ index: 0, error: new Rejected('no') }];
    },
    async health() { return sdk.degraded('slow'); },
    async close() { throw new Fatal('flush failed'); },
  });
  strictEqual(await d.init(enc.encode('{}')), undefined);
  deepStrictEqual(await d.replicate([raw('a')]), { failed: [{ index: 0, error: { tag: 'rejected', val: { code: 'rejected', message: 'no' } } }] });
  await rejects(d.replicate([raw('a'), raw('b')]), (e) => {
    deepStrictEqual(e.payload, { tag: 'retryable', val: { info: { code: 'retryable', message: 'later' }, retryAfterMs: 1500 } });
    return true;
  });
  deepStrictEqual(await d.health(), { tag: 'degraded', val: 'slow' });
  await rejects(d.close(), (e) => e.payload.tag === 'fatal');
});

test('health: ok by default; an exception is unhealthy; close defaults to nothing', () => {
  const d = driver({ replicate: () => [] });
  deepStrictEqual(d.health(), { tag: 'ok' });
  strictEqual(d.close(), undefined);
  deepStrictEqual(driver({ replicate: () => [], health: () => sdk.unhealthy('down') }).health(), { tag: 'unhealthy', val: 'down' });
  deepStrictEqual(driver({ replicate: () => [], health: () => { throw new Error('x'); } }).health(), { tag: 'unhealthy', val: 'x' });
  deepStrictEqual(driver({ replicate: () => [], health: () => 'ok' }).health(), { tag: 'ok' });
});

test('state: bytes, strings and JSON values; a refusal throws', () => {
  state.set('a', Uint8Array.of(1, 2));
  deepStrictEqual(state.get('a'), Uint8Array.of(1, 2));
  state.set('s', 'héllo');
  strictEqual(new TextDecoder().decode(state.get('s')), 'héllo');
  state.setJson('j', { token: 't', n: 1 });
  deepStrictEqual(state.getJson('j'), { token: 't', n: 1 });
  state.delete('j');
  strictEqual(state.get('j'), undefined);
  strictEqual(state.getJson('j'), undefined);
  host.refuse.set = 'state is full (1 MiB)';
  try {
    throws(() => state.set('big', 'x'), /state.set\("big"\): state is full/);
  } finally {
    host.refuse.set = undefined;
  }
});
