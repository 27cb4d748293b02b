// {{name}}: a replicator transform, driven by its config (every key optional):
//
//   {"drop": ["password"], "rename": {"mail": "email"}, "skipResources": ["audit"]}
//
// - events of a resource in `skipResources` are skipped;
// - deletes pass through unchanged;
// - inserts and updates lose the `drop` fields, then get the `rename` fields renamed (replacing
//   a field of the new name), in `data` and in `before`; a record with nothing to change is kept
//   as it came;
// - a record whose `data` or `before` is not a JSON object fails (`invalid-record`, code
//   `not-an-object`), and only that record.
//
// The SDK (./sdk, documented at the top of sdk/index.js) exports `batch-transform` from
// `defineTransform`, hands `init` the config as a JSON value and `transform` one event at a time.
import { defineTransform, fail, InvalidConfig, keep, skip, update } from './sdk/index.js';

const isObject = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);

function strings(key, value) {
  if (!Array.isArray(value) || !value.every((s) => typeof s === 'string')) {
    throw new InvalidConfig(`\`${key}\` must be an array of strings`);
  }
  return value;
}

/** The config as `transform` uses it; throws InvalidConfig naming the key at fault. */
export function parseConfig(config) {
  if (!isObject(config)) throw new InvalidConfig('the config must be a JSON object');
  const c = { drop: [], rename: [], skipResources: new Set() };
  for (const [key, value] of Object.entries(config)) {
    if (key === 'drop') c.drop = strings(key, value);
    else if (key === 'skipResources') c.skipResources = new Set(strings(key, value));
    else if (key === 'rename') {
      if (!isObject(value)) throw new InvalidConfig('`rename` must be an object');
      c.rename = Object.entries(value).map(([from, to]) => {
        if (typeof to !== 'string') throw new InvalidConfig(`\`rename.${from}\` must be a string`);
        return [from, to];
      });
    } else throw new InvalidConfig(`unknown config key \`${key}\``);
  }
  return c;
}

/** `drop` then `rename` on one document, in place; true when something changed. */
function shape(c, doc) {
  let changed = false;
  for (const name of c.drop) {
    if (Object.hasOwn(doc, name)) {
      delete doc[name];
      changed = true;
    }
  }
  for (const [from, to] of c.rename) {
    if (Object.hasOwn(doc, from)) {
      const value = doc[from];
      delete doc[from];
      doc[to] = value;
      changed = true;
    }
  }
  return changed;
}

let config = parseConfig({});

export const batchTransform = defineTransform({
  init(raw) {
    config = parseConfig(raw);
  },

  transform(event) {
    if (config.skipResources.has(event.resource)) return skip();
    if (event.action === 'delete') return keep();
    const { data, before } = event; // parsed here, on first read
    if (data === undefined) return keep();
    if (!isObject(data)) return fail('not-an-object', '`data` is not a JSON object');
    if (before !== undefined && !isObject(before)) return fail('not-an-object', '`before` is not a JSON object');
    const dataChanged = shape(config, data);
    const beforeChanged = before !== undefined && shape(config, before);
    if (!dataChanged && !beforeChanged) return keep();
    // Only the documents that changed are sent back.
    return update({ data: dataChanged ? data : undefined, before: beforeChanged ? before : undefined });
  },
});
