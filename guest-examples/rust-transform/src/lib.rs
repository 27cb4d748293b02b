//! Example batch transform: the transforms of s3db.js's ReplicatorPlugin docs, driven by a
//! JSON config given to `init` (see README.md for the keys).
//!
//! For insert/update events whose `data` is a JSON object, in this order:
//! 1. `failMe: true` → `failed(invalid-record {code: "fail-me"})` (lets tests exercise failures);
//! 2. soft-deleted records (`deletedAt` non-null, or `deleted: true`) → skip;
//! 3. `email` ending with `skipEmailDomain` (default `@test.com`, case-insensitive) → skip;
//! 4. `rename` old → new fields;
//! 5. `fullName` = `firstName + " " + lastName` when both exist;
//! 6. `emailHash` = lowercase hex SHA-256 of the email, lowercased and trimmed (hashed by the
//!    host through the `digest` import);
//! 7. remove the `strip` fields (default `password`, `ssn`, `creditCard`);
//! 8. add the `addFields` (overwriting);
//! 9. `fanOut: n` (integer 1..=10) → `many` with n copies whose ids are `<id>-0` … `<id>-<n-1>`.
//!
//! `before` gets steps 4–8 too (so stripped fields don't leak through it). Deletes pass through
//! unchanged; invalid JSON in `data` or `before` fails that record only.

mod rules;

use replicator_plugin::{
    Action, Error, Event, Json, Outcome, Transform, digest, export_transform, log,
};
use rules::{Config, Verdict};

// The benchmark builds this example with a bump arena per call as its allocator (feature
// `bench-arena`, guest-examples/bench-arena); the example itself uses Rust's default one.
#[cfg(feature = "bench-arena")]
use bench_arena::{begin_call, persistent};

#[cfg(not(feature = "bench-arena"))]
fn begin_call() {}

#[cfg(not(feature = "bench-arena"))]
fn persistent<R>(f: impl FnOnce() -> R) -> R {
    f()
}

/// SHA-256 by the host, at native speed.
fn host_sha256_hex(s: &str) -> String {
    digest::sha256(s)
}

fn transform_one(c: &Config, event: Event, sha256_hex: rules::Sha256Hex) -> Outcome {
    if event.action == Action::Delete {
        return Outcome::Keep;
    }
    let Some(data) = event.data.as_deref() else {
        return Outcome::Keep;
    };
    match rules::apply(c, data, event.before.as_deref(), sha256_hex) {
        Verdict::Unchanged => Outcome::Keep,
        Verdict::Skip => Outcome::Skip,
        Verdict::Failed { code, message } => Outcome::fail(code, message),
        // Only the changed documents cross back to the host.
        Verdict::Changed {
            data,
            before,
            fan_out: None,
        } => Outcome::Update {
            data: Some(Json(data)),
            before: before.map(Json),
        },
        Verdict::Changed {
            data,
            before,
            fan_out: Some(n),
        } => {
            let data = Json(data);
            let before = before.map(Json).or(event.before.clone());
            Outcome::Many(
                (0..n)
                    .map(|i| Event {
                        id: format!("{}-{i}", event.id),
                        data: Some(data.clone()),
                        before: before.clone(),
                        ..event.clone()
                    })
                    .collect(),
            )
        }
    }
}

struct Example {
    config: Config,
}

impl Transform for Example {
    fn init(config: Json) -> Result<Self, Error> {
        // The config outlives every call.
        persistent(|| rules::parse_config(&config))
            .map(|config| Example { config })
            .map_err(Error::invalid_config)
    }

    fn transform(&mut self, event: Event) -> Result<Outcome, Error> {
        Ok(transform_one(&self.config, event, host_sha256_hex))
    }

    /// The per-event mapping, with the arena reset first and a summary logged.
    fn transform_batch(&mut self, events: Vec<Event>) -> Vec<Result<Outcome, Error>> {
        begin_call();
        let n = events.len();
        let out: Vec<Result<Outcome, Error>> = events
            .into_iter()
            .map(|e| Ok(transform_one(&self.config, e, host_sha256_hex)))
            .collect();
        let (mut skipped, mut failed) = (0, 0);
        for o in &out {
            match o {
                Ok(Outcome::Skip) => skipped += 1,
                Ok(Outcome::Fail(_)) | Err(_) => failed += 1,
                _ => {}
            }
        }
        log::debug(&format!(
            "rust-transform: {n} events, {skipped} skipped, {failed} failed"
        ));
        out
    }
}

export_transform!(Example);

// Native unit tests of the record logic (`cargo test -p rust-transform` on the build machine;
// the WIT imports are not callable there, so they exercise `transform_one` directly).
#[cfg(test)]
mod tests {
    use super::*;
    use rules::{parse_config, sha256_hex};
    use serde_json::Value;

