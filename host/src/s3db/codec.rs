//! Attribute types and their stored form: how s3db.js turns each value into a metadata string
//! and back. Types are recognised from the definition string in s3db.js's own order.

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Number, Value};

use super::base62;

/// The value encodings this host implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    String,
    Number {
        integer: bool,
    },
    Boolean,
    StringArray,
    NumberArray {
        integer: bool,
    },
    /// An array without an items type (or of objects): JSON text.
    JsonArray,
    /// `json` and `object`: JSON text.
    Json,
    DateTime,
    DateOnly,
    /// A type s3db.js has that this host does not encode (`secret`, `uuid`, `ip4`...).
    Unsupported(&'static str),
}

/// Auto-hook types s3db.js recognises anywhere in a definition, which this host refuses
/// rather than store in a form s3db.js would misread.
const UNSUPPORTED_HOOKS: [&str; 11] = [
    "secret", "password", "ip4", "ip6", "buffer", "bits", "money", "crypto", "decimal", "geo:",
    "text",
];
/// Mapper-level types, recognised as the definition's type name (`uuid` or `uuid|...`).
const UNSUPPORTED_TYPES: [&str; 9] = [
    "uuid", "timeonly", "mac", "cidr", "semver", "phone", "color", "duration", "ean",
];

/// The kind of a definition string such as `"number|integer|optional"`, in s3db.js's order:
/// auto hooks by substring, then mapper-level types.
pub fn kind_of(definition: &str) -> Kind {
    let d = definition;
    let type_name = d.split('|').next().unwrap_or("");
    if d.contains("embedding") {
        return Kind::Unsupported("embedding");
    }
    if d.contains("array") {
        let items = d
            .split('|')
            .find_map(|p| p.strip_prefix("items:"))
            .unwrap_or("");
        let long = d
            .split('|')
            .filter_map(|p| p.strip_prefix("length:"))
            .any(|n| n.parse::<u64>().is_ok_and(|n| n >= 256));
        return match items {
            "string" => Kind::StringArray,
            "number" if long => Kind::Unsupported("array|items:number with length >= 256"),
            "number" => Kind::NumberArray {
                integer: d.contains("integer"),
            },
            _ => Kind::JsonArray,
        };
    }
    for t in UNSUPPORTED_HOOKS {
        // `text` is a hook only as the type name (`text` or `text|...`).
        if (t == "text" && type_name == "text") || (t != "text" && d.contains(t)) {
            return Kind::Unsupported(t.trim_end_matches(':'));
        }
    }
    if d.contains("number") {
        return Kind::Number {
            integer: d.contains("integer"),
        };
    }
    if d.contains("bool") {
        return Kind::Boolean;
    }
    if d.contains("json") || d.contains("object") {
        return Kind::Json;
    }
    if let Some(t) = UNSUPPORTED_TYPES.iter().find(|t| type_name == **t) {
        return Kind::Unsupported(t);
    }
    if d.contains("datetime") {
        return Kind::DateTime;
    }
    if d.contains("dateonly") {
        return Kind::DateOnly;
    }
    Kind::String
}

/// The definition the host writes for a new field, from its first non-null value.
pub fn definition_for(value: &Value) -> &'static str {
    match value {
        Value::Bool(_) => "boolean|optional",
        Value::Number(_) => "number|optional",
        Value::String(_) => "string|optional",
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_string) => {
            "array|items:string|optional"
        }
        Value::Array(items) if !items.is_empty() && items.iter().all(Value::is_number) => {
            "array|items:number|optional"
        }
        Value::Array(_) => "array|optional",
        Value::Object(_) | Value::Null => "json|optional",
    }
}

/// Why a value could not be stored as its attribute's type.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct EncodeError(pub String);

fn js_string(value: &Value) -> String {
    match value {
        Value::String(s) if s == "[object Object]" => "{}".into(),
        Value::String(s) => s.clone(),
        Value::Number(n) => base62::js_number(n.as_f64().unwrap_or(f64::NAN)),
        Value::Bool(b) => b.to_string(),
        Value::Null => "null".into(),
        other => other.to_string(),
    }
}

