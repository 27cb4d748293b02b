// Builds transform.js into {{name}}.wasm (world `batch-transformer` of wit/plugin.wit) with the
// componentize-js API. Run through build.sh, which installs the devDependencies first.
//
// componentize-js loads relative imports (./sdk/index.js) from below the working directory, and
// does not resolve bare specifiers from node_modules: to use an npm package, bundle first (e.g.
// rolldown, with `external: [/^replicator:/, /^wasi:/]`) and componentize the bundle.
import { componentize } from '@bytecodealliance/componentize-js';
import { rename, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
process.chdir(here);
const { component } = await componentize({
  sourcePath: join(here, 'transform.js'),
  witPath: join(here, 'wit'),
  worldName: 'batch-transformer',
  // A transform gets no WASI: without these the component imports only the host's log and digest
  // (console.log does nothing; no clock, randomness or network).
  disableFeatures: ['random', 'stdio', 'clocks', 'http', 'fetch-event'],
});
// Renamed into place, so a running replicator that watches the file never reads half of it.
const out = join(here, '{{name}}.wasm');
await writeFile(`${out}.tmp`, component);
await rename(`${out}.tmp`, out);
console.error(`built ${out} (${component.length} bytes)`);
