// The transform half of the SDK in plain Node: outcomes as the host takes them, lazy documents,
// exceptions failing one record, config handling. Run: node --test test/*.test.mjs
import './setup.mjs';
import { test } from 'node:test';
import { deepStrictEqual, strictEqual, throws, ok } from 'node:assert/strict';

const sdk = await import('../index.js');
const host = await import('./host.mjs');
const { defineTransform, keep, skip, update, many, fail, Event, InvalidConfig, InvalidRecord } = sdk;

const enc = new TextEncoder();
const text = (bytes) => new TextDecoder().decode(bytes);
const json = (v) => enc.encode(JSON.stringify(v));
const raw = (fields = {}) => ({
  resource: 'users',
  action: 'insert',
  id: 'u1',
  data: json({ name: 'Ada', password: 'x' }),
  before: undefined,
  timestamp: '2026-01-01T00:00:00.000Z',
  source: 'app',
  sequence: 18446744073709551615n,
  metadata: json({ requestId: 'r1' }),
  ...fields,
});
const run = (t, events, config = '{}') => {
  const e = defineTransform(t);
  e.init(enc.encode(config));
  return e.transformBatch(events);
};
const payloadOf = (fn) => {
  try {
    fn();
  } catch (e) {
    ok(e instanceof Error, 'an Error (componentize-js traps on other throws only when they lack payload)');
    return e.payload;
  }
  throw new Error('did not throw');
};

test('keep and skip are the bare variants', () => {
  deepStrictEqual(run({ transform: () => keep() }, [raw()]), [{ tag: 'keep' }]);
  deepStrictEqual(run({ transform: () => skip() }, [raw()]), [{ tag: 'skip' }]);
});

test('update: JSON values encoded, bytes as given, a document left out stays as it came', () => {
  const [o] = run({ transform: (e) => update({ data: { ...e.data, n: 1 } }) }, [raw()]);
  strictEqual(o.tag, 'update');
  strictEqual(text(o.val.data), '{"name":"Ada","password":"x","n":1}');
  strictEqual(o.val.before, undefined);
  const bytes = enc.encode('{"b":1}');
  const [p] = run({ transform: () => update({ before: bytes }) }, [raw()]);
  strictEqual(p.val.before, bytes);
  strictEqual(p.val.data, undefined);
});

test('many: fields left out are the input’s, null means none, an Event is taken whole', () => {
  const input = raw();
  const [o] = run(
    {
      transform: (e) =>
        many([{ id: 'u1-a' }, { resource: 'audit', data: { what: e.data.name }, source: null, metadata: null, sequence: 5 }, e]),
    },
    [input],
  );
  strictEqual(o.tag, 'many');
  const [a, b, c] = o.val;
  deepStrictEqual({ ...a, data: text(a.data), metadata: text(a.metadata) }, { ...input, id: 'u1-a', data: text(input.data), metadata: text(input.metadata) });
  strictEqual(a.data, input.data, 'documents not given are the input’s bytes, not re-encoded');
  deepStrictEqual([b.resource, b.id, text(b.data), b.source, b.metadata, b.sequence], ['audit', 'u1', '{"what":"Ada"}', undefined, undefined, 5n]);
  // An Event's documents that were read are encoded again (they may have been changed in place).
  deepStrictEqual([c.id, text(c.data)], ['u1', text(input.data)]);
  strictEqual(c.metadata, input.metadata, 'documents not read are passed on as bytes');
});

test('many: an Event changed in place carries its change', () => {
  const [o] = run({ transform: (e) => { e.data.name = 'Bob'; return many([e]); } }, [raw()]);
  strictEqual(text(o.val[0].data), '{"name":"Bob","password":"x"}');
});

test('fail is invalid-record with the code; the other records go on', () => {
  const out = run({ transform: (e) => (e.id === 'bad' ? fail('no-name', 'name is missing') : keep()) }, [raw({ id: 'bad' }), raw()]);
  deepStrictEqual(out, [
    { tag: 'failed', val: { tag: 'invalid-record', val: { code: 'no-name', message: 'name is missing' } } },
    { tag: 'keep' },
  ]);
});

test('a throw fails that record only: `other`/exception, InvalidRecord keeps its code', () => {
  const out = run(
    {
      transform(e) {
        if (e.id === 'a') throw new Error('boom');
        if (e.id === 'b') throw new InvalidRecord('no', { code: 'too-big' });
        if (e.id === 'c') return undefined; // not an outcome
        if (e.id === 'd') null.x; // a TypeError
        return skip();
      },
    },
    ['a', 'b', 'c', 'd', 'e'].map((id) => raw({ id })),
  );
  deepStrictEqual(out.map((o) => [o.tag, o.val?.tag, o.val?.val.code]), [
    ['failed', 'other', 'exception'],
    ['failed', 'invalid-record', 'too-big'],
    ['failed', 'other', 'exception'],
    ['failed', 'other', 'exception'],
    ['skip', undefined, undefined],
  ]);
  strictEqual(out[0].val.val.message, 'boom');
  ok(out[2].val.val.message.includes('not an outcome'));
});

