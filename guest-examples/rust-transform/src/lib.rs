//! Example batch transform: the transforms of s3db.js's ReplicatorPlugin docs, driven by a
//! JSON config given to `init` (see README.md for the keys).
//!
//! For insert/update events whose `data` is a JSON object, in this order:
//! 1. `failMe: true` → `failed(invalid-record {code: "fail-me"})` (lets tests exercise failures);
//! 2. soft-deleted records (`deletedAt` non-null, or `deleted: true`) → skip;
//! 3. `email` ending with `skipEmailDomain` (default `@test.com`, case-insensitive) → skip;
//! 4. `rename` old → new fields;
//! 5. `fullName` = `firstName + " " + lastName` when both exist;
//! 6. `emailHash` = lowercase hex SHA-256 of the email, lowercased and trimmed;
//! 7. remove the `strip` fields (default `password`, `ssn`, `creditCard`);
//! 8. add the `addFields` (overwriting);
//! 9. `fanOut: n` (integer 1..=10) → `many` with n copies whose ids are `<id>-0` … `<id>-<n-1>`.
//!
//! `before` gets steps 4–8 too (so stripped fields don't leak through it). Deletes pass through
//! unchanged; invalid JSON in `data` or `before` fails that record only.

wit_bindgen::generate!({
    path: "../../wit",
    world: "batch-transformer",
});

use exports::replicator::plugin::batch_transform::Guest;
use replicator::plugin::log::{Level, log};
use replicator::plugin::transform_types::{Outcome, TransformError};
use replicator::plugin::types::{Action, ErrorInfo, Event};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::sync::Mutex;

struct Config {
    strip: Vec<String>,
    skip_email_domain: Option<String>,
    hash_email: bool,
    full_name: bool,
    skip_soft_deleted: bool,
    rename: Vec<(String, String)>,
    add_fields: Map<String, Value>,
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

static CONFIG: Mutex<Option<Config>> = Mutex::new(None);

fn info(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo {
        code: code.into(),
        message: message.into(),
    }
}

fn bad_config(message: impl Into<String>) -> TransformError {
    TransformError::InvalidConfig(info("invalid-config", message))
}

fn parse_config(raw: &[u8]) -> Result<Config, TransformError> {
    let value: Value = if raw.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(raw).map_err(|e| bad_config(format!("config is not JSON: {e}")))?
    };
    let Value::Object(obj) = value else {
        return Err(bad_config("config must be a JSON object"));
    };
    let mut c = Config::default();
    for (key, v) in obj {
        match key.as_str() {
            "strip" => {
                c.strip = v
                    .as_array()
                    .and_then(|a| a.iter().map(|s| s.as_str().map(String::from)).collect())
                    .ok_or_else(|| bad_config("`strip` must be an array of strings"))?;
            }
            "skipEmailDomain" => {
                c.skip_email_domain = match v {
                    Value::Null => None,
                    Value::String(s) if s.is_empty() => None,
                    Value::String(s) => Some(s.to_lowercase()),
                    _ => return Err(bad_config("`skipEmailDomain` must be a string or null")),
                }
            }
            "hashEmail" | "fullName" | "skipSoftDeleted" => {
                let b = v
                    .as_bool()
                    .ok_or_else(|| bad_config(format!("`{key}` must be a boolean")))?;
                match key.as_str() {
                    "hashEmail" => c.hash_email = b,
                    "fullName" => c.full_name = b,
                    _ => c.skip_soft_deleted = b,
                }
            }
            "rename" => {
                let Value::Object(m) = v else {
                    return Err(bad_config(
                        "`rename` must be an object of old → new field names",
                    ));
                };
                for (old, new) in m {
                    let Value::String(new) = new else {
                        return Err(bad_config(format!("`rename.{old}` must be a string")));
                    };
                    c.rename.push((old, new));
                }
            }
            "addFields" => {
                let Value::Object(m) = v else {
                    return Err(bad_config("`addFields` must be an object"));
                };
                c.add_fields = m;
            }
            _ => return Err(bad_config(format!("unknown config key `{key}`"))),
        }
    }
    Ok(c)
}

fn sha256_hex(s: &str) -> String {
    Sha256::digest(s.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Steps 4–8: the field changes shared by `data` and `before`.
fn shape(c: &Config, obj: &mut Map<String, Value>) {
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
            obj.insert("fullName".into(), Value::String(format!("{first} {last}")));
        }
    }
    if c.hash_email {
        if let Some(Value::String(email)) = obj.get("email") {
            let hash = sha256_hex(&email.trim().to_lowercase());
            obj.insert("emailHash".into(), Value::String(hash));
        }
    }
    for field in &c.strip {
        obj.remove(field);
    }
    for (k, v) in &c.add_fields {
        obj.insert(k.clone(), v.clone());
    }
}

