// {{name}}: a replicator driver that POSTs each batch to a URL, as a JSON array of events.
//
// Config: {"url": "https://hooks.example.com/in", "headers": {"authorization": "Bearer ..."}}
// (`url` required, http or https; `headers` optional). Each element of the body is an event:
// `resource`, `action`, `id`, `data`, `before`, `timestamp`, `source`, `sequence`, `metadata`,
// its documents as JSON values. The answer decides:
// - 2xx: every event was written;
// - 401, 403: `unauthorized`;
// - 408, 429, 5xx, or no answer (network): `retryable`, not before `Retry-After` seconds;
// - any other 4xx: `rejected`, the whole batch.
//
// Writes are idempotent when the receiver drops an event whose `resource`, `id` and `sequence`
// it has seen. The request goes through wasi:http (the SDK's `httpRequest`, sdk/http.js), so
// only to the hosts the replicator's `allowHosts` lets through. The SDK (./sdk, documented at
// the top of sdk/index.js) exports `driver` from `defineDriver`.
import { defineDriver, eventsToJson, InvalidConfig, log, Rejected, Retryable, Unauthorized } from './sdk/index.js';
import { HttpError, httpRequest } from './sdk/http.js';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
// An HTTP header name (RFC 9110 token).
const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;

const CONFIG_SCHEMA = {
  $schema: 'https://json-schema.org/draft/2020-12/schema',
  title: '{{name}} driver config',
  type: 'object',
  additionalProperties: false,
  required: ['url'],
  properties: {
    url: { type: 'string', pattern: '^https?://', description: 'Where each batch is POSTed.' },
    headers: {
      type: 'object',
      additionalProperties: { type: 'string' },
      description: 'Sent with every request (e.g. authorization).',
    },
  },
};

/** The config as `replicate` uses it; throws InvalidConfig naming the key at fault. */
export function parseConfig(config) {
  if (!isObject(config)) throw new InvalidConfig('the config must be a JSON object');
  let url;
  const headers = {};
  for (const [key, value] of Object.entries(config)) {
    if (key === 'url') {
      if (typeof value !== 'string') throw new InvalidConfig('`url` must be a string');
      url = value;
    } else if (key === 'headers') {
      if (!isObject(value)) throw new InvalidConfig('`headers` must be an object');
      for (const [name, v] of Object.entries(value)) {
        if (!TOKEN.test(name) || typeof v !== 'string' || /[\r\n\0]/.test(v)) {
          throw new InvalidConfig(`\`headers.${name}\`: a header needs a valid name and a string value`);
        }
        headers[name.toLowerCase()] = v;
      }
    } else throw new InvalidConfig(`unknown config key \`${key}\``);
  }
  if (url === undefined) throw new InvalidConfig('`url` is required');
  let parsed;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidConfig(`\`url\` is not a URL: ${url}`);
  }
  if ((parsed.protocol !== 'http:' && parsed.protocol !== 'https:') || !parsed.host) {
    throw new InvalidConfig('`url` must be an http:// or https:// URL');
  }
  return { url, headers };
}

/** `Retry-After` in seconds (the HTTP-date form is not honoured), in milliseconds. */
export function retryAfterMs(value) {
  return value !== undefined && /^\s*\d+\s*$/.test(value) ? Number(value) * 1000 : undefined;
}

/** What an answer with `status` means for the batch: nothing (written) or the error to throw. */
export function verdict(status, retryAfter, message) {
  const code = `http-${status}`;
  if (status >= 200 && status < 300) return undefined;
  if (status === 401 || status === 403) return new Unauthorized(message, { code });
  if (status === 408 || status === 429 || (status >= 500 && status < 600)) {
    return new Retryable(message, { code, retryAfterMs: retryAfterMs(retryAfter) });
  }
  if (status >= 400 && status < 500) return new Rejected(message, { code });
  // 1xx, 3xx: not an answer about the events; try again.
  return new Retryable(message, { code });
}

let config;

export const driver = defineDriver({
  describe: { name: '{{name}}', version: '0.1.0', configSchema: CONFIG_SCHEMA, maxBatchSize: 100, idempotent: true },

  init(raw) {
    config = parseConfig(raw);
  },

  replicate(events) {
    const { url, headers } = config;
    let response;
    try {
      response = httpRequest('POST', url, {
        headers: { 'content-type': 'application/json', ...headers },
        body: eventsToJson(events),
      });
    } catch (e) {
      if (e instanceof HttpError) throw new Retryable(e.message, { code: 'network' });
      throw e;
    }
    log.debug(`{{name}}: POST ${url}: ${events.length} events, HTTP ${response.status}`);
    const message = `POST ${url}: HTTP ${response.status}: ${response.text().trim().slice(0, 200)}`;
    const error = verdict(response.status, response.header('retry-after'), message);
    if (error) throw error;
    return [];
  },
});
