//! One record <-> one object: attribute values mapped to short keys, split between metadata
//! and body by the resource's behavior within the metadata budget, transport-encoded.
//!
//! The budget is counted on what is really sent (encoded keys and values), so a record the
//! host writes never exceeds S3's limit, unlike s3db.js's estimate before encoding.

use serde_json::{Map, Value};
use std::collections::BTreeMap;

use super::codec::{self, EncodeError};
use super::schema::{Behavior, Resource};
use super::transport;

/// S3's user-metadata limit as s3db.js uses it.
pub const METADATA_LIMIT: usize = 2047;

/// An object ready to store.
#[derive(Debug, Clone, PartialEq)]
pub struct Encoded {
    /// Sanitised key -> transport-encoded value.
    pub metadata: BTreeMap<String, String>,
    pub body: Option<String>,
}

/// `key.replace(/[^A-Za-z0-9\-_]/g, '_').toLowerCase()`.
pub fn sanitize_key(key: &str) -> String {
    key.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// The value at a dotted path of a JSON object.
pub fn lookup<'a>(data: &'a Value, path: &str) -> Option<&'a Value> {
    path.split('.').try_fold(data, |v, part| v.get(part))
}

/// Maps `data` (without `id`) to `(short key, stored string)`, in attribute order.
pub fn map_fields(resource: &Resource, data: &Value) -> Result<Vec<(String, String)>, EncodeError> {
    let mut out = Vec::new();
    for attr in resource.attributes.values() {
        if let Some(v) = lookup(data, &attr.path) {
            out.push((attr.key.clone(), codec::encode(attr.kind, v, &attr.path)?));
        }
    }
    Ok(out)
}

fn bytes(key: &str, value: &str) -> usize {
    key.len() + value.len()
}

/// Splits mapped fields into metadata and body as the resource's behavior does.
pub fn encode(
    resource: &Resource,
    fields: Vec<(String, String)>,
    limit: usize,
) -> Result<Encoded, EncodeError> {
    let v = ("_v".to_string(), transport::encode(&resource.version));
    let encoded: Vec<(String, String, String)> = fields
        .into_iter()
        .map(|(k, raw)| {
            let enc = transport::encode(&raw);
            (k, raw, enc)
        })
        .collect();
    let total: usize =
        bytes(&v.0, &v.1) + encoded.iter().map(|(k, _, e)| bytes(k, e)).sum::<usize>();
    let mut metadata = BTreeMap::from([v.clone()]);
    let body_of = |items: &[&(String, String, String)]| -> String {
        let m: Map<String, Value> = items
            .iter()
            .map(|(k, raw, _)| (k.clone(), Value::String(raw.clone())))
            .collect();
        Value::Object(m).to_string()
    };
    match resource.behavior {
        Behavior::UserManaged if total <= limit => {
            metadata.extend(encoded.into_iter().map(|(k, _, e)| (k, e)));
            Ok(Encoded {
                metadata,
                body: None,
            })
        }
        Behavior::UserManaged => Ok(Encoded {
            metadata,
            body: Some(body_of(&encoded.iter().collect::<Vec<_>>())),
        }),
        Behavior::EnforceLimits if total > limit => Err(EncodeError(format!(
            "record needs {total} bytes of metadata, over the {limit}-byte limit of behavior enforce-limits"
        ))),
        Behavior::EnforceLimits => {
            metadata.extend(encoded.into_iter().map(|(k, _, e)| (k, e)));
            Ok(Encoded {
                metadata,
                body: None,
            })
        }
        Behavior::BodyOnly => {
            let mut all: Vec<&(String, String, String)> = encoded.iter().collect();
            let version_field = ("_v".to_string(), resource.version.clone(), String::new());
            all.push(&version_field);
            metadata.insert("_map".into(), transport::encode(&resource.key_map()));
            Ok(Encoded {
                metadata,
                body: Some(body_of(&all)),
            })
        }
        Behavior::BodyOverflow | Behavior::TruncateData if total <= limit => {
            metadata.extend(encoded.into_iter().map(|(k, _, e)| (k, e)));
            Ok(Encoded {
                metadata,
                body: None,
            })
        }
        Behavior::BodyOverflow => {
            // Smallest first into metadata, keeping room for the flag; from the first field that
            // does not fit, everything goes to the body (as s3db.js does).
            let budget = limit - bytes("_overflow", "true");
            let mut sorted: Vec<&(String, String, String)> = encoded.iter().collect();
            sorted.sort_by_key(|(k, _, e)| bytes(k, e));
            let mut used = bytes(&v.0, &v.1);
            let mut body = Vec::new();
            for item in sorted {
                let size = bytes(&item.0, &item.2);
                if body.is_empty() && used + size <= budget {
                    metadata.insert(item.0.clone(), item.2.clone());
                    used += size;
                } else {
                    body.push(item);
                }
            }
            metadata.insert("_overflow".into(), "true".into());
            Ok(Encoded {
                metadata,
                body: Some(body_of(&body)),
            })
        }
        Behavior::TruncateData => {
            // Smallest first; the first field that does not fit is cut to the room left, the
            // rest are dropped.
            let budget = limit - bytes("_truncated", "true");
            let mut sorted: Vec<&(String, String, String)> = encoded.iter().collect();
            sorted.sort_by_key(|(k, _, e)| bytes(k, e));
            let mut used = bytes(&v.0, &v.1);
            for (k, raw, e) in sorted {
                if used + bytes(k, e) <= budget {
                    metadata.insert(k.clone(), e.clone());
                    used += bytes(k, e);
                    continue;
                }
                let room = budget.saturating_sub(used + k.len());
                if let Some(cut) = longest_prefix_within(raw, room) {
                    metadata.insert(k.clone(), cut);
                }
                break;
            }
            metadata.insert("_truncated".into(), "true".into());
            Ok(Encoded {
                metadata,
                body: None,
            })
        }
    }
}

