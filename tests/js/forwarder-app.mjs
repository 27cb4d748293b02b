#!/usr/bin/env node
// forwarder-app.mjs: an s3db.js 21.6.2 application using ReplicatorForwarderPlugin
// (clients/s3db-js), driven by tests/forwarder.rs.
//
//   node tests/js/forwarder-app.mjs '<json>'
//
// The JSON names a `scenario`, the database (`db`, a connection string) and the plugin's
// options (`plugin`). Each scenario prints JSON lines on stdout; the last one is its result.
// Scenarios:
//   paths        every write path once (resources from s3db.json, created later, plg_*)
//   order        `writers` concurrent writers, each `steps` writes on its own key
//   reject       writes while the host is down with onUnavailable: 'reject': the errors
//   spool-write  writes while the host is down with 'spool', prints the status, then waits
//                (the test kills it with SIGKILL)
//   spool-resume reopens the spool, writes `steps` more updates per key, waits for the drain
//   bad-options  constructor errors for bad options
//   token        one insert with the configured (wrong) token: the error

import { S3db } from 's3db.js/lite';
import { ReplicatorForwarderPlugin } from '../../clients/s3db-js/index.js';

for (const k of ['log', 'info', 'debug', 'warn']) console[k] = console.error;
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const out = (v) => new Promise((r) => process.stdout.write(JSON.stringify(v) + '\n', r));
const args = JSON.parse(process.argv[2]);
const ATTRS = { name: 'string', n: 'number|optional', tags: 'array|items:string|optional' };

async function open(plugin) {
  const db = new S3db({ connectionString: args.db, logLevel: 'silent', plugins: plugin ? [plugin] : [] });
  await db.connect();
  return db;
}

async function errorOf(p) {
  try {
    await p;
    return null;
  } catch (e) {
    return { message: e.message, code: e.code ?? null };
  }
}

async function until(cond, what, ms = 20_000) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

const scenarios = {
  async paths() {
    // `users` is defined before the plugin exists: connect() loads it from s3db.json.
    const pre = await open(null);
    await pre.createResource({ name: 'users', attributes: ATTRS });
    await pre.disconnect();
    const plugin = new ReplicatorForwarderPlugin(args.plugin);
    const db = await open(plugin);
    const users = db.resources.users;
    const notes = await db.createResource({ name: 'notes', behavior: 'enforce-limits', attributes: ATTRS });
    const internal = await db.createResource({ name: 'plg_audit', attributes: ATTRS });
    await users.insert({ id: 'u1', name: 'Ana', n: 1, tags: ['a'] });
    await users.insertMany([{ id: 'u2', name: 'Bo', n: 1 }, { id: 'u3', name: 'Cy', n: 1 }]);
    await users.update('u1', { n: 2 });
    await users.patch('u1', { n: 3 });
    await notes.insert({ id: 'n1', name: 'note', n: 1 });
    await notes.patch('n1', { n: 2 });
    await users.replace('u2', { name: 'Bo', n: 9 });
    await users.upsert({ id: 'u4', name: 'Di', n: 1 });
    await users.upsert({ id: 'u1', name: 'Ana', n: 4 });
    await users.delete('u3');
    await users.deleteMany(['u2', 'u4']);
    await internal.insert({ id: 'x1', name: 'not forwarded' });
    await out({ status: plugin.status() });
  },

  async order() {
    const plugin = new ReplicatorForwarderPlugin(args.plugin);
    const db = await open(plugin);
    const items = await db.createResource({ name: 'items', attributes: ATTRS });
    const t0 = Date.now();
    // Each writer owns one key and awaits each write: its writes reach S3 in this order.
    await Promise.all(
      Array.from({ length: args.writers }, async (_, w) => {
        const id = `k${String(w).padStart(2, '0')}`;
        await items.insert({ id, name: id, n: 0 });
        for (let s = 1; s < args.steps; s++) {
          if (s % 3 === 0) await items.patch(id, { n: s });
          else await items.update(id, { n: s });
        }
        if (w % 5 === 0) await items.delete(id);
      }),
    );
    await out({ ms: Date.now() - t0, status: plugin.status() });
  },

  async reject() {
    const plugin = new ReplicatorForwarderPlugin(args.plugin);
    const db = await open(plugin);
    const items = await db.createResource({ name: 'items', attributes: ATTRS });
    const insert = await errorOf(items.insert({ id: 'r1', name: 'written', n: 1 }));
    const many = await errorOf(items.insertMany([{ id: 'r2', name: 'a' }, { id: 'r3', name: 'b' }]));
    const update = await errorOf(items.update('r1', { n: 2 }));
    const inS3 = (await items.getMany(['r1', 'r2', 'r3'])).map((r) => ({ id: r.id, n: r.n ?? null }));
    await out({ insert, many, update, inS3, status: plugin.status() });
  },

  async 'spool-write'() {
    const plugin = new ReplicatorForwarderPlugin(args.plugin);
    const db = await open(plugin);
    const items = await db.createResource({ name: 'items', attributes: ATTRS });
    await Promise.all(
      Array.from({ length: args.keys }, async (_, k) => {
        const id = `s${k}`;
        await items.insert({ id, name: id, n: 0 });
        for (let s = 1; s < args.steps; s++) await items.update(id, { n: s });
      }),
    );
    await out({ phase: 'written', status: plugin.status() });
    await new Promise(() => {}); // killed here
  },

  async 'spool-resume'() {
    const plugin = new ReplicatorForwarderPlugin(args.plugin);
    const states = [];
    plugin.on('state', (s) => states.push(s));
    const db = await open(plugin);
    const atStart = plugin.status();
    const items = db.resources.items;
    await Promise.all(
      Array.from({ length: args.keys }, async (_, k) => {
        for (let s = args.from; s < args.from + args.steps; s++) await items.update(`s${k}`, { n: s });
      }),
    );
    await out({ phase: 'written', atStart, status: plugin.status() });
    await until(() => plugin.status().state === 'direct' && plugin.status().spooled === 0, 'the spool to drain', 30_000);
    // Once drained, writes go straight to the host again.
    await items.update('s0', { n: args.from + args.steps });
    await out({ phase: 'drained', atStart, states, status: plugin.status() });
  },

  async 'bad-options'() {
    const cases = [
      {},
      { url: 'ftp://host' },
      { url: 'http://127.0.0.1:1', onUnavailable: 'spool' },
      { url: 'http://127.0.0.1:1', onUnavailble: 'spool' },
      { url: 'http://127.0.0.1:1', timeout: -5 },
      { url: 'http://127.0.0.1:1', resources: 'users' },
    ];
    const errors = cases.map((c) => {
      try {
        new ReplicatorForwarderPlugin(c);
        return null;
      } catch (e) {
        return e.message;
      }
    });
    await out({ errors });
  },

  async token() {
    const plugin = new ReplicatorForwarderPlugin(args.plugin);
    const db = await open(plugin);
    const items = await db.createResource({ name: 'items', attributes: ATTRS });
    const insert = await errorOf(items.insert({ id: 't1', name: 'x' }));
    await out({ insert, status: plugin.status() });
  },
};

const run = scenarios[args.scenario];
if (!run) throw new Error(`unknown scenario ${args.scenario}`);
await run();
process.exit(0);
