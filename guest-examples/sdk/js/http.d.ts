// Types of http.js: synchronous HTTP for drivers over wasi:http (world `http-driver` of wasi-http/).

/** No answer: DNS, connection, timeout, or a host outside the sandbox's allow-list. */
export class HttpError extends Error {}

export class HttpResponse {
  readonly status: number;
  /** [lowercase name, value] pairs, as received. */
  readonly headers: [string, Uint8Array][];
  readonly body: Uint8Array;
  /** The first value of a header, as text. */
  header(name: string): string | undefined;
  text(): string;
  json(): any;
}

export interface RequestInit {
  headers?: Record<string, string>;
  /** A string is sent as UTF-8. */
  body?: string | Uint8Array;
  /** For connecting, the first byte and between bytes. */
  timeoutMs?: number;
}

/** Sends one request and waits for the whole answer; throws HttpError when there is none. */
export function httpRequest(method: string, url: string, init?: RequestInit): HttpResponse;

/** A wasi:http error-code variant as text ("connection-refused"). */
export function errorText(code: { tag: string; val?: unknown } | undefined): string;