test('documents are parsed on first read only, and only when read', () => {
  const e = new Event(raw({ data: enc.encode('{not json'), before: json({ a: 1 }) }));
  strictEqual(e.dataBytes.length, 9, 'the bytes are there without parsing');
  strictEqual(e.before, e.before, 'parsed once, then the same object');
  const err = (() => { try { e.data; } catch (x) { return x; } })();
  ok(err instanceof InvalidRecord);
  deepStrictEqual([err.code, err.message.startsWith('data is not valid JSON')], ['invalid-json', true]);
  strictEqual(new Event(raw({ metadata: undefined })).metadata, undefined);
  // Never read: the invalid document costs nothing and the record is kept.
  deepStrictEqual(run({ transform: () => keep() }, [raw({ data: enc.encode('{') })]), [{ tag: 'keep' }]);
  // Read: that record fails as invalid-record/invalid-json.
  const [o] = run({ transform: (ev) => update({ data: ev.data }) }, [raw({ data: enc.encode('{') })]);
  deepStrictEqual([o.val.tag, o.val.val.code], ['invalid-record', 'invalid-json']);
});

test('envelope fields pass through; invalid UTF-8 is invalid JSON', () => {
  const e = new Event(raw({ data: Uint8Array.from([0x7b, 0xff, 0x7d]) }));
  deepStrictEqual([e.resource, e.action, e.id, e.timestamp, e.source, e.sequence], ['users', 'insert', 'u1', '2026-01-01T00:00:00.000Z', 'app', 18446744073709551615n]);
  throws(() => e.data, /invalid UTF-8/);
});

test('init: the config as a JSON value, {} when none; refusals as the result’s err', () => {
  const seen = [];
  const t = defineTransform({ init: (c) => seen.push(c), transform: keep });
  t.init(enc.encode(''));
  t.init(enc.encode(' \n'));
  t.init(enc.encode('{"drop":["a"]}'));
  deepStrictEqual(seen, [{}, {}, { drop: ['a'] }]);
  deepStrictEqual(payloadOf(() => t.init(enc.encode('{"drop":'))).tag, 'invalid-config');
  ok(payloadOf(() => t.init(enc.encode('{"drop":'))).val.message.includes('config is not JSON'));
  const refusing = defineTransform({ init() { throw new InvalidConfig('`drop` must be a list'); }, transform: keep });
  deepStrictEqual(payloadOf(() => refusing.init(enc.encode('{}'))), {
    tag: 'invalid-config',
    val: { code: 'invalid-config', message: '`drop` must be a list' },
  });
  const buggy = defineTransform({ init(c) { c.x.y; }, transform: keep });
  deepStrictEqual(payloadOf(() => buggy.init(enc.encode('{}'))).tag, 'other');
  deepStrictEqual(payloadOf(() => buggy.init(enc.encode('{}'))).val.code, 'exception');
});

test('transformBatch override: `each` is the per-event path; outcomes finished; bad lengths fail all', () => {
  const t = {
    transform: (e) => (e.id === 'x' ? (() => { throw new Error('x'); })() : keep()),
    transformBatch(events, each) {
      const out = events.map(each);
      out[0] = many([{ id: 'first' }]);
      return out;
    },
  };
  const out = run(t, [raw({ id: 'a' }), raw({ id: 'x' })]);
  deepStrictEqual([out[0].tag, out[0].val[0].id, out[0].val[0].resource], ['many', 'first', 'users']);
  deepStrictEqual([out[1].tag, out[1].val.tag], ['failed', 'other']);
  const short = run({ transformBatch: () => [keep()] }, [raw(), raw()]);
  deepStrictEqual(short.map((o) => o.val.val.code), ['exception', 'exception']);
  ok(short[0].val.val.message.includes('1 outcomes for 2 events'));
  deepStrictEqual(run({ transform: keep }, []), []);
});

test('log and digest go to the host', () => {
  host.logged.length = 0;
  sdk.log.info('hello');
  sdk.log.trace(42);
  deepStrictEqual(host.logged, [['info', 'hello'], ['trace', '42']]);
  strictEqual(sdk.sha256('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
  strictEqual(sdk.sha256(enc.encode('abc')), sdk.sha256('abc'));
  strictEqual(sdk.sha512('').length, 128);
  strictEqual(sdk.sha384('').length, 96);
  strictEqual(sdk.hmac('sha256', 'key', 'The quick brown fox jumps over the lazy dog'), 'f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8');
});

test('eventsToJson: documents as JSON values (copied, not parsed), exact sequence, absent fields null', () => {
  const e = new Event(raw({ before: enc.encode('{"a" : 1}'), source: undefined }));
  const out = JSON.parse(sdk.eventsToJson([e, raw({ data: undefined, metadata: undefined })]));
  deepStrictEqual(out[0], {
    resource: 'users', action: 'insert', id: 'u1', data: { name: 'Ada', password: 'x' }, before: { a: 1 },
    timestamp: '2026-01-01T00:00:00.000Z', source: null, sequence: 18446744073709552000, metadata: { requestId: 'r1' },
  });
  ok(sdk.eventsToJson([e]).includes('"sequence":18446744073709551615,'));
  ok(sdk.eventsToJson([e]).includes('"before":{"a" : 1}'), 'documents copied as they came');
  deepStrictEqual([out[1].data, out[1].before, out[1].source, out[1].metadata], [null, null, 'app', null]);
});
