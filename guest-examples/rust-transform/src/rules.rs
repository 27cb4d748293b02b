//! The transform's rules on JSON documents, free of WIT types: `lib.rs` wraps them into the
//! component, and the host's plugin benchmark compiles this same file natively as its baseline
//! (so "the same work done natively" is this code, not a rewrite of it).
//!
//! A document is read as its top-level fields in their order, each value left as JSON text
//! borrowed from the input ([`Fields`]): the rules look at a few fields and move or drop others,
//! so nothing else is parsed, allocated or re-encoded. That is the cheapest way in Wasm and
//! natively alike.

use serde::de::{MapAccess, Visitor};
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// A field name, borrowed from the input unless it has escapes or the rules made it.
#[derive(Serialize, Deserialize)]
#[serde(transparent)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// A field's value as JSON text: borrowed from the input, or made by the rules.
#[derive(Serialize)]
#[serde(transparent)]
struct Raw<'a>(Cow<'a, RawValue>);

impl<'de: 'a, 'a> Deserialize<'de> for Raw<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(|raw| Raw(Cow::Borrowed(raw)))
    }
}

impl Raw<'_> {
    fn owned(value: &impl Serialize) -> Raw<'static> {
        Raw(Cow::Owned(
            to_raw_value(value).expect("a JSON value serializes"),
        ))
    }

    fn text(&self) -> &str {
        self.0.get()
    }

    fn string(&self) -> Option<String> {
        self.text()
            .starts_with('"')
            .then(|| serde_json::from_str(self.text()).ok())
            .flatten()
    }
}

/// A document's top-level fields in document order. Lookups scan (a document has tens of
/// fields, the rules touch a handful), and a repeated name means its last value, as in JSON
/// parsers and the host.
struct Fields<'a>(Vec<(Key<'a>, Raw<'a>)>);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&Raw<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| k.0 == name)
            .map(|(_, v)| v)
    }

    fn remove(&mut self, name: &str) -> Option<Raw<'a>> {
        let at = self.0.iter().rposition(|(k, _)| k.0 == name)?;
        let (_, value) = self.0.remove(at);
        self.0.retain(|(k, _)| k.0 != name);
        Some(value)
    }

    fn insert(&mut self, name: Cow<'a, str>, value: Raw<'a>) {
        match self.0.iter_mut().rev().find(|(k, _)| k.0 == name) {
            Some((_, slot)) => *slot = value,
            None => self.0.push((Key(name), value)),
        }
    }
}

impl Serialize for Fields<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.0.len()))?;
        for (k, v) in &self.0 {
            map.serialize_entry(k, v)?;
        }
        map.end()
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Object<'a>(PhantomData<Fields<'a>>);
        impl<'de: 'a, 'a> Visitor<'de> for Object<'a> {
            type Value = Fields<'a>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Fields<'a>, M::Error> {
                let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(16));
                while let Some(field) = map.next_entry()? {
                    fields.push(field);
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(Object(PhantomData))
    }
}

/// Reads a document: `None` when it is JSON but not an object.
fn parse(bytes: &[u8]) -> Result<Option<Fields<'_>>, serde_json::Error> {
    match serde_json::from_slice(bytes) {
        Ok(fields) => Ok(Some(fields)),
        // A type error comes at the first byte that is not `{`: the rest is still unchecked.
        Err(e) if e.is_data() => {
            serde_json::from_slice::<serde::de::IgnoredAny>(bytes).map(|_| None)
        }
        Err(e) => Err(e),
    }
}

pub struct Config {
    pub strip: Vec<String>,
    pub skip_email_domain: Option<String>,
    pub hash_email: bool,
    pub full_name: bool,
    pub skip_soft_deleted: bool,
    pub rename: Vec<(String, String)>,
    /// Encoded once, written into every record.
    pub add_fields: Vec<(String, Box<RawValue>)>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            strip: ["password", "ssn", "creditCard"].map(String::from).to_vec(),
            skip_email_domain: Some("@test.com".into()),
            hash_email: true,
            full_name: true,
            skip_soft_deleted: true,
            rename: Vec::new(),
            add_fields: Vec::new(),
        }
    }
}

/// Reads the JSON config given to `init`; the error names the offending key.
pub fn parse_config(raw: &[u8]) -> Result<Config, String> {
    let value: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(raw).map_err(|e| format!("config is not JSON: {e}"))?
    };
    let Value::Object(obj) = value else {
        return Err("config must be a JSON object".into());
    };
    let mut c = Config::default();
    for (key, v) in obj {
        match key.as_str() {
            "strip" => {
                c.strip = v
                    .as_array()
                    .and_then(|a| a.iter().map(|s| s.as_str().map(String::from)).collect())
                    .ok_or("`strip` must be an array of strings")?;
            }
            "skipEmailDomain" => {
                c.skip_email_domain = match v {
                    Value::Null => None,
                    Value::String(s) if s.is_empty() => None,
                    Value::String(s) => Some(s.to_lowercase()),
                    _ => return Err("`skipEmailDomain` must be a string or null".into()),
                }
            }
            "hashEmail" | "fullName" | "skipSoftDeleted" => {
                let b = v
                    .as_bool()
                    .ok_or_else(|| format!("`{key}` must be a boolean"))?;
                match key.as_str() {
                    "hashEmail" => c.hash_email = b,
                    "fullName" => c.full_name = b,
                    _ => c.skip_soft_deleted = b,
                }
            }
            "rename" => {
                let Value::Object(m) = v else {
                    return Err("`rename` must be an object of old → new field names".into());
                };
                for (old, new) in m {
                    let Value::String(new) = new else {
                        return Err(format!("`rename.{old}` must be a string"));
                    };
                    c.rename.push((old, new));
                }
            }
            "addFields" => {
                let Value::Object(m) = v else {
                    return Err("`addFields` must be an object".into());
                };
                c.add_fields = m
                    .iter()
                    .map(|(k, v)| (k.clone(), to_raw_value(v).expect("a JSON value serializes")))
                    .collect();
            }
            _ => return Err(format!("unknown config key `{key}`")),
        }
    }
    Ok(c)
}

