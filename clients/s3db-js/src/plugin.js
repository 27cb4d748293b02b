// plugin.js: ReplicatorForwarderPlugin, the s3db.js plugin that hands every write to the
// replication host and lets the write resolve only once the host has it durably.
//
// It uses s3db.js's awaited resource hooks (afterInsert, afterUpdate, afterDelete,
// afterReplace, afterPatch), which every write path runs after S3 answered, never its
// `inserted`/`updated`/`deleted` events (not awaited, and replace() and copy-based patch()
// emit none). Each public write method is wrapped so that its hooks share a context: it
// gives update events the record s3db.js read before changing it, keeps patch() from being
// sent twice, and makes insertMany()/deleteMany() reject when an item was not forwarded
// (s3db.js itself only drops failed items from their result).

import { AsyncLocalStorage } from 'node:async_hooks';
import { EventEmitter } from 'node:events';
import { ForwardError } from './client.js';
import { Sender } from './sender.js';

const OPTIONS = ['url', 'token', 'resources', 'source', 'timeout', 'batchWindowMs', 'onUnavailable', 'spoolDir'];
const WRITE_METHODS = ['insert', 'insertMany', 'update', 'patch', 'replace', 'upsert', 'delete', 'deleteMany', 'updateConditional'];
const MANY = new Set(['insertMany', 'deleteMany']);

/** The context of one public write call: what its hooks saw. */
const als = new AsyncLocalStorage();

function fail(msg) {
  throw new TypeError(`ReplicatorForwarderPlugin: ${msg}`);
}

/** @param {Record<string, unknown>} o */
function validate(o) {
  if (o === null || typeof o !== 'object') fail('options must be an object, e.g. { url, token }');
  const unknown = Object.keys(o).filter((k) => !OPTIONS.includes(k));
  if (unknown.length) fail(`unknown option ${unknown.map((k) => `\`${k}\``).join(', ')} (known: ${OPTIONS.join(', ')})`);
  if (typeof o.url !== 'string' || !o.url) fail('`url` is required: the host\'s HTTP address, e.g. http://127.0.0.1:7700');
  let u;
  try {
    u = new URL(o.url);
  } catch {
    fail('`url` is not a URL; expected the host\'s HTTP address, e.g. http://127.0.0.1:7700');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') fail(`\`url\` must be http or https, not ${u.protocol.replace(':', '')}`);
  if (o.token !== undefined && (typeof o.token !== 'string' || !o.token)) fail('`token` must be a non-empty string when given');
  if (o.resources !== undefined && !(Array.isArray(o.resources) && o.resources.every((r) => typeof r === 'string' && r))) {
    fail('`resources` must be an array of resource names');
  }
  if (o.source !== undefined && (typeof o.source !== 'string' || !o.source)) fail('`source` must be a non-empty string');
  for (const k of ['timeout', 'batchWindowMs']) {
    const v = o[k];
    if (v !== undefined && !(typeof v === 'number' && Number.isFinite(v) && v >= (k === 'timeout' ? 1 : 0))) {
      fail(`\`${k}\` must be a number of milliseconds${k === 'timeout' ? ' (at least 1)' : ''}, got ${JSON.stringify(v)}`);
    }
  }
  if (o.onUnavailable !== undefined && o.onUnavailable !== 'reject' && o.onUnavailable !== 'spool') {
    fail(`\`onUnavailable\` must be 'reject' or 'spool', got ${JSON.stringify(o.onUnavailable)}`);
  }
  if (o.onUnavailable === 'spool' && (typeof o.spoolDir !== 'string' || !o.spoolDir)) {
    fail("`onUnavailable: 'spool'` needs `spoolDir`, a directory for the spool");
  }
  if (o.spoolDir !== undefined && o.onUnavailable !== 'spool') fail("`spoolDir` is only used with `onUnavailable: 'spool'`");
}

/** A JSON copy of a record without s3db.js's internal `_*` and `$*` keys. */
function clean(record) {
  if (!record || typeof record !== 'object') return undefined;
  const out = {};
  for (const [k, v] of Object.entries(record)) if (k[0] !== '_' && k[0] !== '$' && v !== undefined) out[k] = v;
  return JSON.parse(JSON.stringify(out, (_k, v) => (typeof v === 'bigint' ? v.toString() : v)));
}

export class ReplicatorForwarderPlugin extends EventEmitter {
  /** @param {import('../index.js').ReplicatorForwarderOptions} options */
  constructor(options) {
    super();
    validate(options);
    this.name = 'ReplicatorForwarderPlugin';
    this.options = {
      source: 's3db.js',
      timeout: 5000,
      batchWindowMs: 0,
      onUnavailable: 'reject',
      ...options,
    };
    this.sender = new Sender({ ...this.options, onState: (s) => this.emit('state', s) });
    this.database = null;
    this.attached = new WeakSet();
    this.opened = null;
  }

