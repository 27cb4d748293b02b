// client.js: posts batches of events to the replication host's `POST /v1/events`.
//
// One call = one request body (a JSON array), retried on transient failures (no answer,
// timeouts, 5xx, 429, 503 with Retry-After) until a deadline; answers that retrying cannot
// change (401, 400, 413...) fail at once. The token is sent as a bearer header and never put
// into an error message.

/** Why a batch was not acknowledged. */
export class ForwardError extends Error {
  /**
   * @param {string} message
   * @param {{code: 'HOST_UNAVAILABLE'|'UNAUTHORIZED'|'REFUSED', statusCode?: number, retriable: boolean, cause?: unknown}} info
   */
  constructor(message, { code, statusCode, retriable, cause }) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'ForwardError';
    this.code = code;
    // s3db.js passes errors that carry `statusCode`/`retriable` through unchanged (upsert).
    this.statusCode = statusCode ?? 503;
    this.retriable = retriable;
  }
}

// A background retry must not keep the process alive; a write's retry must (its caller waits).
const sleep = (ms, background) =>
  new Promise((r) => {
    const t = setTimeout(r, ms);
    if (background) t.unref();
  });

/** The URL without user:password, for messages. */
export function displayUrl(url) {
  const u = new URL(url);
  u.username = '';
  u.password = '';
  return u.toString();
}

export class HostClient {
  /**
   * @param {{url: string, token?: string}} opts `url` is the host's base URL or its /v1/events URL.
   */
  constructor({ url, token }) {
    const u = new URL(url);
    if (!u.pathname.replace(/\/+$/, '').endsWith('/v1/events')) {
      u.pathname = u.pathname.replace(/\/+$/, '') + '/v1/events';
    }
    this.endpoint = u.toString();
    this.shown = displayUrl(this.endpoint);
    this.headers = { 'content-type': 'application/json' };
    if (token) this.headers.authorization = `Bearer ${token}`;
    this.requests = 0;
  }

  /**
   * Posts `body` (a JSON array of `count` events) until the host answers 202 or `deadline`
   * (epoch ms; Infinity = retry forever) passes. Resolves to the assigned sequences.
   * @param {string} body
   * @param {number} count
   * @param {number} deadline
   * @param {(err: ForwardError) => void} [onRetry] told about each failed attempt
   * @param {boolean} [background] retries do not keep the process alive
   * @returns {Promise<number[]>}
   */
  async post(body, count, deadline, onRetry, background = false) {
    let delay = 50;
    for (;;) {
      const left = deadline - Date.now();
      let err;
      try {
        return await this.#attempt(body, count, Math.min(left, 30_000));
      } catch (e) {
        if (!(e instanceof ForwardError) || !e.retriable) throw e;
        err = e;
      }
      onRetry?.(err);
      const wait = Math.min(err.retryAfterMs ?? delay, 5_000);
      if (Date.now() + wait >= deadline) throw err;
      await sleep(wait, background);
      delay = Math.min(delay * 2, 2_000);
    }
  }

  async #attempt(body, count, timeoutMs) {
    this.requests++;
    let res;
    try {
      res = await fetch(this.endpoint, {
        method: 'POST',
        headers: this.headers,
        body,
        signal: AbortSignal.timeout(Math.max(1, timeoutMs)),
      });
    } catch (e) {
      const why = e?.name === 'TimeoutError' ? `no answer within ${timeoutMs} ms` : (e?.cause?.message ?? e?.message ?? String(e));
      throw new ForwardError(`cannot reach the replication host at ${this.shown}: ${why}`, {
        code: 'HOST_UNAVAILABLE', retriable: true, cause: e,
      });
    }
    const text = await res.text().catch(() => '');
    if (res.status === 202) {
      const out = JSON.parse(text);
      if (out.accepted !== count) {
        throw new ForwardError(`the replication host at ${this.shown} accepted ${out.accepted} of ${count} events`, {
          code: 'REFUSED', statusCode: 502, retriable: false,
        });
      }
      return out.sequences;
    }
    let detail = text;
    try {
      detail = JSON.parse(text).error ?? text;
    } catch {
      // not JSON: keep the text
    }
    detail = String(detail).slice(0, 500);
    if (res.status === 401 || res.status === 403) {
      throw new ForwardError(
        `the replication host at ${this.shown} refused the token (${res.status}): set the plugin's \`token\` to the host's server.token`,
        { code: 'UNAUTHORIZED', statusCode: res.status, retriable: false },
      );
    }
    if (res.status === 429 || res.status >= 500) {
      const e = new ForwardError(`the replication host at ${this.shown} answered ${res.status}: ${detail}`, {
        code: 'HOST_UNAVAILABLE', statusCode: res.status, retriable: true,
      });
      const ra = Number(res.headers.get('retry-after'));
      if (Number.isFinite(ra) && ra >= 0) e.retryAfterMs = ra * 1000;
      throw e;
    }
    throw new ForwardError(`the replication host at ${this.shown} refused the events (${res.status}): ${detail}`, {
      code: 'REFUSED', statusCode: res.status, retriable: false,
    });
  }
}
