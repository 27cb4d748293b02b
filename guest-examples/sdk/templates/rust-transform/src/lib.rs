//! {{name}}: a replicator transform, driven by its config (every key optional):
//!
//! ```json
//! {"drop": ["password"], "rename": {"mail": "email"}, "skipResources": ["audit"]}
//! ```
//!
//! - events of a resource in `skipResources` are skipped;
//! - deletes pass through unchanged;
//! - inserts and updates lose the `drop` fields, then get the `rename` fields renamed (replacing
//!   a field of the new name), in `data` and in `before`; a record with nothing to change is kept
//!   as it came;
//! - a record whose `data` or `before` is not a JSON object fails (`invalid-record`, code
//!   `not-an-object`), and only that record.

use replicator_plugin::{Action, Error, Event, Json, Outcome, Transform, export_transform};
use serde_json::{Map, Value};

struct DropRename {
    drop: Vec<String>,
    rename: Vec<(String, String)>,
    skip_resources: Vec<String>,
}

fn strings(key: &str, value: Value) -> Result<Vec<String>, Error> {
    let bad = || Error::invalid_config(format!("`{key}` must be an array of strings"));
    let Value::Array(items) = value else {
        return Err(bad());
    };
    items
        .into_iter()
        .map(|item| match item {
            Value::String(s) => Ok(s),
            _ => Err(bad()),
        })
        .collect()
}

impl DropRename {
    /// `drop` then `rename` on one document; `None` when it has nothing to change.
    fn shape(&self, which: &str, doc: &Json) -> Result<Option<Json>, Error> {
        let not_an_object =
            || Error::new("not-an-object", format!("`{which}` is not a JSON object"));
        let Value::Object(mut fields) = doc.value().map_err(|_| not_an_object())? else {
            return Err(not_an_object());
        };
        let mut changed = false;
        for name in &self.drop {
            changed |= fields.shift_remove(name).is_some();
        }
        for (old, new) in &self.rename {
            if let Some(value) = fields.shift_remove(old) {
                fields.insert(new.clone(), value);
                changed = true;
            }
        }
        Ok(changed.then(|| Json::from(Value::Object(fields))))
    }

    /// The outcome of an insert or update; `Err` when the record is invalid.
    fn apply(&self, event: &Event) -> Result<Outcome, Error> {
        let Some(data) = &event.data else {
            return Ok(Outcome::Keep);
        };
        let data = self.shape("data", data)?;
        let before = match &event.before {
            Some(before) => self.shape("before", before)?,
            None => None,
        };
        Ok(match (data, before) {
            (None, None) => Outcome::Keep,
            (data, before) => Outcome::Update { data, before },
        })
    }
}

impl Transform for DropRename {
    fn init(config: Json) -> Result<Self, Error> {
        let config: Map<String, Value> = config
            .parse()
            .map_err(|e| Error::invalid_config(format!("the config must be a JSON object: {e}")))?;
        let mut t = DropRename {
            drop: Vec::new(),
            rename: Vec::new(),
            skip_resources: Vec::new(),
        };
        for (key, value) in config {
            match key.as_str() {
                "drop" => t.drop = strings(&key, value)?,
                "skipResources" => t.skip_resources = strings(&key, value)?,
                "rename" => {
                    let Value::Object(pairs) = value else {
                        return Err(Error::invalid_config("`rename` must be an object"));
                    };
                    for (old, new) in pairs {
                        let Value::String(new) = new else {
                            let message = format!("`rename.{old}` must be a string");
                            return Err(Error::invalid_config(message));
                        };
                        t.rename.push((old, new));
                    }
                }
                _ => return Err(Error::invalid_config(format!("unknown config key `{key}`"))),
            }
        }
        Ok(t)
    }

    fn transform(&mut self, event: Event) -> Result<Outcome, Error> {
        if self.skip_resources.contains(&event.resource) {
            return Ok(Outcome::Skip);
        }
        if event.action == Action::Delete {
            return Ok(Outcome::Keep);
        }
        Ok(self.apply(&event).unwrap_or_else(Outcome::Fail))
    }
}

export_transform!(DropRename);

// `cargo test` runs these natively: the logic needs no host.
#[cfg(test)]
mod tests {
    use super::*;

    fn transform(config: &str, event: Event) -> Result<Outcome, Error> {
        DropRename::init(Json::from(config))?.transform(event)
    }

    fn insert(data: &str) -> Event {
        Event {
            resource: "users".into(),
            action: Action::Insert,
            id: "u1".into(),
            data: Some(Json::from(data)),
            ..Event::default()
        }
    }

    #[test]
    fn drops_then_renames_in_data_and_before() {
        let config = r#"{"drop":["password"],"rename":{"mail":"email"}}"#;
        let mut event = insert(r#"{"mail":"a@x.io","password":"p","n":1}"#);
        event.before = Some(Json::from(r#"{"password":"q","n":0}"#));
        let Ok(Outcome::Update { data, before }) = transform(config, event) else {
            panic!("expected update");
        };
        assert_eq!(data.unwrap().as_bytes(), br#"{"n":1,"email":"a@x.io"}"#);
        assert_eq!(before.unwrap().as_bytes(), br#"{"n":0}"#);
    }

    #[test]
    fn keeps_skips_and_fails() {
        let config = r#"{"drop":["password"],"skipResources":["audit"]}"#;
        assert_eq!(transform(config, insert(r#"{"n":1}"#)), Ok(Outcome::Keep));
        let mut audit = insert(r#"{"n":1}"#);
        audit.resource = "audit".into();
        assert_eq!(transform(config, audit), Ok(Outcome::Skip));
        let mut delete = insert(r#"{"password":"p"}"#);
        delete.action = Action::Delete;
        assert_eq!(transform(config, delete), Ok(Outcome::Keep));
        for data in ["[1]", "{nope"] {
            let Ok(Outcome::Fail(e)) = transform(config, insert(data)) else {
                panic!("expected failed");
            };
            assert_eq!(e.code, "not-an-object");
        }
    }

    #[test]
    fn bad_configs_name_their_key() {
        for (config, key) in [
            (r#"{"drop":"password"}"#, "drop"),
            (r#"{"rename":{"a":1}}"#, "rename.a"),
            (r#"{"skipResources":[1]}"#, "skipResources"),
            (r#"{"bogus":true}"#, "bogus"),
            ("[]", "object"),
        ] {
            let Err(e) = DropRename::init(Json::from(config)) else {
                panic!("{config} should be refused");
            };
            assert_eq!(e.code, "invalid-config");
            assert!(e.message.contains(key), "{}", e.message);
        }
    }
}