    fn event(action: Action, data: &str) -> Event {
        Event {
            resource: "users".into(),
            action,
            id: "u1".into(),
            data: Some(data.into()),
            timestamp: "2024-01-01T00:00:00Z".into(),
            sequence: 7,
            ..Event::default()
        }
    }

    fn data_of(o: &Outcome) -> Value {
        match o {
            Outcome::Update { data, .. } => data.as_ref().unwrap().parse().unwrap(),
            _ => panic!("expected update"),
        }
    }

    fn run(config: &str, data: &str) -> Outcome {
        let c = parse_config(config.as_bytes()).unwrap_or_else(|_| panic!("config {config}"));
        transform_one(&c, event(Action::Insert, data), sha256_hex)
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
    fn emails_are_lowercased_beyond_ascii() {
        let d = data_of(&run("{}", r#"{"email":" ÉMILE@Exemple.FR "}"#));
        assert_eq!(d["emailHash"], sha256_hex("émile@exemple.fr"));
        let d = data_of(&run("{}", r#"{"email":"Ada@X.io"}"#));
        assert_eq!(d["emailHash"], sha256_hex("ada@x.io"));
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
            Outcome::Update { .. }
        ));
        assert!(matches!(
            run(r#"{"skipEmailDomain":null}"#, r#"{"email":"a@test.com"}"#),
            Outcome::Update { .. }
        ));
        assert!(matches!(
            run(r#"{"skipSoftDeleted":false}"#, r#"{"deleted":true}"#),
            Outcome::Update { .. }
        ));
    }

    #[test]
    fn deletes_pass_unchanged() {
        let c = Config::default();
        let raw = r#"{"password":"x","email":"a@test.com"}"#;
        assert!(matches!(
            transform_one(&c, event(Action::Delete, raw), sha256_hex),
            Outcome::Keep
        ));
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
    fn names_from_the_config_are_escaped() {
        let o = run(
            r#"{"rename":{"mail":"e\"mail"},"addFields":{"a\\b":"\"x\""}}"#,
            r#"{"mail":"a@x.io","n":1}"#,
        );
        let d = data_of(&o);
        assert_eq!(d["e\"mail"], "a@x.io");
        assert_eq!(d["a\\b"], "\"x\"");
        assert_eq!(d["n"], 1);
    }

    #[test]
    fn invalid_utf8_fails_the_record() {
        match run("{}", "{\"email\":\"\u{FFFD}\"}") {
            Outcome::Update { .. } => {}
            _ => panic!("valid UTF-8 is accepted"),
        }
        let c = Config::default();
        let mut e = event(Action::Insert, "{}");
        e.data = Some(Json(b"{\"email\":\"\xff\"}".to_vec()));
        match transform_one(&c, e, sha256_hex) {
            Outcome::Fail(e) => {
                assert_eq!(e.code, "invalid-json");
                assert!(e.message.contains("UTF-8"), "{}", e.message);
            }
            _ => panic!("expected failed"),
        }
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
                Err(message) => assert!(message.contains(needle), "{message}"),
                Ok(_) => panic!("{config} should be invalid"),
            }
        }
        assert!(parse_config(b"").is_ok());
    }

    #[test]
    fn failures_and_fan_out() {
        match run("{}", "{not json") {
            Outcome::Fail(e) => assert_eq!(e.code, "invalid-json"),
            _ => panic!("expected failed"),
        }
        match run("{}", r#"{"failMe":true}"#) {
            Outcome::Fail(e) => {
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
                    && !e.data.as_ref().unwrap().to_string().contains("password")));
            }
            _ => panic!("expected many"),
        }
        assert!(matches!(
            run("{}", r#"{"fanOut":11}"#),
            Outcome::Update { .. }
        ));
        assert!(matches!(
            run("{}", r#"{"fanOut":0}"#),
            Outcome::Update { .. }
        ));
        assert!(matches!(run("{}", "[1,2]"), Outcome::Keep));
        // Not an object, and not JSON either: a failure, not a pass-through.
        match run("{}", "[1,") {
            Outcome::Fail(e) => assert_eq!(e.code, "invalid-json"),
            _ => panic!("expected failed"),
        }
    }

    #[test]
    fn escaped_field_names_are_decoded() {
        let d = data_of(&run(
            "{}",
            r#"{"pass\u0077ord":"x","a\"b":1,"email":"\u0041@x.io"}"#,
        ));
        assert!(d.get("password").is_none());
        assert_eq!(d["a\"b"], 1);
        assert_eq!(d["emailHash"], sha256_hex("a@x.io"));
    }

    #[test]
    fn a_repeated_field_means_its_last_value() {
        let raw = r#"{"email":"a@test.com","password":"x","email":"b@x.io","password":"y"}"#;
        let o = run("{}", raw);
        let Outcome::Update { data, .. } = &o else {
            panic!("expected update")
        };
        let text = data.as_ref().unwrap().to_string();
        assert!(!text.contains("password"), "{text}");
        assert_eq!(data_of(&o)["emailHash"], sha256_hex("b@x.io"));
    }
}
