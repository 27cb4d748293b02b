// Builds driver.js into {{name}}.wasm with the componentize-js API. Run through build.sh, which
// installs the devDependencies first.
//
// The world is `http-driver` of sdk/wasi-http: the replicator's `sink-driver` (wit/plugin.wit)
// plus wasi:http/outgoing-handler, for the SDK's httpRequest. componentize-js takes one WIT
// folder, so the two are put together in a temporary one.
//
// componentize-js loads relative imports (./sdk/index.js) from below the working directory, and
// does not resolve bare specifiers from node_modules: to use an npm package, bundle first (e.g.
// rolldown, with `external: [/^replicator:/, /^wasi:/]`) and componentize the bundle.
import { componentize } from '@bytecodealliance/componentize-js';
import { copyFile, mkdir, mkdtemp, readdir, rename, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
process.chdir(here);
const wit = await mkdtemp(join(tmpdir(), '{{name}}-wit-'));
let component;
try {
  await mkdir(join(wit, 'deps'));
  await copyFile(join(here, 'sdk/wasi-http/world.wit'), join(wit, 'world.wit'));
  for (const f of await readdir(join(here, 'sdk/wasi-http/deps'))) {
    await copyFile(join(here, 'sdk/wasi-http/deps', f), join(wit, 'deps', f));
  }
  await copyFile(join(here, 'wit/plugin.wit'), join(wit, 'deps/plugin.wit'));
  ({ component } = await componentize({
    sourcePath: join(here, 'driver.js'),
    witPath: wit,
    worldName: 'replicator:js-http/http-driver',
    // No `fetch` (`http`, `fetch-event`: the SDK's httpRequest calls wasi:http itself) and no
    // stdio (console output would go nowhere); clocks and randomness stay.
    disableFeatures: ['http', 'fetch-event', 'stdio'],
  }));
} finally {
  await rm(wit, { recursive: true, force: true });
}
// Renamed into place, so a running replicator that watches the file never reads half of it.
const out = join(here, '{{name}}.wasm');
await writeFile(`${out}.tmp`, component);
await rename(`${out}.tmp`, out);
console.error(`built ${out} (${component.length} bytes)`);