fn invalid_record(code: &str, message: impl Into<String>) -> Outcome {
    Outcome::Failed(TransformError::InvalidRecord(info(code, message)))
}

fn transform_one(c: &Config, mut event: Event) -> Outcome {
    if matches!(event.action, Action::Delete) {
        return Outcome::Keep(event);
    }
    let Some(raw) = event.data.as_deref() else {
        return Outcome::Keep(event);
    };
    let data: Value = match serde_json::from_slice(raw) {
        Ok(v) => v,
        Err(e) => return invalid_record("invalid-json", format!("data is not valid JSON: {e}")),
    };
    let Value::Object(mut data) = data else {
        return Outcome::Keep(event);
    };

    if data.get("failMe") == Some(&Value::Bool(true)) {
        return invalid_record("fail-me", "record asked to fail");
    }
    if c.skip_soft_deleted
        && (data.get("deletedAt").is_some_and(|v| !v.is_null())
            || data.get("deleted") == Some(&Value::Bool(true)))
    {
        return Outcome::Skip;
    }
    if let (Some(domain), Some(Value::String(email))) = (&c.skip_email_domain, data.get("email")) {
        if email.trim().to_lowercase().ends_with(domain.as_str()) {
            return Outcome::Skip;
        }
    }

    shape(c, &mut data);

    if let Some(raw_before) = event.before.as_deref() {
        match serde_json::from_slice::<Value>(raw_before) {
            Ok(Value::Object(mut before)) => {
                shape(c, &mut before);
                event.before = Some(serde_json::to_vec(&before).expect("a JSON value serializes"));
            }
            Ok(_) => {}
            Err(e) => {
                return invalid_record("invalid-json", format!("before is not valid JSON: {e}"));
            }
        }
    }

    let fan_out = data
        .get("fanOut")
        .and_then(Value::as_u64)
        .filter(|n| (1..=10).contains(n));
    event.data = Some(serde_json::to_vec(&data).expect("a JSON value serializes"));
    match fan_out {
        None => Outcome::Keep(event),
        Some(n) => Outcome::Many(
            (0..n)
                .map(|i| Event {
                    id: format!("{}-{i}", event.id),
                    ..event.clone()
                })
                .collect(),
        ),
    }
}

struct Transform;

impl Guest for Transform {
    fn init(config: Vec<u8>) -> Result<(), TransformError> {
        let c = parse_config(&config)?;
        *CONFIG.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
        Ok(())
    }

    fn transform_batch(events: Vec<Event>) -> Vec<Outcome> {
        let mut guard = CONFIG.lock().unwrap_or_else(|p| p.into_inner());
        let c = guard.get_or_insert_with(Config::default);
        let n = events.len();
        let out: Vec<Outcome> = events.into_iter().map(|e| transform_one(c, e)).collect();
        let (mut skipped, mut failed) = (0, 0);
        for o in &out {
            match o {
                Outcome::Skip => skipped += 1,
                Outcome::Failed(_) => failed += 1,
                _ => {}
            }
        }
        log(
            Level::Debug,
            &format!("rust-transform: {n} events, {skipped} skipped, {failed} failed"),
        );
        out
    }
}

export!(Transform);

// Native unit tests of the record logic (`cargo test -p rust-transform` on the build machine;
// the WIT imports are not callable there, so they exercise `transform_one` directly).
#[cfg(test)]
mod tests {
    use super::*;

    fn event(action: Action, data: &str) -> Event {
        Event {
            resource: "users".into(),
            action,
            id: "u1".into(),
            data: Some(data.as_bytes().to_vec()),
            before: None,
            timestamp: "2024-01-01T00:00:00Z".into(),
            source: None,
            sequence: 7,
            metadata: None,
        }
    }

    fn data_of(o: &Outcome) -> Value {
        match o {
            Outcome::Keep(e) => serde_json::from_slice(e.data.as_ref().unwrap()).unwrap(),
            _ => panic!("expected keep"),
        }
    }

    fn run(config: &str, data: &str) -> Outcome {
        let c = parse_config(config.as_bytes()).unwrap_or_else(|_| panic!("config {config}"));
        transform_one(&c, event(Action::Insert, data))
    }

