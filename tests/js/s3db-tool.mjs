#!/usr/bin/env node
// s3db-tool.mjs: run a batch of s3db.js (21.6.2) operations for the Rust integration tests.
//
//   node tests/js/s3db-tool.mjs '<connectionString>' < commands.json
//
// stdin: a JSON array of commands, run in order against ONE connected S3db. stdout: ONE JSON
// array with one result per command; a failing command yields {"error": "<message>"} and the
// batch goes on. Exit 0 when the batch ran (whatever the per-command results), 1 on a fatal
// error (usage, bad stdin, connect failure) with the message on stderr and nothing on stdout.
//
// Commands and results:
//   {"op":"createResource","name":N,"attributes":{..},"behavior":..,"timestamps":..,"partitions":{..},...}
//                                                  -> {"ok":true}   (all keys but op go to db.createResource)
//   {"op":"insert","resource":N,"data":{..}}       -> the inserted record (an "id" in data is used)
//   {"op":"update","resource":N,"id":I,"data":{..}}-> the updated record
//   {"op":"replace","resource":N,"id":I,"data":{..}} -> the record (whole object rewritten)
//   {"op":"patch","resource":N,"id":I,"data":{..}} -> the record (s3db.js's copy-based path when it can)
//   {"op":"delete","resource":N,"id":I}            -> {"ok":true}
//   {"op":"get","resource":N,"id":I}               -> the record, or null if it does not exist
//   {"op":"list","resource":N}                     -> all records, sorted by id
//   {"op":"listIds","resource":N,"partition":P?,"partitionValues":{..}?} -> sorted ids
//   {"op":"resources"}                             -> sorted names of the resources the db knows
// Resources defined in s3db.json by another writer are loaded by connect(); no createResource
// needed. Dates print as ISO strings (JSON.stringify), BigInts as strings.
//
// Connection strings: file:///abs/dir (FileSystemClient) or
// http://KEY:SECRET@127.0.0.1:PORT/BUCKET/prefix (S3Client; tests/servers/s3.sh). For http(s)
// the tool appends httpClientOptions.useReckerHandler=false if missing (recker 1.0.56's handler
// fails every DeleteObject). Setup: tests/servers/s3db-js.sh install.
// The s3db.js quirks behind these choices are described in docs/s3db.md.

import { S3db } from 's3db.js/lite';

// Keep stdout for the one JSON result: anything a library logs goes to stderr.
const out = (s) => new Promise((resolve) => process.stdout.write(s, resolve));
for (const k of ['log', 'info', 'debug', 'warn']) console[k] = console.error;

function fatal(msg) {
    process.stderr.write(`s3db-tool: ${msg}\n`);
    process.exit(1);
}

function withPlainHttpHandler(cs) {
    if (!/^https?:\/\//i.test(cs) || /[?&]httpClientOptions\.useReckerHandler=/.test(cs)) return cs;
    return cs + (cs.includes('?') ? '&' : '?') + 'httpClientOptions.useReckerHandler=false';
}

async function readStdin() {
    const chunks = [];
    for await (const c of process.stdin) chunks.push(c);
    return Buffer.concat(chunks).toString('utf8');
}

const byId = (a, b) => (String(a.id) < String(b.id) ? -1 : String(a.id) > String(b.id) ? 1 : 0);
const sortIds = (ids) => [...ids].sort((a, b) => (String(a) < String(b) ? -1 : String(a) > String(b) ? 1 : 0));

function isNotFound(err) {
    for (let e = err, depth = 0; e && depth < 8; e = e.cause || e.original, depth++) {
        const s = e.statusCode ?? e.status ?? e.$metadata?.httpStatusCode;
        if (s === 404 || e.code === 'NoSuchKey' || e.code === 'NotFound' || e.code === 'ENOENT' ||
            e.name === 'NoSuchKey' || e.name === 'NotFound' || e.name === 'NoSuchKeyError' ||
            e.code === 'RESOURCE_NOT_FOUND') return true;
    }
    return false;
}

function resourceOf(db, name) {
    if (typeof name !== 'string') throw new Error('missing "resource"');
    const r = db.resources[name];
    if (!r) throw new Error(`unknown resource '${name}' (known: ${Object.keys(db.resources).join(', ') || 'none'})`);
    return r;
}

async function run(db, cmd) {
    if (cmd === null || typeof cmd !== 'object' || Array.isArray(cmd)) throw new Error('command must be an object');
    const { op, ...rest } = cmd;
    switch (op) {
        case 'createResource':
            await db.createResource(rest);
            return { ok: true };
        case 'insert': {
            const data = { ...(cmd.data ?? {}) };
            if (cmd.id !== undefined && data.id === undefined) data.id = cmd.id;
            return await resourceOf(db, cmd.resource).insert(data);
        }
        case 'update':
            return await resourceOf(db, cmd.resource).update(cmd.id, cmd.data ?? {});
        case 'replace':
            return await resourceOf(db, cmd.resource).replace(cmd.id, cmd.data ?? {});
        case 'patch':
            return await resourceOf(db, cmd.resource).patch(cmd.id, cmd.data ?? {});
        case 'delete':
            await resourceOf(db, cmd.resource).delete(cmd.id);
            return { ok: true };
        case 'get': {
            const r = resourceOf(db, cmd.resource);
            try {
                return (await r.get(cmd.id)) ?? null;
            } catch (err) {
                if (isNotFound(err)) return null;
                throw err;
            }
        }
        case 'list':
            return (await resourceOf(db, cmd.resource).list()).sort(byId);
        case 'listIds': {
            const opts = {};
            if (cmd.partition != null) opts.partition = cmd.partition;
            if (cmd.partitionValues != null) opts.partitionValues = cmd.partitionValues;
            return sortIds(await resourceOf(db, cmd.resource).listIds(opts));
        }
        case 'resources':
            return sortIds(Object.keys(db.resources));
        default:
            throw new Error(`unknown op ${JSON.stringify(op)}`);
    }
}

const jsonReplacer = (_k, v) => (typeof v === 'bigint' ? v.toString() : v);

async function main() {
    const [cs] = process.argv.slice(2);
    if (!cs || process.argv.length !== 3) fatal("usage: node s3db-tool.mjs '<connectionString>' < commands.json");
    let cmds;
    try {
        cmds = JSON.parse(await readStdin());
    } catch (err) {
        fatal(`stdin is not JSON: ${err.message}`);
    }
    if (!Array.isArray(cmds)) fatal('stdin must be a JSON array of commands');

    // The AWS SDK warns on every run that it will drop Node 20 in 2027; not news for a test log.
    process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
    const db = new S3db({ connectionString: withPlainHttpHandler(cs), executorPool: { retries: 0 }, logLevel: 'silent' });
    try {
        await db.connect();
    } catch (err) {
        fatal(`connect failed: ${err?.message ?? err}`);
    }

    const results = [];
    for (const cmd of cmds) {
        try {
            // Round-trip each result so a later command cannot mutate an earlier record object.
            results.push(JSON.parse(JSON.stringify((await run(db, cmd)) ?? null, jsonReplacer)));
        } catch (err) {
            results.push({ error: String(err?.message ?? err) });
        }
    }
    await out(JSON.stringify(results, jsonReplacer) + '\n');
    try {
        await db.disconnect();
    } catch {
        // nothing left to report
    }
    process.exit(0); // s3db.js may keep timers or sockets alive
}

main().catch((err) => fatal(err?.stack ?? String(err)));
