//! The event envelope: what senders post, what the journal stores and what drivers receive.
//!
//! Validation lives here so that intake, `replicator send` and tests agree on one definition.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::fmt;
use utoipa::ToSchema;

/// The change an event describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    Insert,
    Update,
    Delete,
}

impl Action {
    pub const ALL: [Action; 3] = [Action::Insert, Action::Update, Action::Delete];

    pub fn parse(text: &str) -> Option<Action> {
        match text {
            "insert" => Some(Action::Insert),
            "update" => Some(Action::Update),
            "delete" => Some(Action::Delete),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why one item of a posted batch was refused.
#[derive(Debug, Serialize, PartialEq, ToSchema)]
pub struct ItemError {
    pub index: usize,
    /// 1-based line in an NDJSON body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub errors: Vec<String>,
}

/// One change of one s3db record, as accepted by intake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Event {
    /// A name every destination can hold: no '/', '\\', '=', '%' or control characters.
    #[schema(pattern = r"^[^/\\=%\x00-\x1f\x7f]+$", min_length = 1)]
    pub resource: String,
    pub action: Action,
    /// Falls back to `data.id` when absent.
    #[schema(min_length = 1)]
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub data: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub before: Option<Value>,
    /// ISO-8601; the time of acceptance when absent.
    #[schema(format = DateTime)]
    pub timestamp: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub metadata: Option<Value>,
}

/// An event as the journal holds it: with its sequence and the time it was accepted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredEvent {
    pub sequence: u64,
    /// Milliseconds since the Unix epoch when intake accepted the event.
    pub received_at_ms: i64,
    pub event: Event,
    /// Set on copies of existing records sent by `replicator backfill`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillTag>,
}

/// What marks a backfilled copy: it yields to any live event of its key accepted after
/// `since`, and goes only to `replicators` (all when empty).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BackfillTag {
    pub since: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub replicators: Vec<String>,
}

const FIELDS: [&str; 8] = [
    "resource",
    "action",
    "id",
    "data",
    "before",
    "timestamp",
    "source",
    "metadata",
];

/// Checks one posted JSON value and turns it into an [`Event`].
///
/// Every problem is reported (not only the first) so a sender can fix an item in one go.
/// `now` fills in a missing `timestamp`.
pub fn parse_event(value: Value, now: &str) -> Result<Event, Vec<String>> {
    let Value::Object(mut map) = value else {
        return Err(vec![format!(
            "expected a JSON object, found {}",
            kind_of(&value)
        )]);
    };
    let mut problems = Vec::new();
    for key in map.keys() {
        if !FIELDS.contains(&key.as_str()) {
            problems.push(format!(
                "unknown field \"{key}\" (expected one of: {})",
                FIELDS.join(", ")
            ));
        }
    }
    let resource = match map.remove("resource") {
        Some(Value::String(s)) => match resource_name_problem(&s) {
            None => Some(s),
            Some(problem) => {
                problems.push(problem);
                None
            }
        },
        Some(other) => {
            problems.push(format!(
                "\"resource\" must be a string, found {}",
                kind_of(&other)
            ));
            None
        }
        None => {
            problems.push("missing \"resource\"".into());
            None
        }
    };
    let action = match map.remove("action") {
        Some(Value::String(s)) => match Action::parse(&s) {
            Some(a) => Some(a),
            None => {
                problems.push(format!(
                    "unknown action \"{s}\" (expected insert, update or delete)"
                ));
                None
            }
        },
        Some(other) => {
            problems.push(format!(
                "\"action\" must be a string, found {}",
                kind_of(&other)
            ));
            None
        }
        None => {
            problems.push("missing \"action\"".into());
            None
        }
    };
    let data = optional_object(&mut map, "data", &mut problems);
    let before = optional_object(&mut map, "before", &mut problems);
    let id = match map.remove("id") {
        Some(v) => id_text(&v, "id", &mut problems),
        None => match data.as_ref().and_then(|d| d.get("id")) {
            Some(v) => id_text(v, "data.id", &mut problems),
            None => {
                problems.push("missing \"id\" (and no \"data.id\" to fall back on)".into());
                None
            }
        },
    };
    if let Some(action) = action {
        problems.extend(missing_data_problem(action, data.as_ref()));
    }
    let timestamp = match map.remove("timestamp") {
        None | Some(Value::Null) => Some(now.to_string()),
        Some(Value::String(s)) => {
            problems.extend(timestamp_problem(&s));
            Some(s)
        }
        Some(other) => {
            problems.push(format!(
                "\"timestamp\" must be a string, found {}",
                kind_of(&other)
            ));
            None
        }
    };
    let source = match map.remove("source") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            problems.push(format!(
                "\"source\" must be a string, found {}",
                kind_of(&other)
            ));
            None
        }
    };
    let metadata = optional_object(&mut map, "metadata", &mut problems);
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(Event {
        resource: resource.unwrap_or_default(),
        action: action.unwrap_or(Action::Insert),
        id: id.unwrap_or_default(),
        data,
        before,
        timestamp: timestamp.unwrap_or_default(),
        source,
        metadata,
    })
}