/// The lowercase hex SHA-256 of a string. The component asks the host for it (`digest`: native
/// code with the CPU's SHA instructions, which Wasm lacks; with the call's own cost it measured
/// about the same as `sha2` compiled into the guest, or less); the native baseline and the unit
/// tests use [`sha256_hex`].
pub type Sha256Hex = fn(&str) -> String;

#[cfg(not(target_family = "wasm"))]
#[allow(dead_code)] // for the unit tests and the host's benchmark
pub fn sha256_hex(s: &str) -> String {
    use sha2::{Digest, Sha256};
    format!("{:x}", Sha256::digest(s.as_bytes()))
}

/// The email as it is compared and hashed: trimmed and lowercased.
fn normalized_email(fields: &Fields) -> Option<String> {
    let email = fields.get("email")?.string()?;
    Some(email.trim().to_lowercase())
}

/// Steps 4–8 of lib.rs's list: the field changes shared by `data` and `before`.
/// Names and values from the config are borrowed, not copied into every record.
fn shape<'a>(c: &'a Config, fields: &mut Fields<'a>, email: Option<&str>, sha256_hex: Sha256Hex) {
    for (old, new) in &c.rename {
        if let Some(v) = fields.remove(old.as_str()) {
            fields.insert(Cow::Borrowed(new), v);
        }
    }
    if c.full_name {
        // Strings as they are, other values as (compact) JSON text, null as absent.
        let part = |k: &str| match fields.get(k) {
            None => None,
            Some(v) if v.text() == "null" => None,
            Some(v) => v.string().or_else(|| {
                serde_json::from_str::<Value>(v.text())
                    .ok()
                    .map(|v| v.to_string())
            }),
        };
        if let (Some(first), Some(last)) = (part("firstName"), part("lastName")) {
            fields.insert("fullName".into(), Raw::owned(&(first + " " + &last)));
        }
    }
    if c.hash_email {
        // After a rename the email may be another field's value: normalise it again then.
        let renamed;
        let email = if c.rename.is_empty() {
            email
        } else {
            renamed = normalized_email(fields);
            renamed.as_deref()
        };
        if let Some(email) = email {
            fields.insert("emailHash".into(), Raw::owned(&sha256_hex(email)));
        }
    }
    for field in &c.strip {
        fields.remove(field.as_str());
    }
    for (k, v) in &c.add_fields {
        fields.insert(Cow::Borrowed(k), Raw(Cow::Borrowed(v)));
    }
}

/// What the rules decided for one insert or update.
#[derive(Debug)]
pub enum Verdict {
    /// `data` is not a JSON object: the event goes on as it came.
    Unchanged,
    /// Deliver with these documents (`before` none: unchanged); `fan_out` copies when set.
    Changed {
        data: Vec<u8>,
        before: Option<Vec<u8>>,
        fan_out: Option<u64>,
    },
    Skip,
    Failed {
        code: &'static str,
        message: String,
    },
}

fn invalid_json(what: &str, e: serde_json::Error) -> Verdict {
    Verdict::Failed {
        code: "invalid-json",
        message: format!("{what} is not valid JSON: {e}"),
    }
}

/// Steps 1–9 of lib.rs's list on one event's documents.
pub fn apply<'a>(
    c: &'a Config,
    data: &'a [u8],
    before: Option<&'a [u8]>,
    sha256_hex: Sha256Hex,
) -> Verdict {
    let mut data = match parse(data) {
        Ok(Some(data)) => data,
        Ok(None) => return Verdict::Unchanged,
        Err(e) => return invalid_json("data", e),
    };
    let is = |fields: &Fields, k: &str, text: &str| fields.get(k).is_some_and(|v| v.text() == text);
    if is(&data, "failMe", "true") {
        return Verdict::Failed {
            code: "fail-me",
            message: "record asked to fail".into(),
        };
    }
    if c.skip_soft_deleted
        && (data.get("deletedAt").is_some_and(|v| v.text() != "null")
            || is(&data, "deleted", "true"))
    {
        return Verdict::Skip;
    }
    let email = normalized_email(&data);
    if let (Some(domain), Some(email)) = (&c.skip_email_domain, &email)
        && email.ends_with(domain.as_str())
    {
        return Verdict::Skip;
    }

    shape(c, &mut data, email.as_deref(), sha256_hex);

    let before = match before.map(parse) {
        None | Some(Ok(None)) => None,
        Some(Ok(Some(mut before))) => {
            let email = normalized_email(&before);
            shape(c, &mut before, email.as_deref(), sha256_hex);
            Some(serde_json::to_vec(&before).expect("a JSON value serializes"))
        }
        Some(Err(e)) => return invalid_json("before", e),
    };
    let fan_out = data
        .get("fanOut")
        .and_then(|v| v.text().parse::<u64>().ok())
        .filter(|n| (1..=10).contains(n));
    Verdict::Changed {
        data: serde_json::to_vec(&data).expect("a JSON value serializes"),
        before,
        fan_out,
    }
}
