// HTTP for drivers, on wasi:http/outgoing-handler itself: synchronous (the call waits on the
// request's pollable), and through the host's allow-list like every request of a driver.
//
//   import { httpRequest, HttpError } from './sdk/http.js';
//   const r = httpRequest('POST', url, { headers: { authorization: 'Bearer t' }, body: text });
//   r.status, r.header('retry-after'), r.text(), r.json()
//
// Needs the world `http-driver` of ./wasi-http (see its world.wit; a component of another world
// must not import this file). Why not componentize-js's `fetch`: in the replicator (wasmtime),
// a `fetch` with a body whose connection fails traps the instance most of the time
// ("event loop error, but no exception is pending"), where a driver must answer `retryable`.

import { handle } from 'wasi:http/outgoing-handler@0.2.12';
import { Fields, OutgoingBody, OutgoingRequest, RequestOptions } from 'wasi:http/types@0.2.12';

const encoder = new TextEncoder();
const decoder = new TextDecoder();
// How componentize-js's bindings name a resource's drop.
const dispose = Symbol.dispose || Symbol.for('dispose');
const METHODS = new Set(['get', 'head', 'post', 'put', 'delete', 'connect', 'options', 'trace', 'patch']);
const URL_PARTS = /^(https?):\/\/([^/?#\s]+)([^#\s]*)/i;

/** No answer: DNS, connection, timeout, or a host outside the sandbox's allow-list. */
export class HttpError extends Error {}

/** A wasi:http error-code (or header-error) -> "connection-refused", with its payload if any. */
export const errorText = (code) =>
  code === undefined || code === null
    ? 'unknown error'
    : code.val === undefined
      ? String(code.tag)
      : `${code.tag}: ${JSON.stringify(code.val, (_, v) => (typeof v === 'bigint' ? String(v) : v))}`;

export class HttpResponse {
  constructor(status, headers, body) {
    /** The status code. */
    this.status = status;
    /** [lowercase name, Uint8Array value] pairs, as received. */
    this.headers = headers;
    /** The body's bytes. */
    this.body = body;
  }
  /** The first value of a header, as text (undefined when absent). */
  header(name) {
    const lower = name.toLowerCase();
    const found = this.headers.find(([k]) => k.toLowerCase() === lower);
    return found && decoder.decode(found[1]);
  }
  text() {
    return decoder.decode(this.body);
  }
  json() {
    return JSON.parse(this.text());
  }
}

/**
 * Sends one request and waits for the whole answer. `headers`: an object of strings; `body`: a
 * string (sent as UTF-8) or a Uint8Array; `timeoutMs`: for connecting, the first byte and
 * between bytes. Throws HttpError when there is no answer, TypeError for a URL or header the
 * request cannot carry.
 */
export function httpRequest(method, url, { headers = {}, body, timeoutMs } = {}) {
  const parts = URL_PARTS.exec(url);
  if (!parts) throw new TypeError(`not an http(s) URL: ${url}`);
  const [, scheme, authority, rest] = parts;
  const bytes = body === undefined ? undefined : typeof body === 'string' ? encoder.encode(body) : body;
  const entries = Object.entries(headers).map(([k, v]) => [k.toLowerCase(), encoder.encode(String(v))]);
  if (bytes && !entries.some(([k]) => k === 'content-length')) {
    entries.push(['content-length', encoder.encode(String(bytes.length))]); // rather than chunked
  }
  let fields;
  try {
    fields = Fields.fromList(entries);
  } catch (e) {
    throw new TypeError(`headers refused: ${errorText(e.payload)}`);
  }
  const request = new OutgoingRequest(fields);
  const lower = method.toLowerCase();
  request.setMethod(METHODS.has(lower) ? { tag: lower } : { tag: 'other', val: method });
  request.setScheme({ tag: scheme.toLowerCase() === 'https' ? 'HTTPS' : 'HTTP' });
  request.setAuthority(authority);
  request.setPathWithQuery(rest.startsWith('/') ? rest : `/${rest}`);
  let options;
  if (timeoutMs !== undefined) {
    options = new RequestOptions();
    const ns = BigInt(Math.max(0, Math.round(timeoutMs))) * 1000000n;
    options.setConnectTimeout(ns);
    options.setFirstByteTimeout(ns);
    options.setBetweenBytesTimeout(ns);
  }
  const outgoing = request.body();
  let future;
  try {
    future = handle(request, options);
  } catch (e) {
    throw new HttpError(`${method} ${url}: ${errorText(e.payload)}`);
  }
  try {
    if (bytes && bytes.length) {
      const sink = outgoing.write();
      try {
        // blocking-write-and-flush takes at most 4096 bytes per call.
        for (let i = 0; i < bytes.length; i += 4096) sink.blockingWriteAndFlush(bytes.subarray(i, i + 4096));
      } finally {
        sink[dispose]();
      }
    }
    OutgoingBody.finish(outgoing, undefined);
  } catch {
    // The request failed (its stream closed): the future says why.
  }
  const ready = future.subscribe();
  ready.block();
  ready[dispose]();
  const answer = future.get(); // option<result<result<incoming-response, error-code>>>
  future[dispose]();
  if (answer === undefined || answer.tag === 'err') throw new HttpError(`${method} ${url}: no response`);
  if (answer.val.tag === 'err') throw new HttpError(`${method} ${url}: ${errorText(answer.val.val)}`);
  const response = answer.val.val;
  const status = response.status();
  const head = response.headers();
  const responseHeaders = head.entries();
  head[dispose]();
  const incoming = response.consume();
  const source = incoming.stream();
  const chunks = [];
  let size = 0;
  try {
    for (;;) {
      let chunk;
      try {
        chunk = source.blockingRead(65536n);
      } catch (e) {
        if (e.payload && e.payload.tag === 'closed') break;
        throw new HttpError(`${method} ${url}: the answer broke off`);
      }
      chunks.push(chunk);
      size += chunk.length;
    }
  } finally {
    source[dispose]();
    incoming[dispose]();
    response[dispose]();
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const c of chunks) {
    all.set(c, at);
    at += c.length;
  }
  return new HttpResponse(status, responseHeaders, all);
}