fn number_of(value: &Value) -> Option<f64> {
    match value {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn millis_of(value: &Value) -> Option<i64> {
    match value {
        Value::Number(n) => n.as_f64().map(|f| f as i64),
        Value::String(s) => DateTime::parse_from_rfc3339(s)
            .map(|d| d.timestamp_millis())
            .ok()
            .or_else(|| {
                NaiveDate::parse_from_str(s, "%Y-%m-%d").ok().map(|d| {
                    d.and_hms_opt(0, 0, 0)
                        .expect("midnight")
                        .and_utc()
                        .timestamp_millis()
                })
            }),
        _ => None,
    }
}

/// The stored string of a non-null `value` of an attribute of `kind` (before transport encoding).
pub fn encode(kind: Kind, value: &Value, attribute: &str) -> Result<String, EncodeError> {
    let wrong = |expected: &str| {
        EncodeError(format!(
            "attribute \"{attribute}\" expects {expected}, found {}",
            crate::event::kind_of(value)
        ))
    };
    if value.is_null() {
        return Ok("null".into());
    }
    Ok(match kind {
        Kind::String => js_string(value),
        Kind::Number { integer } => {
            let n = number_of(value).ok_or_else(|| wrong("a number"))?;
            if integer {
                base62::encode(n)
            } else {
                base62::encode_decimal(n)
            }
        }
        Kind::Boolean => {
            let truthy = match value {
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() == Some(1.0),
                Value::String(s) => ["true", "1", "yes", "y"].contains(&s.as_str()),
                _ => return Err(wrong("a boolean")),
            };
            if truthy { "1".into() } else { "0".into() }
        }
        Kind::StringArray => {
            let items = value.as_array().ok_or_else(|| wrong("an array"))?;
            items
                .iter()
                .map(|v| js_string(v).replace('\\', "\\\\").replace('|', "\\|"))
                .collect::<Vec<_>>()
                .join("|")
        }
        Kind::NumberArray { integer } => {
            let items = value.as_array().ok_or_else(|| wrong("an array"))?;
            let mut out = Vec::with_capacity(items.len());
            for v in items {
                let n = number_of(v).ok_or_else(|| wrong("an array of numbers"))?;
                out.push(if integer {
                    base62::encode(n)
                } else {
                    base62::encode_decimal(n)
                });
            }
            out.join("|")
        }
        Kind::JsonArray | Kind::Json => match value {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        },
        Kind::DateTime => {
            base62::encode(millis_of(value).ok_or_else(|| wrong("an ISO-8601 date-time"))? as f64)
        }
        Kind::DateOnly => {
            let ms = millis_of(value).ok_or_else(|| wrong("a date (YYYY-MM-DD)"))?;
            base62::encode(ms.div_euclid(86_400_000) as f64)
        }
        Kind::Unsupported(t) => {
            return Err(EncodeError(format!(
                "attribute \"{attribute}\" has type {t}, which this host does not encode yet"
            )));
        }
    })
}

fn number(f: f64) -> Value {
    if f.fract() == 0.0 && f.abs() < 9.007_199_254_740_992e15 {
        Value::Number(Number::from(f as i64))
    } else {
        Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)
    }
}

/// Splits on `|` not escaped by `\`, undoing the escapes.
fn split_escaped(s: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    out.last_mut().expect("non-empty").push(next);
                }
            }
            '|' => out.push(String::new()),
            c => out.last_mut().expect("non-empty").push(c),
        }
    }
    out
}

