// Runs built transform components under Node, without the replicator host: jco transpiles each
// component to JS + core wasm (into .component-run/, gitignored), the host's `log` and `digest`
// imports are served by test/log-shim.mjs and test/digest-shim.mjs, and every case of ../transform-cases.json is run against the
// component's `batch-transform` (or `record-transform`) export.
//   node run-component.mjs [FILE.wasm ...]    (default: ../dist/js-transform.wasm ../dist/python-transform.wasm)
// Exits 1 when a case fails. Checks the component's behaviour, not the host's limits.
import { spawnSync } from 'node:child_process';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { cases, runCase, runDefaultBatch } from './test/cases.mjs';
import { messages } from './test/log-shim.mjs';

// componentize-py's core module uses extended constant expressions, behind a flag in Node 20.
const FLAG = '--experimental-wasm-extended-const';
if (!process.execArgv.includes(FLAG) && Number(process.versions.node.split('.')[0]) < 22) {
  const r = spawnSync(process.execPath, [...process.execArgv, FLAG, ...process.argv.slice(1)], { stdio: 'inherit' });
  process.exit(r.status ?? 1);
}
const { transpile } = await import('@bytecodealliance/jco');

const here = dirname(fileURLToPath(import.meta.url));
const files = process.argv.length > 2
  ? process.argv.slice(2)
  : ['../dist/js-transform.wasm', '../dist/python-transform.wasm'].map((f) => resolve(here, f));

let passed = 0;
let failed = 0;
for (const file of files) {
  const name = basename(file, '.wasm');
  const outDir = join(here, '.component-run', name);
  const started = Date.now();
  await rm(outDir, { recursive: true, force: true });
  const map = {
    'replicator:plugin/log@0.1.0': pathToFileURL(join(here, 'test/log-shim.mjs')).href,
    'replicator:plugin/digest@0.1.0': pathToFileURL(join(here, 'test/digest-shim.mjs')).href,
  };
  const { files: out, imports } = await transpile(await readFile(file), { name, map });
  for (const [path, bytes] of Object.entries(out)) {
    await mkdir(dirname(join(outDir, path)), { recursive: true });
    await writeFile(join(outDir, path), bytes);
  }
  const extra = imports.filter((i) => !Object.values(map).includes(i));
  const mod = await import(pathToFileURL(join(outDir, `${name}.js`)).href);
  const api = mod.batchTransform ?? mod.recordTransform;
  if (!api) throw new Error(`${file}: exports neither batch-transform nor record-transform (${Object.keys(mod)})`);
  const world = mod.batchTransform ? 'batch-transformer' : 'record-transformer';
  const loaded = Date.now();
  messages.length = 0;
  for (const c of cases) {
    try {
      runCase(api, c);
      passed++;
    } catch (e) {
      failed++;
      console.log(`FAIL ${name}: ${c.name}\n  ${String(e.message).split('\n').join('\n  ')}`);
    }
  }
  try {
    runDefaultBatch(api);
    passed++;
  } catch (e) {
    failed++;
    console.log(`FAIL ${name}: default-config cases as one batch\n  ${e.message}`);
  }
  console.error(
    `${name} (${world}): ${cases.length} cases + 1 batch in ${Date.now() - loaded} ms (transpile + load ${loaded - started} ms)` +
      (extra.length ? `; imports besides log and digest: ${extra.join(', ')}` : '; imports only log and digest') +
      `; ${messages.length} log calls (${[...new Set(messages.map(([l]) => l))].join(', ')})`,
  );
}
console.log(`${passed} passed, ${failed} failed`);
process.exitCode = failed ? 1 : 0;