    #[test]
    fn default_behaviour() {
        let o = run(
            "{}",
            r#"{"firstName":"Ada","lastName":"Lovelace","email":" Ada@Example.com ","password":"x","ssn":"1","creditCard":"2","age":36}"#,
        );
        let d = data_of(&o);
        assert_eq!(d["fullName"], "Ada Lovelace");
        assert_eq!(d["emailHash"], sha256_hex("ada@example.com"));
        assert_eq!(d["emailHash"].as_str().unwrap().len(), 64);
        assert!(
            d.get("password").is_none() && d.get("ssn").is_none() && d.get("creditCard").is_none()
        );
        assert_eq!(d["age"], 36);
        assert_eq!(d["email"], " Ada@Example.com ");
    }

    #[test]
    fn known_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn skips() {
        assert!(matches!(
            run("{}", r#"{"email":"bot@TEST.com"}"#),
            Outcome::Skip
        ));
        assert!(matches!(
            run("{}", r#"{"deletedAt":"2024-01-01"}"#),
            Outcome::Skip
        ));
        assert!(matches!(run("{}", r#"{"deleted":true}"#), Outcome::Skip));
        assert!(matches!(
            run("{}", r#"{"deletedAt":null,"deleted":false}"#),
            Outcome::Keep(_)
        ));
        assert!(matches!(
            run(r#"{"skipEmailDomain":null}"#, r#"{"email":"a@test.com"}"#),
            Outcome::Keep(_)
        ));
        assert!(matches!(
            run(r#"{"skipSoftDeleted":false}"#, r#"{"deleted":true}"#),
            Outcome::Keep(_)
        ));
    }

    #[test]
    fn deletes_pass_unchanged() {
        let c = Config::default();
        let raw = r#"{"password":"x","email":"a@test.com"}"#;
        match transform_one(&c, event(Action::Delete, raw)) {
            Outcome::Keep(e) => assert_eq!(e.data.unwrap(), raw.as_bytes()),
            _ => panic!("expected keep"),
        }
    }

    #[test]
    fn per_destination_config() {
        let d = data_of(&run(
            r#"{"strip":["password"],"hashEmail":false,"fullName":false,"rename":{"mail":"email"},"addFields":{"src":"s3db","n":1}}"#,
            r#"{"firstName":"A","lastName":"B","mail":"a@x.io","password":"p","ssn":"1"}"#,
        ));
        assert_eq!(d["email"], "a@x.io");
        assert!(d.get("mail").is_none() && d.get("password").is_none());
        assert_eq!(d["ssn"], "1");
        assert!(d.get("emailHash").is_none() && d.get("fullName").is_none());
        assert_eq!(d["src"], "s3db");
        assert_eq!(d["n"], 1);
    }

    #[test]
    fn bad_configs() {
        for (config, needle) in [
            (r#"{"bogus":1}"#, "bogus"),
            (r#"{"strip":"password"}"#, "strip"),
            (r#"{"hashEmail":"yes"}"#, "hashEmail"),
            ("[1]", "object"),
            ("{", "JSON"),
        ] {
            match parse_config(config.as_bytes()) {
                Err(TransformError::InvalidConfig(e)) => {
                    assert!(e.message.contains(needle), "{}", e.message)
                }
                _ => panic!("{config} should be invalid"),
            }
        }
        assert!(parse_config(b"").is_ok());
    }

    #[test]
    fn failures_and_fan_out() {
        match run("{}", "{not json") {
            Outcome::Failed(TransformError::InvalidRecord(e)) => assert_eq!(e.code, "invalid-json"),
            _ => panic!("expected failed"),
        }
        match run("{}", r#"{"failMe":true}"#) {
            Outcome::Failed(TransformError::InvalidRecord(e)) => {
                assert_eq!(
                    (e.code.as_str(), e.message.as_str()),
                    ("fail-me", "record asked to fail")
                )
            }
            _ => panic!("expected failed"),
        }
        match run("{}", r#"{"fanOut":3,"password":"x"}"#) {
            Outcome::Many(es) => {
                let ids: Vec<_> = es.iter().map(|e| e.id.as_str()).collect();
                assert_eq!(ids, ["u1-0", "u1-1", "u1-2"]);
                assert!(es.iter().all(|e| e.sequence == 7
                    && !String::from_utf8_lossy(e.data.as_ref().unwrap()).contains("password")));
            }
            _ => panic!("expected many"),
        }
        assert!(matches!(run("{}", r#"{"fanOut":11}"#), Outcome::Keep(_)));
        assert!(matches!(run("{}", r#"{"fanOut":0}"#), Outcome::Keep(_)));
        assert!(matches!(run("{}", "[1,2]"), Outcome::Keep(_)));
    }
}
