// Types of @replicator/plugin (index.js): replicator transforms and drivers in JavaScript.

/** A JSON value as JSON.parse returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

/** UTF-8 JSON bytes -> value; throws SyntaxError on invalid UTF-8 or JSON. */
export function parseJson(bytes: Uint8Array): JsonValue;
/** A JSON value -> UTF-8 JSON bytes; a Uint8Array is returned as it is (JSON bytes already). */
export function jsonBytes(value: unknown): Uint8Array;

// ------------------------------------------------------------------------ log and digest

export interface Log {
  trace(message: unknown): void;
  debug(message: unknown): void;
  info(message: unknown): void;
  warn(message: unknown): void;
  error(message: unknown): void;
}
/** The host's logger. */
export const log: Log;

export type Algorithm = 'sha256' | 'sha384' | 'sha512';
/** Lowercase hex digests computed by the host; strings are hashed as UTF-8. */
export function sha256(data: string | Uint8Array): string;
export function sha384(data: string | Uint8Array): string;
export function sha512(data: string | Uint8Array): string;
/** Lowercase hex HMAC of `data` under `key`. */
export function hmac(algorithm: Algorithm, key: string | Uint8Array, data: string | Uint8Array): string;

// -------------------------------------------------------------------------------- errors

export interface ErrorOptions {
  /** Stable kebab-case code; defaults to the kind (e.g. "invalid-config"). */
  code?: string;
}
/** Base of the errors the SDK maps to the contract's; `code` defaults to the kind. */
export class PluginError extends Error {
  constructor(message: string, options?: ErrorOptions);
  readonly code: string;
  static readonly kind: string;
}
/** This record cannot be handled (transform: failed invalid-record; driver: rejected). */
export class InvalidRecord extends PluginError {}
/** The config given to `init` is unusable: name the key in the message. */
export class InvalidConfig extends PluginError {}
/** Driver: credentials refused (retried with back-off). */
export class Unauthorized extends PluginError {}
/** Driver: transient (network, 5xx, throttling). */
export class Retryable extends PluginError {
  constructor(message: string, options?: ErrorOptions & { retryAfterMs?: number });
  /** The least wait before the next attempt (HTTP Retry-After), in milliseconds. */
  readonly retryAfterMs: number | undefined;
}
/** Driver: permanent for this data (dead-lettered). */
export class Rejected extends PluginError {}
/** Driver: broken; the host closes and replaces the instance. */
export class Fatal extends PluginError {}

// -------------------------------------------------------------------------------- events

export type Action = 'insert' | 'update' | 'delete';

/** An event as componentize-js gives it (the WIT record `event`). */
export interface RawEvent {
  resource: string;
  action: Action;
  id: string;
  data?: Uint8Array;
  before?: Uint8Array;
  timestamp: string;
  source?: string;
  sequence: bigint;
  metadata?: Uint8Array;
}

/** One change of one record; documents parsed on first read (InvalidRecord "invalid-json" if not JSON). */
export class Event {
  constructor(raw: RawEvent);
  readonly raw: RawEvent;
  readonly resource: string;
  readonly action: Action;
  readonly id: string;
  readonly timestamp: string;
  readonly source: string | undefined;
  /** The host's sequence (u64): with resource and id, the idempotency key. */
  readonly sequence: bigint;
  /** The record after the change (the last known record for a delete); undefined when absent. */
  readonly data: any;
  /** The record before an update or delete, when the sender had it. */
  readonly before: any;
  readonly metadata: any;
  readonly dataBytes: Uint8Array | undefined;
  readonly beforeBytes: Uint8Array | undefined;
  readonly metadataBytes: Uint8Array | undefined;
  /** The event for the host; documents that were read are encoded again (they may have changed). */
  toRaw(): RawEvent;
}

/** JSON text of an array of envelopes (absent fields null), documents as JSON values (copied unparsed when not read). */
export function eventsToJson(events: ReadonlyArray<Event | RawEvent>): string;

// ------------------------------------------------------------------------------ outcomes

export interface ErrorInfo {
  code: string;
  message: string;
}
export type TransformError =
  | { tag: 'invalid-record'; val: ErrorInfo }
  | { tag: 'invalid-config'; val: ErrorInfo }
  | { tag: 'other'; val: ErrorInfo };
/** What became of one input record (the WIT variant `outcome`). */
export type Outcome =
  | { tag: 'keep' }
  | { tag: 'skip' }
  | { tag: 'update'; val: { data?: Uint8Array; before?: Uint8Array } }
  | { tag: 'many'; val: RawEvent[] }
  | { tag: 'failed'; val: TransformError };

