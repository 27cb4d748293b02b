// spool.js: the local append-only spool of events the host could not take yet.
//
// `events.ndjson` holds one serialized event per line, in the order the writes finished;
// `acked` holds how many bytes of it the host has acknowledged. Appends are fsynced before
// they return, so a write the application saw resolve survives kill -9. When everything is
// acknowledged the file is truncated. A `lock` file (with the owner's pid) keeps two
// processes from sharing one spool.

import { mkdir, open, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export class Spool {
  /** @param {string} dir */
  constructor(dir) {
    this.dir = dir;
    this.file = join(dir, 'events.ndjson');
    this.ackFile = join(dir, 'acked');
    this.lockFile = join(dir, 'lock');
    this.size = 0; // bytes in events.ndjson
    this.acked = 0; // bytes acknowledged by the host
    this.unsent = 0; // events after `acked`
    this.fh = null;
    this.queue = Promise.resolve(); // serializes appends, acks and truncation
  }

  /** Opens (creating) the spool; drops a torn last line left by a crash mid-append. */
  async open() {
    await mkdir(this.dir, { recursive: true });
    await this.#lock();
    this.fh = await open(this.file, 'a+');
    const data = await readFile(this.file);
    let end = data.lastIndexOf(0x0a) + 1; // a line without its newline was never fsynced whole
    if (end !== data.length) await this.fh.truncate(end);
    this.size = end;
    this.acked = 0;
    try {
      this.acked = Math.min(Number((await readFile(this.ackFile, 'utf8')).trim()) || 0, end);
    } catch (e) {
      if (e.code !== 'ENOENT') throw e;
    }
    this.unsent = 0;
    for (let i = this.acked; i < end; i++) if (data[i] === 0x0a) this.unsent++;
  }

  async #lock() {
    for (let tries = 0; ; tries++) {
      try {
        await writeFile(this.lockFile, String(process.pid), { flag: 'wx' });
        return;
      } catch (e) {
        if (e.code !== 'EEXIST' || tries > 0) throw e;
      }
      const pid = Number(await readFile(this.lockFile, 'utf8').catch(() => ''));
      let alive = false;
      try {
        alive = pid > 0 && pid !== process.pid && process.kill(pid, 0);
      } catch (e) {
        alive = e.code === 'EPERM';
      }
      if (alive) throw new Error(`spoolDir ${this.dir} is in use by process ${pid}`);
      await unlink(this.lockFile).catch(() => {}); // left by a process that died
    }
  }

  /** Runs `fn` after every earlier spool operation. */
  #serial(fn) {
    const p = this.queue.then(fn);
    this.queue = p.catch(() => {});
    return p;
  }

  /**
   * Appends serialized events (one JSON text each) and fsyncs, if `stillSpooling()` says so
   * once it is this call's turn (the sender may have left spooling meanwhile). Resolves true
   * if appended.
   * @param {string[]} lines
   * @param {() => boolean} stillSpooling
   */
  append(lines, stillSpooling) {
    return this.#serial(async () => {
      if (!stillSpooling()) return false;
      const buf = Buffer.from(lines.join('\n') + '\n');
      await this.fh.write(buf, 0, buf.length, null);
      await this.fh.sync();
      this.size += buf.length;
      this.unsent += lines.length;
      return true;
    });
  }

  /**
   * The next unacknowledged events, at most `max` of them and about `maxBytes`.
   * @returns {Promise<{lines: string[], end: number}>} `end`: the offset to ack once sent.
   */
  async next(max, maxBytes) {
    const lines = [];
    let pos = this.acked;
    let want = Math.min(maxBytes, this.size - pos);
    while (lines.length < max && pos < this.size) {
      const buf = Buffer.alloc(want);
      const { bytesRead } = await this.fh.read(buf, 0, want, pos);
      const nl = buf.subarray(0, bytesRead).lastIndexOf(0x0a);
      if (nl < 0) {
        if (lines.length) break;
        want = Math.min(want * 2, this.size - pos); // one event larger than maxBytes
        continue;
      }
      for (const l of buf.subarray(0, nl).toString('utf8').split('\n')) {
        if (lines.length === max) break;
        lines.push(l);
        pos += Buffer.byteLength(l) + 1;
      }
      break;
    }
    return { lines, end: pos };
  }

  /** Records that the host acknowledged everything before `end` (`count` events). */
  ack(end, count) {
    return this.#serial(async () => {
      const tmp = this.ackFile + '.tmp';
      const fh = await open(tmp, 'w');
      await fh.writeFile(String(end));
      await fh.sync();
      await fh.close();
      await rename(tmp, this.ackFile);
      this.acked = end;
      this.unsent -= count;
    });
  }

  /**
   * If every event is acknowledged: truncates the spool and calls `then()` in the same turn,
   * so no append can slip in between. Resolves true if it did.
   * @param {() => void} then
   */
  resetIfDrained(then) {
    return this.#serial(async () => {
      if (this.unsent > 0) return false;
      await this.fh.truncate(0);
      await this.fh.sync();
      await writeFile(this.ackFile, '0');
      this.size = 0;
      this.acked = 0;
      then();
      return true;
    });
  }

  async close() {
    await this.queue;
    await this.fh?.close();
    this.fh = null;
    await unlink(this.lockFile).catch(() => {});
  }
}
