//! What the journal keeps besides events: dead letters and replication-log entries.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::event::StoredEvent;

/// One failed attempt of a delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Attempt {
    pub at: String,
    pub error: String,
}

/// A delivery the pipeline gave up on, with everything needed to understand and redrive it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetter {
    pub id: u64,
    pub replicator: String,
    pub resource: String,
    pub destination: String,
    pub action: String,
    pub record_id: String,
    pub sequence: u64,
    pub error: String,
    pub attempts: Vec<Attempt>,
    pub dead_lettered_at: String,
    /// How many times it was redriven before.
    pub redrives: u32,
    /// The resource key of the route it was on (`*` for a route taking every resource).
    #[serde(default)]
    pub route: String,
    /// Whether `event` is already the output of the route's transform (failed at delivery),
    /// rather than the original (failed in the transform).
    #[serde(default)]
    pub transformed: bool,
    pub event: StoredEvent,
}

/// Which dead letters a listing, redrive or discard applies to.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetterFilter {
    pub replicator: Option<String>,
    pub resource: Option<String>,
    pub id: Option<String>,
    /// A substring of the error message.
    pub error: Option<String>,
}

impl DeadLetterFilter {
    pub fn matches(&self, d: &DeadLetter) -> bool {
        self.replicator.as_ref().is_none_or(|r| *r == d.replicator)
            && self.resource.as_ref().is_none_or(|r| *r == d.resource)
            && self.id.as_ref().is_none_or(|i| *i == d.record_id)
            && self
                .error
                .as_ref()
                .is_none_or(|e| d.error.contains(e.as_str()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LogStatus {
    Success,
    Failed,
    DeadLettered,
}

/// One line of the replication log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LogEntry {
    #[serde(default)]
    pub log_id: u64,
    pub at: String,
    pub replicator: String,
    pub resource: String,
    pub destination: String,
    pub action: String,
    pub id: String,
    pub sequence: u64,
    pub status: LogStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub attempts: u32,
}

#[derive(Debug, Clone, Default)]
pub struct LogFilter {
    pub replicator: Option<String>,
    pub resource: Option<String>,
    pub status: Option<LogStatus>,
    pub id: Option<String>,
}

impl LogFilter {
    pub fn matches(&self, e: &LogEntry) -> bool {
        self.replicator.as_ref().is_none_or(|r| *r == e.replicator)
            && self.resource.as_ref().is_none_or(|r| *r == e.resource)
            && self.status.is_none_or(|s| s == e.status)
            && self.id.as_ref().is_none_or(|i| *i == e.id)
    }
}

/// A `replicator backfill` run, from start until every replicator is past its last copy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Backfill {
    pub id: u64,
    /// The journal head when it started: live events after it win over its copies.
    pub since: u64,
    #[serde(default)]
    pub replicators: Vec<String>,
    /// The source, with secrets masked.
    pub source: String,
    pub started_at: String,
    /// The journal head when it finished; `None` while it runs.
    #[serde(default)]
    pub finished_at_head: Option<u64>,
}

/// Records for the host's unit tests.
#[cfg(test)]
pub mod fixtures {
    use super::DeadLetter;
    use crate::event::{Action, Event, StoredEvent};

    /// An insert of `users/<id>`.
    pub fn insert(id: &str) -> Event {
        Event {
            resource: "users".into(),
            action: Action::Insert,
            id: id.into(),
            data: Some(serde_json::json!({"id": id})),
            before: None,
            timestamp: "2026-11-23T10:00:00.000Z".into(),
            source: None,
            metadata: None,
        }
    }

    /// A dead letter of replicator `replicator` for the insert of `users/<id>` at sequence 1.
    pub fn dead_letter(replicator: &str, id: &str) -> DeadLetter {
        DeadLetter {
            id: 0,
            replicator: replicator.into(),
            resource: "users".into(),
            destination: "users".into(),
            action: "insert".into(),
            record_id: id.into(),
            sequence: 1,
            error: "e".into(),
            attempts: Vec::new(),
            dead_lettered_at: String::new(),
            redrives: 0,
            route: "users".into(),
            transformed: false,
            event: StoredEvent {
                sequence: 1,
                received_at_ms: 1,
                event: insert(id),
                backfill: None,
            },
        }
    }
}