/// The transport encoding of the longest character prefix of `raw` that fits in `room` bytes.
fn longest_prefix_within(raw: &str, room: usize) -> Option<String> {
    let chars: Vec<char> = raw.chars().collect();
    let (mut lo, mut hi) = (0usize, chars.len());
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let candidate: String = chars[..mid].iter().collect();
        if transport::encode(&candidate).len() <= room {
            lo = mid
        } else {
            hi = mid - 1
        }
    }
    (lo > 0).then(|| transport::encode(&chars[..lo].iter().collect::<String>()))
}

/// Reads an object back into the record s3db.js would return (with `id`).
pub fn decode(
    resource: &Resource,
    id: &str,
    metadata: &BTreeMap<String, String>,
    body: &[u8],
) -> Value {
    let mut stored: BTreeMap<String, Value> = BTreeMap::new();
    // Body first; metadata wins.
    if let Ok(Value::Object(b)) = serde_json::from_slice::<Value>(body) {
        for (k, v) in b {
            stored.insert(k, v);
        }
    }
    for (k, v) in metadata {
        match transport::decode(v) {
            Some(Some(text)) => stored.insert(k.clone(), Value::String(text)),
            Some(None) => stored.insert(k.clone(), Value::Null),
            None => stored.remove(k),
        };
    }
    let mut out = Map::new();
    out.insert("id".into(), Value::String(id.into()));
    // Long names (a user-managed body after an update) hold raw values; short keys, written
    // later, win over them as they do in s3db.js.
    for (k, v) in stored
        .iter()
        .filter(|(k, _)| !resource.by_key.contains_key(*k) && resource.attributes.contains_key(*k))
    {
        insert_path(&mut out, k, v.clone());
    }
    for (k, v) in &stored {
        let Some(path) = resource.by_key.get(k) else {
            continue;
        };
        let value = match v {
            Value::String(s) => codec::decode(resource.attributes[path].kind, s),
            other => other.clone(),
        };
        insert_path(&mut out, path, value);
    }
    Value::Object(out)
}

