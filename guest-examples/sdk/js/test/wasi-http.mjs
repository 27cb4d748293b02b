// Stands in for wasi:http (types and outgoing-handler @0.2.12) when http.js runs in plain Node:
// a scripted server. `answer(request)` returns what the request gets: { status, headers, body }
// or { error: { tag } } (no answer); `refuse` makes `handle` itself fail. Values are shaped as
// componentize-js's bindings give them (results thrown with `payload`, variants {tag, val}).
const dispose = Symbol.dispose || Symbol.for('dispose');
const fail = (payload) => Object.assign(new Error(payload.tag), { payload });

export const server = { answer: () => ({ status: 200, headers: [], body: '' }), refuse: undefined, requests: [], dropped: 0 };

class Resource {
  [dispose]() {
    server.dropped++;
  }
}

export class Fields extends Resource {
  static fromList(entries) {
    for (const [name, value] of entries) {
      if (!/^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/.test(name)) throw fail({ tag: 'invalid-syntax' });
      if (!(value instanceof Uint8Array)) throw new TypeError('header values are Uint8Array');
    }
    return Object.assign(new Fields(), { list: entries });
  }
  entries() {
    return this.list;
  }
}

export class RequestOptions extends Resource {
  setConnectTimeout(ns) {
    this.connect = ns;
  }
  setFirstByteTimeout(ns) {
    this.firstByte = ns;
  }
  setBetweenBytesTimeout(ns) {
    this.betweenBytes = ns;
  }
}

class Sink extends Resource {
  constructor(request) {
    super();
    this.request = request;
  }
  blockingWriteAndFlush(chunk) {
    if (chunk.length > 4096) throw new Error('more than 4096 bytes in one write');
    if (this.request.closed) throw fail({ tag: 'closed' });
    this.request.chunks.push(chunk);
  }
}

export class OutgoingBody extends Resource {
  constructor(request) {
    super();
    this.request = request;
  }
  write() {
    return new Sink(this.request);
  }
  static finish(body) {
    body.request.finished = true;
  }
}

export class OutgoingRequest extends Resource {
  constructor(fields) {
    super();
    Object.assign(this, { headers: fields.list, chunks: [], finished: false });
  }
  setMethod(m) {
    this.method = m;
  }
  setScheme(s) {
    this.scheme = s;
  }
  setAuthority(a) {
    this.authority = a;
  }
  setPathWithQuery(p) {
    this.path = p;
  }
  body() {
    return new OutgoingBody(this);
  }
}

class InputStream extends Resource {
  constructor(bytes) {
    super();
    this.rest = bytes;
  }
  blockingRead(len) {
    if (typeof len !== 'bigint') throw new TypeError('u64 is a BigInt');
    if (this.rest.length === 0) throw fail({ tag: 'closed' });
    const chunk = this.rest.subarray(0, Math.min(Number(len), 3));
    this.rest = this.rest.subarray(chunk.length);
    return chunk;
  }
}

class IncomingResponse extends Resource {
  constructor(a) {
    super();
    this.a = a;
  }
  status() {
    return this.a.status;
  }
  headers() {
    return Fields.fromList(this.a.headers.map(([k, v]) => [k, new TextEncoder().encode(v)]));
  }
  consume() {
    const bytes = new TextEncoder().encode(this.a.body);
    return Object.assign(new Resource(), { stream: () => new InputStream(bytes) });
  }
}

export function handle(request, options) {
  if (server.refuse) throw fail(server.refuse);
  const a = server.answer(request);
  // A request that gets no answer has its body stream closed, as wasmtime does.
  request.closed = a.error !== undefined;
  server.requests.push(Object.assign(request, { options }));
  return Object.assign(new Resource(), {
    subscribe: () => Object.assign(new Resource(), { block() {} }),
    get: () => ({ tag: 'ok', val: a.error ? { tag: 'err', val: a.error } : { tag: 'ok', val: new IncomingResponse(a) } }),
  });
}
