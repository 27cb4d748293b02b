// sender.js: turns the events of finished writes into acknowledged host requests, in order.
//
// Events queue in the order s3db.js finished the writes. One batch is in flight at a time
// (so the host assigns sequences in that same order, which keeps per-key order); whatever
// queued meanwhile, or within `batchWindowMs`, goes in the next request. When the host cannot
// be reached, `reject` fails the writes of that batch, `spool` appends them to the spool and
// from then on every event goes behind them until a background loop has sent the spool.

import { ForwardError, HostClient } from './client.js';
import { Spool } from './spool.js';

const MAX_EVENTS = 1000;
const MAX_BYTES = 4 * 1024 * 1024; // the host's default limit is 16 MiB

export class Sender {
  /**
   * @param {{url: string, token?: string, timeout: number, batchWindowMs: number,
   *          onUnavailable: 'reject'|'spool', spoolDir?: string, onState?: (s: string) => void}} opts
   */
  constructor(opts) {
    this.opts = opts;
    this.client = new HostClient(opts);
    this.spool = opts.onUnavailable === 'spool' ? new Spool(opts.spoolDir) : null;
    this.queue = []; // {line, resolve, reject}
    this.busy = false;
    this.spooling = false;
    this.draining = null;
    this.closed = false;
    this.forwarded = 0;
    this.lastError = null;
    this.lastErrorAt = null;
  }

  async open() {
    if (!this.spool) return;
    await this.spool.open();
    if (this.spool.unsent > 0) this.#startSpooling(); // left by an earlier process
  }

  /**
   * Resolves once the host acknowledged the event (or, with `spool`, once it is fsynced in
   * the spool because the host is unreachable).
   * @param {object} event
   * @returns {Promise<void>}
   */
  submit(event) {
    if (this.closed) return Promise.reject(new Error('ReplicatorForwarderPlugin is stopped'));
    const line = JSON.stringify(event, (_k, v) => (typeof v === 'bigint' ? v.toString() : v));
    return new Promise((resolve, reject) => {
      this.queue.push({ line, resolve, reject });
      if (!this.busy) {
        this.busy = true;
        const w = this.opts.batchWindowMs;
        if (w > 0) setTimeout(() => this.#pump(), w);
        else setImmediate(() => this.#pump());
      }
    });
  }

  #take() {
    const batch = [];
    let bytes = 2;
    while (this.queue.length && batch.length < MAX_EVENTS) {
      const n = Buffer.byteLength(this.queue[0].line) + 1;
      if (batch.length && bytes + n > MAX_BYTES) break;
      bytes += n;
      batch.push(this.queue.shift());
    }
    return batch;
  }

  async #pump() {
    while (this.queue.length) {
      const batch = this.#take();
      try {
        await this.#deliver(batch);
        for (const b of batch) b.resolve();
      } catch (err) {
        for (const b of batch) b.reject(err);
      }
    }
    this.busy = false;
  }

  async #deliver(batch) {
    const lines = batch.map((b) => b.line);
    if (this.spooling && (await this.spool.append(lines, () => this.spooling))) return;
    try {
      await this.client.post(`[${lines.join(',')}]`, lines.length, Date.now() + this.opts.timeout, (e) => this.#note(e));
      this.forwarded += lines.length;
      return;
    } catch (err) {
      this.#note(err);
      // Only unavailability spools: a refused token or event would stay refused.
      if (!this.spool || err.code !== 'HOST_UNAVAILABLE') throw err;
    }
    // Append before the drain loop starts, so it cannot find the spool empty and leave.
    this.spooling = true;
    await this.spool.append(lines, () => true);
    this.#startSpooling();
  }

  #note(err) {
    this.lastError = err.message;
    this.lastErrorAt = new Date().toISOString();
  }

  #startSpooling() {
    this.spooling = true;
    this.opts.onState?.('spooling');
    this.draining ??= this.#drain().finally(() => {
      this.draining = null;
    });
  }

  /** Sends the spool in order until it is empty (then direct sends resume) or close(). */
  async #drain() {
    while (!this.closed) {
      try {
        const { lines, end } = await this.spool.next(MAX_EVENTS, MAX_BYTES);
        if (lines.length === 0) {
          if (await this.spool.resetIfDrained(() => (this.spooling = false))) {
            this.opts.onState?.('direct');
            return;
          }
          continue;
        }
        await this.client.post(`[${lines.join(',')}]`, lines.length, Date.now() + 10_000, (e) => this.#note(e), true);
        if (this.closed) return; // acknowledged but not recorded: sent again next time
        await this.spool.ack(end, lines.length);
        this.forwarded += lines.length;
      } catch (err) {
        if (this.closed) return;
        // Unreachable, refused (e.g. the token) or a disk error: keep the events, try again.
        this.#note(err);
        if (!err.retriable) await new Promise((r) => setTimeout(r, 2_000).unref());
      }
    }
  }

  status() {
    return {
      state: this.closed ? 'stopped' : this.spooling ? 'spooling' : 'direct',
      pending: this.queue.length,
      spooled: this.spool ? this.spool.unsent : 0,
      spoolBytes: this.spool ? this.spool.size - this.spool.acked : 0,
      forwarded: this.forwarded,
      requests: this.client.requests,
      lastError: this.lastError,
      lastErrorAt: this.lastErrorAt,
    };
  }

  /** Waits for queued writes; stops the background loop (the spool stays on disk). */
  async close() {
    while (this.busy) await new Promise((r) => setTimeout(r, 5));
    this.closed = true;
    await this.spool?.close();
  }
}

export { ForwardError };
