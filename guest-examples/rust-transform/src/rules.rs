//! The transform's rules on JSON documents, free of WIT types: `lib.rs` wraps them into the
//! component, and the host's plugin benchmark compiles this same file natively as its baseline
//! (so "the same work done natively" is this code, not a rewrite of it).
//!
//! A document is read as its top-level fields in their order, each value left as JSON text
//! borrowed from the input ([`Fields`]): the rules look at a few fields and move or drop others,
//! so nothing else is parsed, allocated or re-encoded. That is the cheapest way in Wasm and
//! natively alike.

use serde::de::{MapAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::value::{RawValue, to_raw_value};
use serde_json::{Map, Value};
use std::borrow::Cow;
use std::fmt;
use std::marker::PhantomData;

/// Name equality as the lookups need it: most names differ in length or first byte, which is
/// checked before the bytes are compared (in Wasm, `memcmp` is a loop of its own).
fn same(a: &str, b: &str) -> bool {
    a.len() == b.len() && a.as_bytes().first() == b.as_bytes().first() && a == b
}

/// A field name: as it stands in the input (it has no escapes there) or one of the rules' own,
/// written back byte for byte; or text escaped when written (a name that had escapes, or one
/// from the config).
enum Key<'a> {
    Verbatim(&'a str),
    Text(Cow<'a, str>),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Verbatim(name) => name,
            Key::Text(name) => name,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Key<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Name;
        impl<'de> Visitor<'de> for Name {
            type Value = Key<'de>;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }

            fn visit_borrowed_str<E>(self, name: &'de str) -> Result<Key<'de>, E> {
                Ok(Key::Verbatim(name))
            }

            fn visit_str<E>(self, name: &str) -> Result<Key<'de>, E> {
                Ok(Key::Text(Cow::Owned(name.to_owned())))
            }
        }
        d.deserialize_str(Name)
    }
}

/// A field's value: JSON text borrowed from the input or the config, or a string the rules made.
enum Val<'a> {
    Json(&'a RawValue),
    /// Escaped when written (`fullName`).
    Text(String),
    /// Nothing in it needs escaping (a hex digest): written as it is.
    Plain(String),
}

impl<'de: 'a, 'a> Deserialize<'de> for Val<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <&'a RawValue>::deserialize(d).map(Val::Json)
    }
}

impl Val<'_> {
    /// The JSON text of a value that came as JSON (made values are always strings).
    fn json(&self) -> Option<&str> {
        match self {
            Val::Json(raw) => Some(raw.get()),
            Val::Text(_) | Val::Plain(_) => None,
        }
    }

    fn is(&self, json: &str) -> bool {
        self.json() == Some(json)
    }

    /// The value when it is a string; borrowed unless it has escapes.
    fn str(&self) -> Option<Cow<'_, str>> {
        match self {
            Val::Text(s) | Val::Plain(s) => Some(Cow::Borrowed(s)),
            Val::Json(raw) => {
                let text = raw.get();
                let inner = text.strip_prefix('"')?.strip_suffix('"')?;
                if inner.contains('\\') {
                    serde_json::from_str(text).ok().map(Cow::Owned)
                } else {
                    Some(Cow::Borrowed(inner))
                }
            }
        }
    }
}

/// A document's top-level fields in document order. Lookups scan (a document has tens of
/// fields, the rules touch a handful), and a repeated name means its last value, as in JSON
/// parsers and the host.
struct Fields<'a>(Vec<(Key<'a>, Val<'a>)>);

