#!/usr/bin/env node
// capture-bench.mjs: the s3db.js side of the change capture benchmark (issue 17). A plain
// s3db.js 21.6.2 application, with no plugin, writing into a database the host captures.
//
//   node tests/js/capture-bench.mjs stream '<connectionString>' <rate> <seconds>
//       creates resource `events` and inserts <rate> records a second for <seconds>; each
//       record carries `writtenAt`, the time (microseconds since the epoch) its insert began
//   node tests/js/capture-bench.mjs fill '<connectionString>' <n>
//       creates resource `items` and inserts <n> records, 32 at a time
//   node tests/js/capture-bench.mjs touch '<connectionString>' <n>
//       updates the first <n> records of `items`
// Prints one JSON line with what it did. Connection strings as tests/js/s3db-tool.mjs takes.

import { S3db } from 's3db.js/lite';

for (const k of ['log', 'info', 'debug', 'warn']) console[k] = console.error;
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const [mode, cs, a, b] = process.argv.slice(2);
const plain = /^https?:\/\//i.test(cs) ? cs + (cs.includes('?') ? '&' : '?') + 'httpClientOptions.useReckerHandler=false' : cs;
const db = new S3db({ connectionString: plain, executorPool: { retries: 0 }, logLevel: 'silent' });
await db.connect();
const micros = () => Math.round((performance.timeOrigin + performance.now()) * 1000);
const id = (i) => `i${String(i).padStart(6, '0')}`;

async function inParallel(n, width, f) {
    let next = 0;
    await Promise.all(Array.from({ length: width }, async () => {
        while (next < n) await f(next++);
    }));
}

const started = performance.now();
let written = 0;
if (mode === 'stream') {
    const events = await db.createResource({ name: 'events', attributes: { writtenAt: 'number', payload: 'string' } });
    const rate = Number(a), seconds = Number(b);
    const pending = [];
    for (let i = 0; i < rate * seconds; i++) {
        const due = started + (i * 1000) / rate;
        const wait = due - performance.now();
        if (wait > 0) await new Promise((r) => setTimeout(r, wait));
        pending.push(events.insert({ id: id(i), writtenAt: micros(), payload: 'x'.repeat(200) }).then(() => written++));
    }
    await Promise.all(pending);
} else if (mode === 'fill') {
    const items = await db.createResource({ name: 'items', attributes: { name: 'string', n: 'number' } });
    await inParallel(Number(a), 32, async (i) => {
        await items.insert({ id: id(i), name: `item ${i}`, n: i });
        written++;
    });
} else if (mode === 'touch') {
    const items = db.resources.items;
    await inParallel(Number(a), 32, async (i) => {
        await items.update(id(i), { n: -i });
        written++;
    });
} else {
    console.error(`unknown mode ${mode}`);
    process.exit(2);
}
process.stdout.write(JSON.stringify({ mode, written, seconds: (performance.now() - started) / 1000 }) + '\n', () => process.exit(0));
