// Builds transform.js into a WebAssembly component of the world `batch-transformer`.
//   [WEVAL_BIN=path/to/weval] node build.mjs [OUT.wasm]   (default: ../dist/js-transform.wasm)
// Uses the componentize-js API (the `jco componentize` CLI fails on this machine with
// "failed to get path metadata (os error 44)").
//
// transform.js imports the SDK from ../sdk/js, outside this directory: componentize-js loads a
// relative import only from below the directory it maps into the engine (the working directory
// with the interpreter, the source's own with --aot), so rolldown bundles the two into one module
// first, leaving the host's imports (replicator:..., wasi:...) to the component.
import { componentize } from '@bytecodealliance/componentize-js';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { rolldown } from 'rolldown';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? resolve(here, '../dist/js-transform.wasm'));
const started = Date.now();

const bundleDir = await mkdtemp(join(tmpdir(), 'js-transform-'));
const sourcePath = join(bundleDir, 'transform.js');
const bundle = await rolldown({
  input: resolve(here, 'transform.js'),
  platform: 'neutral',
  external: [/^replicator:/, /^wasi:/],
});
await bundle.write({ file: sourcePath, format: 'esm' });
await bundle.close();

const opts = {
  sourcePath,
  witPath: resolve(here, '../../wit'),
  worldName: 'batch-transformer',
  // A transform gets no WASI at all: only the host's `log` import.
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
};
// With a weval binary, the JavaScript is compiled ahead of time instead of interpreted: about 25%
// less time per record (../build-js-python.sh --aot finds or installs one).
if (process.env.WEVAL_BIN) {
  opts.enableAot = true;
  opts.wevalBin = process.env.WEVAL_BIN;
}

const { component, imports } = await componentize(opts).finally(() => rm(bundleDir, { recursive: true, force: true }));
await mkdir(dirname(out), { recursive: true });
await writeFile(out, component);
console.error(
  `js-transform: ${out} (${(component.length / 1048576).toFixed(1)} MiB, ` +
    `${((Date.now() - started) / 1000).toFixed(1)} s, ${opts.enableAot ? 'ahead-of-time' : 'interpreted'}); ` +
    `imports: ${JSON.stringify(imports)}`,
);