  /** Called by s3db.js (`usePlugin`, or `plugins: [...]` at connect). */
  async install(database) {
    this.database = database;
    this.opened ??= this.sender.open();
    await this.opened;
    for (const r of Object.values(database.resources ?? {})) this.#attach(r);
    database.addHook('afterCreateResource', ({ resource }) => this.#attach(resource));
    // Resources defined in s3db.json are built by connect() after plugins were installed.
    database.on('db:connected', () => {
      for (const r of Object.values(database.resources ?? {})) this.#attach(r);
    });
  }

  async start() {}

  /** Waits for writes in flight; the spool, if any, stays on disk for the next start. */
  async stop() {
    await this.sender.close();
  }

  /**
   * Where forwarding stands: `state` (`direct`, `spooling`, `stopped`), `pending` (events
   * waiting for a request), `spooled` and `spoolBytes` (in the spool, not yet acknowledged),
   * `forwarded`, `requests`, `lastError`, `lastErrorAt`.
   */
  status() {
    return this.sender.status();
  }

  #wanted(name) {
    const list = this.options.resources;
    return list ? list.includes(name) : !name.startsWith('plg_');
  }

  #attach(resource) {
    if (!resource || this.attached.has(resource) || !this.#wanted(resource.name)) return;
    this.attached.add(resource);
    const name = resource.name;
    for (const method of WRITE_METHODS) {
      const original = resource[method];
      if (typeof original !== 'function') continue;
      resource[method] = async function (...args) {
        const ctx = { op: method, before: new Map(), sent: new Set(), errors: [] };
        const result = await als.run(ctx, () => original.apply(this, args));
        if (MANY.has(method) && ctx.errors.length) {
          const e = ctx.errors[0];
          throw new ForwardError(
            `${method}: ${ctx.errors.length} of ${args[0]?.length ?? '?'} records were written to S3 but not forwarded (first: ${e.message})`,
            { code: e.code, statusCode: e.statusCode, retriable: e.retriable, cause: e },
          );
        }
        return result;
      };
    }
    // update() reads the record first (get), so its afterGet hook sees the before-image.
    resource.addHook('afterGet', (data) => {
      const ctx = als.getStore();
      if (ctx && data?.id != null && !ctx.before.has(String(data.id))) ctx.before.set(String(data.id), clean(data));
      return data;
    });
    resource.addHook('afterInsert', (data) => this.#forward(name, 'insert', data, undefined));
    resource.addHook('afterUpdate', (data) => this.#forward(name, 'update', data, als.getStore()?.before.get(String(data?.id))));
    resource.addHook('afterReplace', (data) => this.#forward(name, 'update', data, undefined));
    // patch() on enforce-limits/truncate-data copies the object and runs no afterUpdate.
    resource.addHook('afterPatch', (data) =>
      als.getStore()?.sent.has(String(data?.id)) ? data : this.#forward(name, 'update', data, undefined),
    );
    resource.addHook('afterDelete', (data) => this.#forward(name, 'delete', data, data));
  }

  async #forward(resource, action, record, before) {
    const ctx = als.getStore();
    const data = clean(record);
    const id = data?.id;
    const event = { resource, action, id: id == null ? id : String(id) };
    if (action === 'delete') {
      // Without more than the id, s3db.js did not have the record (its GET failed).
      if (data && Object.keys(data).length > 1) {
        event.data = data;
        event.before = data;
      }
    } else {
      event.data = data;
      if (before) event.before = before;
    }
    event.timestamp = new Date().toISOString();
    event.source = this.options.source;
    event.metadata = { operation: ctx?.op ?? action };
    try {
      await this.sender.submit(event);
    } catch (err) {
      const e = new ForwardError(
        `s3db.js wrote ${resource}/${event.id} (${action}) to S3, but it was not forwarded to the replication host: ${err.message}. ` +
          (err.code === 'HOST_UNAVAILABLE'
            ? "The write is not undone; replicate it with `replicator backfill`, by writing it again, or use onUnavailable: 'spool'."
            : 'The write is not undone; fix the cause, then replicate it with `replicator backfill` or by writing it again.'),
        { code: err.code ?? 'REFUSED', statusCode: err.statusCode, retriable: err.retriable ?? false, cause: err },
      );
      ctx?.errors.push(e);
      throw e;
    }
    ctx?.sent.add(String(id));
    return record;
  }
}
