#!/usr/bin/env node
// forwarder-bench.mjs: what ReplicatorForwarderPlugin adds to an s3db.js write (issue 16).
//
//   node tests/js/forwarder-bench.mjs --url http://127.0.0.1:7700 [--db file:///dir] [--latency 300] [--writers 50] [--per-writer 40]
//
// For each setup (no plugin; s3db.js's ReplicatorPlugin with a webhook driver posting to a
// webhook receiver, a separate Node process answering 200: its HTTP client posts to
// `/v1/events/`, which the host does not route; ReplicatorForwarderPlugin) it runs, in a fresh process and a fresh database:
// `--latency` sequential inserts (p50/p99 of each insert's duration), then `--writers`
// concurrent writers doing `--per-writer` inserts each (writes/s). The host must be running
// (e.g. `target/release/replicator serve`). Figures are printed, never asserted.

import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const opt = Object.fromEntries(
  process.argv.slice(2).reduce((a, v, i, all) => (v.startsWith('--') ? [...a, [v.slice(2), all[i + 1]]] : a), []),
);
const url = opt.url ?? 'http://127.0.0.1:7700';
const latencyN = Number(opt.latency ?? 300);
const writers = Number(opt.writers ?? 50);
const perWriter = Number(opt['per-writer'] ?? 40);
const SETUPS = ['none', 'replicator-plugin', 'forwarder'];

async function child(setup, db) {
  for (const k of ['log', 'info', 'debug', 'warn']) console[k] = console.error;
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const { S3db } = await import('s3db.js/lite');
  const plugins = [];
  if (setup === 'forwarder') {
    const { ReplicatorForwarderPlugin } = await import('../../clients/s3db-js/index.js');
    plugins.push(new ReplicatorForwarderPlugin({ url }));
  } else if (setup === 'replicator-plugin') {
    const { ReplicatorPlugin } = await import('s3db.js/plugins/replicator.plugin');
    plugins.push(new ReplicatorPlugin({
      logLevel: 'silent',
      replicators: [{ driver: 'webhook', resources: ['bench'], config: { url: opt.hook } }],
    }));
  }
  const s3db = new S3db({ connectionString: db, logLevel: 'silent' });
  await s3db.connect();
  const bench = await s3db.createResource({ name: 'bench', attributes: { name: 'string', n: 'number', tags: 'array|items:string' } });
  // After createResource: the ReplicatorPlugin only listens to resources that exist at install
  // (its afterCreateResource hook reads `.name` of the hook's context object, so never matches).
  for (const p of plugins) await s3db.usePlugin(p);
  const rec = (id, n) => ({ id, name: `record ${id}`, n, tags: ['a', 'b'] });
  for (let i = 0; i < 20; i++) await bench.insert(rec(`warm${i}`, i)); // connections, JIT
  const lat = [];
  for (let i = 0; i < latencyN; i++) {
    const t = process.hrtime.bigint();
    await bench.insert(rec(`l${i}`, i));
    lat.push(Number(process.hrtime.bigint() - t) / 1e6);
  }
  lat.sort((a, b) => a - b);
  const q = (p) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  const t0 = performance.now();
  await Promise.all(Array.from({ length: writers }, async (_, w) => {
    for (let i = 0; i < perWriter; i++) await bench.insert(rec(`w${w}-${i}`, i));
  }));
  const secs = (performance.now() - t0) / 1000;
  await new Promise((r) => setTimeout(r, 2000)); // the ReplicatorPlugin's deliveries run after the writes
  const status = plugins[0]?.status?.();
  process.stdout.write(JSON.stringify({
    setup, p50: q(0.5), p99: q(0.99), writesPerSec: (writers * perWriter) / secs,
    requests: status?.requests, forwarded: status?.forwarded,
  }) + '\n');
  process.exit(0);
}

if (opt.child) {
  await child(opt.child, opt.db);
} else {
  const head = async () => (await (await fetch(`${url}/v1/status`)).json()).journal.head;
  // The ReplicatorPlugin's webhook destination: counts what it receives.
  const receiver = spawn(process.execPath, ['-e', `let n = 0; require('http').createServer((q, s) => {
    if (q.method === 'GET') return s.end(String(n));
    q.resume(); q.on('end', () => { n++; s.end('ok'); });
  }).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`], { stdio: ['ignore', 'pipe', 'inherit'] });
  const port = await new Promise((r) => receiver.stdout.once('data', (d) => r(String(d).trim())));
  const hook = `http://127.0.0.1:${port}/hook`;
  const hooked = async () => Number(await (await fetch(hook)).text());
  const rows = [];
  for (const setup of SETUPS) {
    const before = setup === 'replicator-plugin' ? await hooked() : await head();
    const dir = mkdtempSync(join(opt.dir ?? tmpdir(), 'fwbench-'));
    const args = [fileURLToPath(import.meta.url), '--child', setup, '--db', `file://${dir}`, '--url', url,
      '--hook', hook, '--latency', String(latencyN), '--writers', String(writers), '--per-writer', String(perWriter)];
    const r = spawnSync(process.execPath, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
    rmSync(dir, { recursive: true, force: true });
    if (r.status !== 0) throw new Error(`${setup} failed (${r.status})`);
    rows.push({ ...JSON.parse(r.stdout.trim().split('\n').pop()), atHost: (setup === 'replicator-plugin' ? await hooked() : await head()) - before });
  }
  const f = (x, d = 2) => x.toFixed(d).padStart(8);
  console.log(`s3db.js insert into file:// (${latencyN} sequential; ${writers} writers x ${perWriter}), host ${url}`);
  receiver.kill();
  const total = 20 + latencyN + writers * perWriter;
  console.log('setup                 p50 ms   p99 ms   writes/s  events at the destination');
  for (const r of rows) {
    const req = r.requests === undefined ? '' : ` (${r.requests} requests)`;
    console.log(`${r.setup.padEnd(18)}${f(r.p50)} ${f(r.p99)} ${f(r.writesPerSec, 0)}  ${r.atHost} of ${total}${req}`);
  }
}