/// The value s3db.js reads back from a stored string.
pub fn decode(kind: Kind, stored: &str) -> Value {
    match kind {
        Kind::String | Kind::Unsupported(_) => {
            // s3db.js returns strings that look like JSON containers parsed.
            if (stored.starts_with('{') || stored.starts_with('['))
                && let Ok(v) = serde_json::from_str(stored)
            {
                return v;
            }
            Value::String(stored.into())
        }
        Kind::Number { .. } => base62::decode_decimal(stored)
            .map(number)
            .unwrap_or(Value::Null),
        Kind::Boolean => Value::Bool(["true", "1", "yes", "y"].contains(&stored)),
        Kind::StringArray if stored.is_empty() => Value::Array(vec![]),
        Kind::StringArray => Value::Array(
            split_escaped(stored)
                .into_iter()
                .map(Value::String)
                .collect(),
        ),
        Kind::NumberArray { .. } if stored.is_empty() => Value::Array(vec![]),
        Kind::NumberArray { .. } => Value::Array(
            stored
                .split('|')
                .map(|p| base62::decode_decimal(p).map(number).unwrap_or(Value::Null))
                .collect(),
        ),
        Kind::JsonArray if stored.starts_with('[') => {
            serde_json::from_str(stored).unwrap_or_else(|_| Value::String(stored.into()))
        }
        Kind::JsonArray if stored.is_empty() => Value::Array(vec![]),
        Kind::JsonArray => Value::Array(
            split_escaped(stored)
                .into_iter()
                .map(Value::String)
                .collect(),
        ),
        Kind::Json => serde_json::from_str(stored).unwrap_or_else(|_| Value::String(stored.into())),
        Kind::DateTime => match base62::decode(stored) {
            Some(ms) if !stored.contains('-') || stored.starts_with('-') => {
                DateTime::<Utc>::from_timestamp_millis(ms)
                    .map(|d| Value::String(d.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)))
                    .unwrap_or(Value::Null)
            }
            _ => Value::String(stored.into()),
        },
        Kind::DateOnly => match base62::decode(stored) {
            Some(days) => DateTime::<Utc>::from_timestamp_millis(days * 86_400_000)
                .map(|d| Value::String(d.format("%Y-%m-%d").to_string()))
                .unwrap_or(Value::Null),
            None => Value::String(stored.into()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn kinds_follow_the_definition_order() {
        assert_eq!(kind_of("string|required"), Kind::String);
        assert_eq!(kind_of("number|integer"), Kind::Number { integer: true });
        assert_eq!(kind_of("number"), Kind::Number { integer: false });
        assert_eq!(kind_of("boolean"), Kind::Boolean);
        assert_eq!(kind_of("array|items:string"), Kind::StringArray);
        assert_eq!(
            kind_of("array|items:number|integer"),
            Kind::NumberArray { integer: true }
        );
        assert_eq!(kind_of("json"), Kind::Json);
        assert_eq!(kind_of("datetime|optional"), Kind::DateTime);
        assert_eq!(kind_of("dateonly"), Kind::DateOnly);
        assert_eq!(kind_of("secret|required"), Kind::Unsupported("secret"));
        assert_eq!(kind_of("email"), Kind::String);
    }

    #[test]
    fn round_trips() {
        let cases = [
            (Kind::Number { integer: false }, json!(31), "v"),
            (Kind::Number { integer: false }, json!(-7.25), "-7.25"),
            (Kind::Number { integer: true }, json!(42), "G"),
            (Kind::Boolean, json!(true), "1"),
            (
                Kind::StringArray,
                json!(["a|b", "c\\d", ""]),
                "a\\|b|c\\\\d|",
            ),
            (Kind::StringArray, json!([]), ""),
            (
                Kind::NumberArray { integer: false },
                json!([1.5, 42]),
                "1.5|G",
            ),
            (
                Kind::Json,
                json!({"a": [1, {"b": null}]}),
                "{\"a\":[1,{\"b\":null}]}",
            ),
            (Kind::JsonArray, json!([{"x": 1}]), "[{\"x\":1}]"),
            (Kind::DateTime, json!("2026-11-23T04:29:05.882Z"), "vBLDBPk"),
            (Kind::DateOnly, json!("2026-11-23"), "5pa"),
            (Kind::String, json!("héllo"), "héllo"),
        ];
        for (kind, value, stored) in cases {
            let got = encode(kind, &value, "x").unwrap();
            assert_eq!(got, stored, "{kind:?} {value}");
            assert_eq!(decode(kind, &got), value, "{kind:?} {stored}");
        }
        assert!(
            encode(Kind::Number { integer: false }, &json!("abc"), "age")
                .unwrap_err()
                .0
                .contains("\"age\" expects a number")
        );
    }
}