/** A document: a JSON value, or its UTF-8 JSON bytes. */
export type Document = unknown;

/** An event of `many`: each field left out is the input's; null data/before/source/metadata is none. */
export interface PartialEvent {
  resource?: string;
  action?: Action;
  id?: string;
  data?: Document | null;
  before?: Document | null;
  timestamp?: string;
  source?: string | null;
  sequence?: bigint | number;
  metadata?: Document | null;
}

/** Send the event on as it came. */
export function keep(): Outcome;
/** Drop the event. */
export function skip(): Outcome;
/** Send the event on with these documents; one left out (or null) stays as it came. */
export function update(documents?: { data?: Document | null; before?: Document | null }): Outcome;
/** Send these events instead (zero or more). */
export function many(events: Iterable<PartialEvent | Event>): Outcome;
/** This record failed (invalid-record): dead-lettered, the others go on. */
export function fail(code: string, message: string): Outcome;

// ----------------------------------------------------------------------------- transform

export interface Transform {
  /** Called once before any record with the config ({} when none); throw InvalidConfig to refuse it. */
  init?(config: any): void;
  /** One event -> one outcome. A throw fails this record only. */
  transform?(event: Event): Outcome;
  /**
   * Optional: the whole batch, one outcome per event in order. `each(event)` is the SDK's
   * per-event path (transform, with a throw turned into a failed outcome).
   */
  transformBatch?(events: Event[], each: (event: Event) => Outcome): Outcome[];
}

/** The WIT export `batch-transform` as componentize-js takes it. */
export interface BatchTransformExport {
  /** Throws an Error whose `payload` is a TransformError to refuse the config. */
  init(config: Uint8Array): void;
  transformBatch(events: RawEvent[]): Outcome[];
}
/** `export const batchTransform = defineTransform(t)` in the component's main module. */
export function defineTransform(t: Transform): BatchTransformExport;

// -------------------------------------------------------------------------------- driver

export type HealthStatus = { tag: 'ok' } | { tag: 'degraded'; val: string } | { tag: 'unhealthy'; val: string };
export function ok(): HealthStatus;
export function degraded(message: string): HealthStatus;
export function unhealthy(message: string): HealthStatus;

export interface DriverInfo {
  /** e.g. "acme-search" */
  name: string;
  version?: string;
  /** JSON Schema of the config (a JSON value). */
  configSchema?: JsonValue;
  /** The largest batch `replicate` wants (default 100). */
  maxBatchSize?: number;
  /** True when writing an event twice has no visible effect (default false). */
  idempotent?: boolean;
}

/** One event that was not written: its index in the batch and why. */
export interface Failure {
  index: number;
  error: Error;
}

type MaybePromise<T> = T | Promise<T>;

export interface Driver {
  describe: DriverInfo | (() => DriverInfo);
  /** Check the config (throw InvalidConfig) and open connections. */
  init?(config: any): MaybePromise<void>;
  /** Write a batch; return the events that failed (nothing: all written), or throw for the whole batch. */
  replicate(events: Event[]): MaybePromise<Failure[] | { failed: Failure[] } | void>;
  health?(): MaybePromise<HealthStatus | 'ok' | void>;
  close?(): MaybePromise<void>;
}

export type DriverError =
  | { tag: 'invalid-config'; val: ErrorInfo }
  | { tag: 'unauthorized'; val: ErrorInfo }
  | { tag: 'retryable'; val: { info: ErrorInfo; retryAfterMs?: number } }
  | { tag: 'rejected'; val: ErrorInfo }
  | { tag: 'fatal'; val: ErrorInfo };

/** An exception -> the driver-error variant it stands for (anything not a PluginError: fatal). */
export function driverError(e: unknown): DriverError;

/** The WIT export `driver` as componentize-js takes it (errors thrown with `payload`). */
export interface DriverExport {
  describe(): { name: string; version: string; configSchema?: Uint8Array; maxBatchSize: number; idempotent: boolean };
  init(config: Uint8Array): MaybePromise<void>;
  replicate(events: RawEvent[]): MaybePromise<{ failed: { index: number; error: DriverError }[] }>;
  health(): MaybePromise<HealthStatus>;
  close(): MaybePromise<void>;
}
/** `export const driver = defineDriver(d)` in the component's main module. */
export function defineDriver(d: Driver): DriverExport;