/// Why `name` cannot be a resource name, if it cannot: every destination must be able to hold
/// it (s3db keys it as `resource=<name>/`, so `/`, `\\`, `=`, `%` and `.`/`..` would change the
/// layout; SQL and queue names are made from it too).
pub fn resource_name_problem(name: &str) -> Option<String> {
    if name.trim().is_empty() {
        Some("\"resource\" must not be empty".into())
    } else if name.contains(['/', '\\', '=', '%']) || name.chars().any(char::is_control) {
        Some(format!(
            "\"resource\" \"{name}\" cannot be held by every destination (no '/', '\\', '=', '%' or control characters)"
        ))
    } else if name == "." || name == ".." {
        Some(format!("\"resource\" cannot be \"{name}\""))
    } else {
        None
    }
}

/// Inserts and updates carry the record.
fn missing_data_problem(action: Action, data: Option<&Value>) -> Option<String> {
    (matches!(action, Action::Insert | Action::Update) && data.is_none())
        .then(|| format!("\"data\" is required for an {action} event"))
}

fn timestamp_problem(timestamp: &str) -> Option<String> {
    chrono::DateTime::parse_from_rfc3339(timestamp).is_err().then(|| {
        format!(
            "\"timestamp\" must be an ISO-8601 date-time such as 2026-11-23T10:00:00.000Z, found \"{timestamp}\""
        )
    })
}

impl Event {
    /// Checks an event made by a plugin by the rules intake applies to posted ones.
    pub fn check(&self) -> Result<(), Vec<String>> {
        let mut problems: Vec<String> = resource_name_problem(&self.resource).into_iter().collect();
        if self.id.is_empty() {
            problems.push("\"id\" must not be empty".into());
        }
        for (field, value) in [
            ("data", &self.data),
            ("before", &self.before),
            ("metadata", &self.metadata),
        ] {
            if let Some(v) = value.as_ref().filter(|v| !v.is_object()) {
                problems.push(format!(
                    "\"{field}\" must be an object or null, found {}",
                    kind_of(v)
                ));
            }
        }
        problems.extend(missing_data_problem(self.action, self.data.as_ref()));
        problems.extend(timestamp_problem(&self.timestamp));
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

fn optional_object(
    map: &mut Map<String, Value>,
    key: &str,
    problems: &mut Vec<String>,
) -> Option<Value> {
    match map.remove(key) {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(other) => {
            problems.push(format!(
                "\"{key}\" must be an object or null, found {}",
                kind_of(&other)
            ));
            None
        }
    }
}

fn id_text(value: &Value, field: &str, problems: &mut Vec<String>) -> Option<String> {
    match value {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::String(_) => {
            problems.push(format!("\"{field}\" must not be empty"));
            None
        }
        Value::Number(n) => Some(n.to_string()),
        other => {
            problems.push(format!(
                "\"{field}\" must be a string or a number, found {}",
                kind_of(other)
            ));
            None
        }
    }
}

/// A short name of a JSON value's type for error messages.
pub fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The current time as the envelope writes it (`2026-11-23T10:00:00.000Z`).
pub fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

/// A time as envelopes carry it: RFC 3339, milliseconds, UTC (`Z`).
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn accepts_a_full_event_and_falls_back_to_data_id() {
        let e = parse_event(
            json!({"resource": "users", "action": "insert", "data": {"id": 7, "name": "Ana"}}),
            "2026-11-23T10:00:00.000Z",
        )
        .unwrap();
        assert_eq!(e.id, "7");
        assert_eq!(e.timestamp, "2026-11-23T10:00:00.000Z");
    }

    #[test]
    fn reports_every_problem() {
        let problems = parse_event(
            json!({"resource": "", "action": "inserted", "id": [], "extra": 1}),
            "now",
        )
        .unwrap_err();
        assert_eq!(problems.len(), 4, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p.contains("unknown action \"inserted\""))
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("unknown field \"extra\""))
        );
    }

    #[test]
    fn resource_names_every_destination_can_hold() {
        for bad in ["a/b", "../x", "..", "a=b", "50%", "a\\b", " "] {
            let r = parse_event(json!({"resource": bad, "action": "delete", "id": "1"}), "t");
            assert!(r.is_err(), "{bad:?} accepted");
        }
        let ok = parse_event(
            json!({"resource": "user-events.v2", "action": "delete", "id": "1"}),
            "t",
        );
        assert!(ok.is_ok(), "{ok:?}");
    }

    #[test]
    fn a_plugin_event_is_checked_like_a_posted_one() {
        let mut e = parse_event(
            json!({"resource": "u", "action": "update", "id": "1", "data": {}}),
            "2026-11-23T10:00:00.000Z",
        )
        .unwrap();
        assert_eq!(e.check(), Ok(()));
        e.data = Some(json!([1, 2]));
        e.id = String::new();
        e.resource = "a/b".into();
        let problems = e.check().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(
            problems
                .iter()
                .any(|p| p == "\"data\" must be an object or null, found an array")
        );
    }

    #[test]
    fn update_needs_data_but_delete_does_not() {
        assert!(parse_event(json!({"resource": "u", "action": "update", "id": "1"}), "t").is_err());
        let ok = parse_event(json!({"resource": "u", "action": "delete", "id": "1"}), "t");
        assert!(ok.is_ok(), "{ok:?}");
    }
}
