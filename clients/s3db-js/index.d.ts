// Types of @replicator/s3db-forwarder (hand-written; the package has no build step).

import { EventEmitter } from 'node:events';

export interface ReplicatorForwarderOptions {
  /** The host's HTTP address, e.g. `http://127.0.0.1:7700` (or its `/v1/events` URL). */
  url: string;
  /** Bearer token: the host's `server.token`. */
  token?: string;
  /** Resources to forward; default every resource except plugin resources (`plg_*`). */
  resources?: string[];
  /** The envelope's `source`; default `"s3db.js"`. */
  source?: string;
  /** How long a write waits for the host's acknowledgement, retries included (ms); default 5000. */
  timeout?: number;
  /** How long the first queued event waits for others to share its request (ms); default 0. */
  batchWindowMs?: number;
  /**
   * When the host cannot be reached within `timeout`: `reject` (default) rejects the write with a
   * {@link ForwardError}; `spool` appends the event to the spool in `spoolDir` (fsynced) and resolves.
   */
  onUnavailable?: 'reject' | 'spool';
  /** Directory of the spool; required with `onUnavailable: 'spool'`. One process per directory. */
  spoolDir?: string;
}

export interface ForwarderStatus {
  /** `direct`: events go straight to the host; `spooling`: they go to the spool until it is sent. */
  state: 'direct' | 'spooling' | 'stopped';
  /** Events of finished writes waiting for their request. */
  pending: number;
  /** Events in the spool the host has not acknowledged yet. */
  spooled: number;
  /** Bytes of those events. */
  spoolBytes: number;
  /** Events the host acknowledged since the plugin started. */
  forwarded: number;
  /** HTTP requests made (attempts included). */
  requests: number;
  lastError: string | null;
  lastErrorAt: string | null;
}

/** Why an event was not forwarded; the S3 write it belongs to is not undone. */
export class ForwardError extends Error {
  /** `HOST_UNAVAILABLE` (no answer, timeout, 5xx), `UNAUTHORIZED` (401/403), `REFUSED` (other 4xx). */
  code: 'HOST_UNAVAILABLE' | 'UNAUTHORIZED' | 'REFUSED';
  statusCode: number;
  retriable: boolean;
}

/** s3db.js plugin: `await db.usePlugin(new ReplicatorForwarderPlugin({ url, token }))` or `plugins: [...]`. */
export class ReplicatorForwarderPlugin extends EventEmitter {
  constructor(options: ReplicatorForwarderOptions);
  readonly name: 'ReplicatorForwarderPlugin';
  /** Called by s3db.js. */
  install(database: unknown): Promise<void>;
  start(): Promise<void>;
  /** Waits for writes in flight and closes the spool (called by `db.disconnect()` for `plugins: [...]`). */
  stop(): Promise<void>;
  status(): ForwarderStatus;
  /** `state` is emitted with `'spooling'` or `'direct'` when forwarding switches. */
  on(event: 'state', listener: (state: 'spooling' | 'direct') => void): this;
}
