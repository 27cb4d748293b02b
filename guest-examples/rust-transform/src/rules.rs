//! The transform's rules on JSON documents, free of WIT types: `lib.rs` wraps them into the
//! component, and the host's plugin benchmark compiles this same file natively as its baseline
//! (so "the same work done natively" is this code, not a rewrite of it).

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

pub struct Config {
    pub strip: Vec<String>,
    pub skip_email_domain: Option<String>,
    pub hash_email: bool,
    pub full_name: bool,
    pub skip_soft_deleted: bool,
    pub rename: Vec<(String, String)>,
    pub add_fields: Map<String, Value>,
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
            add_fields: Map::new(),
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
                c.add_fields = m;
            }
            _ => return Err(format!("unknown config key `{key}`")),
        }
    }
    Ok(c)
}

pub fn sha256_hex(s: &str) -> String {
    format!("{:x}", Sha256::digest(s.as_bytes()))
}

/// The email as it is compared and hashed: trimmed and lowercased.
fn normalized_email(obj: &Map<String, Value>) -> Option<String> {
    match obj.get("email") {
        Some(Value::String(email)) => Some(email.trim().to_lowercase()),
        _ => None,
    }
}

/// Steps 4–8 of lib.rs's list: the field changes shared by `data` and `before`.
fn shape(c: &Config, obj: &mut Map<String, Value>, email: Option<&str>) {
    for (old, new) in &c.rename {
        if let Some(v) = obj.remove(old) {
            obj.insert(new.clone(), v);
        }
    }
    if c.full_name {
        let part = |k: &str| match obj.get(k) {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(other) => Some(other.to_string()),
        };
        if let (Some(first), Some(last)) = (part("firstName"), part("lastName")) {
            obj.insert("fullName".into(), Value::String(first + " " + &last));
        }
    }
    if c.hash_email {
        // After a rename the email may be another field's value: normalise it again then.
        let renamed;
        let email = if c.rename.is_empty() {
            email
        } else {
            renamed = normalized_email(obj);
            renamed.as_deref()
        };
        if let Some(email) = email {
            obj.insert("emailHash".into(), Value::String(sha256_hex(email)));
        }
    }
    for field in &c.strip {
        obj.remove(field);
    }
    for (k, v) in &c.add_fields {
        obj.insert(k.clone(), v.clone());
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

/// Steps 1–9 of lib.rs's list on one event's documents.
pub fn apply(c: &Config, data: &[u8], before: Option<&[u8]>) -> Verdict {
    let mut data = match serde_json::from_slice::<Value>(data) {
        Ok(Value::Object(data)) => data,
        Ok(_) => return Verdict::Unchanged,
        Err(e) => {
            return Verdict::Failed {
                code: "invalid-json",
                message: format!("data is not valid JSON: {e}"),
            };
        }
    };
    if data.get("failMe") == Some(&Value::Bool(true)) {
        return Verdict::Failed {
            code: "fail-me",
            message: "record asked to fail".into(),
        };
    }
    if c.skip_soft_deleted
        && (data.get("deletedAt").is_some_and(|v| !v.is_null())
            || data.get("deleted") == Some(&Value::Bool(true)))
    {
        return Verdict::Skip;
    }
    let email = normalized_email(&data);
    if let (Some(domain), Some(email)) = (&c.skip_email_domain, &email)
        && email.ends_with(domain.as_str())
    {
        return Verdict::Skip;
    }

    shape(c, &mut data, email.as_deref());

    let before = match before.map(serde_json::from_slice::<Value>) {
        None => None,
        Some(Ok(Value::Object(mut before))) => {
            let email = normalized_email(&before);
            shape(c, &mut before, email.as_deref());
            Some(serde_json::to_vec(&before).expect("a JSON value serializes"))
        }
        Some(Ok(_)) => None,
        Some(Err(e)) => {
            return Verdict::Failed {
                code: "invalid-json",
                message: format!("before is not valid JSON: {e}"),
            };
        }
    };
    let fan_out = data
        .get("fanOut")
        .and_then(Value::as_u64)
        .filter(|n| (1..=10).contains(n));
    Verdict::Changed {
        data: serde_json::to_vec(&data).expect("a JSON value serializes"),
        before,
        fan_out,
    }
}