impl<'a> Fields<'a> {
    fn get(&self, name: &str) -> Option<&Val<'a>> {
        self.0
            .iter()
            .rev()
            .find(|(k, _)| same(k.as_str(), name))
            .map(|(_, v)| v)
    }

    /// Removes every field of that name (one pass) and returns the last one's value.
    fn remove(&mut self, name: &str) -> Option<Val<'a>> {
        self.0
            .extract_if(.., |(k, _)| same(k.as_str(), name))
            .last()
            .map(|(_, v)| v)
    }

    /// Removes every field whose name is in `names`, in one pass.
    fn remove_all(&mut self, names: &[String]) {
        self.0
            .retain(|(k, _)| !names.iter().any(|name| same(k.as_str(), name)));
    }

    fn insert(&mut self, name: Key<'a>, value: Val<'a>) {
        match self
            .0
            .iter_mut()
            .rev()
            .find(|(k, _)| same(k.as_str(), name.as_str()))
        {
            Some((_, slot)) => *slot = value,
            None => self.0.push((name, value)),
        }
    }

    /// The document as compact JSON: names and values copied as they are, except those that
    /// need escaping. `capacity`: room reserved up front (the input's size and a margin).
    fn to_json(&self, capacity: usize) -> Vec<u8> {
        fn plain(out: &mut Vec<u8>, s: &str) {
            out.push(b'"');
            out.extend_from_slice(s.as_bytes());
            out.push(b'"');
        }
        fn escaped(out: &mut Vec<u8>, s: &str) {
            serde_json::to_writer(out, s).expect("a string serializes");
        }
        let mut out = Vec::with_capacity(capacity);
        out.push(b'{');
        for (i, (k, v)) in self.0.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            match k {
                Key::Verbatim(name) => plain(&mut out, name),
                Key::Text(name) => escaped(&mut out, name),
            }
            out.push(b':');
            match v {
                Val::Json(raw) => out.extend_from_slice(raw.get().as_bytes()),
                Val::Text(s) => escaped(&mut out, s),
                Val::Plain(s) => plain(&mut out, s),
            }
        }
        out.push(b'}');
        out
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
    // One UTF-8 check of the whole document, instead of one per string and value while parsing.
    let text = std::str::from_utf8(bytes)
        .map_err(|e| serde::de::Error::custom(format_args!("invalid UTF-8: {e}")))?;
    match serde_json::from_str(text) {
        Ok(fields) => Ok(Some(fields)),
        // A type error comes at the first byte that is not `{`: the rest is still unchecked.
        Err(e) if e.is_data() => serde_json::from_str::<serde::de::IgnoredAny>(text).map(|_| None),
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

/// The email as it is compared and hashed: trimmed and lowercased (Unicode lowercasing only
/// when it is not ASCII: the tables are costly to walk, in Wasm above all).
fn normalized_email(fields: &Fields) -> Option<String> {
    let email = fields.get("email")?.str()?;
    let email = email.trim();
    Some(if email.is_ascii() {
        email.to_ascii_lowercase()
    } else {
        email.to_lowercase()
    })
}

/// Steps 4–8 of lib.rs's list: the field changes shared by `data` and `before`.
/// Names and values from the config are borrowed, not copied into every record.
fn shape<'a>(c: &'a Config, fields: &mut Fields<'a>, email: Option<&str>, sha256_hex: Sha256Hex) {
    for (old, new) in &c.rename {
        if let Some(v) = fields.remove(old) {
            fields.insert(Key::Text(Cow::Borrowed(new)), v);
        }
    }
    if c.full_name {
        // Strings as they are, other values as (compact) JSON text, null as absent.
        let part = |k: &str| match fields.get(k)? {
            v if v.is("null") => None,
            v => v.str().or_else(|| {
                let json = serde_json::from_str::<Value>(v.json()?).ok()?;
                Some(Cow::Owned(json.to_string()))
            }),
        };
        if let (Some(first), Some(last)) = (part("firstName"), part("lastName")) {
            // Joined by hand: `format!` goes through dynamic calls, slow in Wasm.
            let mut full = String::with_capacity(first.len() + 1 + last.len());
            full.push_str(&first);
            full.push(' ');
            full.push_str(&last);
            fields.insert(Key::Verbatim("fullName"), Val::Text(full));
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
            fields.insert(Key::Verbatim("emailHash"), Val::Plain(sha256_hex(email)));
        }
    }
    fields.remove_all(&c.strip);
    for (k, v) in &c.add_fields {
        fields.insert(Key::Text(Cow::Borrowed(k)), Val::Json(v));
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

/// Room for the fields the rules add (`emailHash` is 77 bytes), so the output is written
/// without growing.
const MARGIN: usize = 128;

/// Steps 1–9 of lib.rs's list on one event's documents.
pub fn apply<'a>(
    c: &'a Config,
    raw_data: &'a [u8],
    raw_before: Option<&'a [u8]>,
    sha256_hex: Sha256Hex,
) -> Verdict {
    let mut data = match parse(raw_data) {
        Ok(Some(data)) => data,
        Ok(None) => return Verdict::Unchanged,
        Err(e) => return invalid_json("data", e),
    };
    let is = |fields: &Fields, k: &str, json: &str| fields.get(k).is_some_and(|v| v.is(json));
    if is(&data, "failMe", "true") {
        return Verdict::Failed {
            code: "fail-me",
            message: "record asked to fail".into(),
        };
    }
    if c.skip_soft_deleted
        && (data.get("deletedAt").is_some_and(|v| !v.is("null")) || is(&data, "deleted", "true"))
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

    let before = match raw_before.map(|raw| (raw.len(), parse(raw))) {
        None | Some((_, Ok(None))) => None,
        Some((len, Ok(Some(mut before)))) => {
            let email = normalized_email(&before);
            shape(c, &mut before, email.as_deref(), sha256_hex);
            Some(before.to_json(len + MARGIN))
        }
        Some((_, Err(e))) => return invalid_json("before", e),
    };
    let fan_out = data
        .get("fanOut")
        .and_then(|v| v.json()?.parse::<u64>().ok())
        .filter(|n| (1..=10).contains(n));
    Verdict::Changed {
        data: data.to_json(raw_data.len() + MARGIN),
        before,
        fan_out,
    }
}