fn insert_path(out: &mut Map<String, Value>, path: &str, value: Value) {
    match path.split_once('.') {
        None => {
            out.insert(path.into(), value);
        }
        Some((head, rest)) => {
            let child = out
                .entry(head.to_string())
                .or_insert_with(|| Value::Object(Map::new()));
            if !child.is_object() {
                *child = Value::Object(Map::new());
            }
            insert_path(child.as_object_mut().expect("made an object"), rest, value);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3db::schema::Catalog;
    use serde_json::json;

    fn resource(behavior: Behavior, fields: &[(&str, &'static str)]) -> Resource {
        let mut c = Catalog::empty();
        let f: Vec<(String, &'static str)> =
            fields.iter().map(|(p, d)| (p.to_string(), *d)).collect();
        c.extend("r", &f, behavior);
        c.resource("r").unwrap().unwrap()
    }

    fn size(e: &Encoded) -> usize {
        e.metadata.iter().map(|(k, v)| k.len() + v.len()).sum()
    }

    #[test]
    fn every_behavior_round_trips_and_respects_the_budget() {
        let data =
            json!({"small": "s", "n": 7, "big": "x".repeat(1500), "bigger": "é".repeat(900)});
        for behavior in [
            Behavior::UserManaged,
            Behavior::BodyOverflow,
            Behavior::BodyOnly,
        ] {
            let r = resource(
                behavior,
                &[
                    ("small", "string"),
                    ("n", "number"),
                    ("big", "string"),
                    ("bigger", "string"),
                ],
            );
            let e = encode(&r, map_fields(&r, &data).unwrap(), METADATA_LIMIT).unwrap();
            assert!(size(&e) <= METADATA_LIMIT, "{behavior:?}: {}", size(&e));
            let mut expected = data.clone();
            expected["id"] = json!("a");
            assert_eq!(
                decode(
                    &r,
                    "a",
                    &e.metadata,
                    e.body.as_deref().unwrap_or_default().as_bytes()
                ),
                expected,
                "{behavior:?}"
            );
        }
        let r = resource(
            Behavior::BodyOverflow,
            &[
                ("small", "string"),
                ("n", "number"),
                ("big", "string"),
                ("bigger", "string"),
            ],
        );
        let e = encode(&r, map_fields(&r, &data).unwrap(), METADATA_LIMIT).unwrap();
        assert_eq!(e.metadata["_overflow"], "true");
        assert!(
            e.metadata.contains_key("0") && e.metadata.contains_key("1"),
            "small fields stay in metadata"
        );

        let r = resource(
            Behavior::EnforceLimits,
            &[("big", "string"), ("bigger", "string")],
        );
        assert!(encode(&r, map_fields(&r, &data).unwrap(), METADATA_LIMIT).is_err());

        let r = resource(
            Behavior::TruncateData,
            &[("small", "string"), ("big", "string"), ("bigger", "string")],
        );
        let e = encode(&r, map_fields(&r, &data).unwrap(), METADATA_LIMIT).unwrap();
        assert!(size(&e) <= METADATA_LIMIT, "{}", size(&e));
        assert_eq!(e.metadata["_truncated"], "true");
        assert_eq!(e.body, None);
    }

    #[test]
    fn tolerates_servers_that_drop_underscore_keys() {
        let r = resource(
            Behavior::BodyOverflow,
            &[("small", "string"), ("big", "string")],
        );
        let data = json!({"small": "s", "big": "é".repeat(2000)});
        let mut e = encode(&r, map_fields(&r, &data).unwrap(), METADATA_LIMIT).unwrap();
        e.metadata.retain(|k, _| !k.starts_with('_'));
        let mut expected = data.clone();
        expected["id"] = json!("a");
        assert_eq!(
            decode(&r, "a", &e.metadata, e.body.unwrap().as_bytes()),
            expected
        );
    }

    #[test]
    fn nested_paths_and_long_names() {
        let mut c = Catalog::empty();
        c.extend(
            "r",
            &[
                ("address.city".into(), "string"),
                ("tags".into(), "array|items:string"),
            ],
            Behavior::UserManaged,
        );
        let r = c.resource("r").unwrap().unwrap();
        let data = json!({"address": {"city": "Lisboa"}, "tags": ["a", "b"]});
        let e = encode(&r, map_fields(&r, &data).unwrap(), METADATA_LIMIT).unwrap();
        assert_eq!(
            decode(&r, "x", &e.metadata, b""),
            json!({"id": "x", "address": {"city": "Lisboa"}, "tags": ["a", "b"]})
        );
        // A user-managed update body with long names and raw values.
        let body = br#"{"tags": ["c"], "address.city": "Porto"}"#;
        let meta = BTreeMap::from([("_v".to_string(), "v1".to_string())]);
        assert_eq!(
            decode(&r, "x", &meta, body),
            json!({"id": "x", "address": {"city": "Porto"}, "tags": ["c"]})
        );
    }
}
