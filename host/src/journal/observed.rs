//! What change capture has seen of each record of each source, kept beside the events it
//! made: an observation of a record's current state becomes an event only when it differs
//! from what was seen, in the transaction that appends the event, so a crash never splits them.

use redb::{ReadableDatabase, ReadableTable, TableDefinition};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{EVENTS, Journal, JournalError};
use crate::event::{Action, Event, StoredEvent};

/// `source \0 resource \0 id` -> [`Seen`] (JSON), for records that exist.
pub(super) const OBSERVED: TableDefinition<&str, &[u8]> = TableDefinition::new("observed");
/// `source` -> where its interrupted polling pass resumes (opaque to the journal).
pub(super) const CAPTURE_POSITIONS: TableDefinition<&str, &[u8]> =
    TableDefinition::new("capture_positions");

/// A record of a source: its resource and id.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordKey {
    pub resource: String,
    pub id: String,
}

/// The last state seen of a record that exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seen {
    /// The object's stamp (see [`crate::s3db::store::Stamp`]).
    pub fingerprint: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub etag: Option<String>,
    /// Of the stored content: equal digests, nothing to replicate.
    pub digest: String,
    pub last_modified_ms: i64,
    /// Read so soon after its last change that a later change could still carry the same
    /// stamp (S3 keeps whole seconds): polling reads it again, whatever its stamp.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unsettled: bool,
    /// The highest S3 notification `sequencer` handled for the record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sequencer: Option<String>,
}

/// A record's state as just read from the bucket.
#[derive(Debug, Clone)]
pub enum Observed {
    Present { seen: Seen, data: Value },
    Absent,
}

#[derive(Debug, Clone)]
pub struct Observation {
    pub resource: String,
    pub id: String,
    pub state: Observed,
    /// The event's timestamp: the object's last-modified time, or when its absence was seen.
    pub timestamp: String,
}

/// What an observation made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Appended {
        sequence: u64,
        action: Action,
    },
    /// Same content as seen (a duplicate or stale notification, an untouched object).
    Unchanged,
}

fn key(source: &str, resource: &str, id: &str) -> String {
    format!("{source}\0{resource}\0{id}")
}

/// `true` when sequencer `a` is later than `b`: S3 sequencers are hex strings of varying
/// length, compared as AWS says, after padding the shorter with zeros on the right.
pub fn sequencer_after(a: &str, b: &str) -> bool {
    let width = a.len().max(b.len());
    let pad = |s: &str| format!("{:0<width$}", s.to_ascii_uppercase());
    pad(a) > pad(b)
}

impl Journal {
    /// Turns observations into events where they differ from what was seen, stores what is
    /// seen now and, when given, the source's polling position: all in one transaction.
    pub async fn observe(
        &self,
        source: &str,
        observations: Vec<Observation>,
        position: Option<Vec<u8>>,
    ) -> Result<Vec<Outcome>, JournalError> {
        let source = source.to_string();
        let received_at_ms = chrono::Utc::now().timestamp_millis();
        self.write(move |txn| {
            let mut observed = txn.tx.open_table(OBSERVED)?;
            let mut events = txn.tx.open_table(EVENTS)?;
            let mut outcomes = Vec::with_capacity(observations.len());
            for o in &observations {
                let k = key(&source, &o.resource, &o.id);
                let before: Option<Seen> = match observed.get(k.as_str())? {
                    Some(v) => Some(serde_json::from_slice(v.value())?),
                    None => None,
                };
                let (action, data) = match (&o.state, &before) {
                    (Observed::Present { seen, .. }, Some(was)) if was.digest == seen.digest => {
                        let mut now = seen.clone();
                        now.sequencer = later(&was.sequencer, &seen.sequencer);
                        if &now != was {
                            observed.insert(k.as_str(), serde_json::to_vec(&now)?.as_slice())?;
                        }
                        outcomes.push(Outcome::Unchanged);
                        continue;
                    }
                    (Observed::Present { seen, data }, _) => {
                        let mut now = seen.clone();
                        if let Some(was) = &before {
                            now.sequencer = later(&was.sequencer, &seen.sequencer);
                        }
                        observed.insert(k.as_str(), serde_json::to_vec(&now)?.as_slice())?;
                        let action = if before.is_some() {
                            Action::Update
                        } else {
                            Action::Insert
                        };
                        (action, Some(data.clone()))
                    }
                    (Observed::Absent, Some(_)) => {
                        observed.remove(k.as_str())?;
                        (Action::Delete, None)
                    }
                    (Observed::Absent, None) => {
                        outcomes.push(Outcome::Unchanged);
                        continue;
                    }
                };
                let sequence = txn.counters.next_sequence;
                let bytes = serde_json::to_vec(&StoredEvent {
                    sequence,
                    received_at_ms,
                    event: Event {
                        resource: o.resource.clone(),
                        action,
                        id: o.id.clone(),
                        data,
                        before: None,
                        timestamp: o.timestamp.clone(),
                        source: Some(source.clone()),
                        metadata: None,
                    },
                    backfill: None,
                })?;
                events.insert(sequence, bytes.as_slice())?;
                txn.counters.live_bytes += bytes.len() as u64;
                txn.counters.next_sequence += 1;
                outcomes.push(Outcome::Appended { sequence, action });
            }
            if let Some(p) = &position {
                txn.tx
                    .open_table(CAPTURE_POSITIONS)?
                    .insert(source.as_str(), p.as_slice())?;
            }
            Ok(outcomes)
        })
        .await
    }

    /// What was seen of each of `records` of `source`.
    pub async fn seen(
        &self,
        source: &str,
        records: Vec<RecordKey>,
    ) -> Result<Vec<Option<Seen>>, JournalError> {
        let source = source.to_string();
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(OBSERVED)?;
            let mut out = Vec::with_capacity(records.len());
            for r in &records {
                out.push(
                    match table.get(key(&source, &r.resource, &r.id).as_str())? {
                        Some(v) => Some(serde_json::from_slice(v.value())?),
                        None => None,
                    },
                );
            }
            Ok(out)
        })
        .await
    }

    /// The records of `resource` seen in `source` with ids after `after` and up to `through`
    /// (to the end without it), in id order.
    pub async fn seen_between(
        &self,
        source: &str,
        resource: &str,
        after: Option<String>,
        through: Option<String>,
    ) -> Result<Vec<(String, Seen)>, JournalError> {
        let prefix = key(source, resource, "");
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(OBSERVED)?;
            let start = format!("{prefix}{}", after.as_deref().unwrap_or(""));
            let mut out = Vec::new();
            for item in table.range(start.as_str()..)? {
                let (k, v) = item?;
                let Some(id) = k.value().strip_prefix(prefix.as_str()) else {
                    break;
                };
                if after.as_deref() == Some(id) {
                    continue;
                }
                if through.as_deref().is_some_and(|t| id > t) {
                    break;
                }
                out.push((id.to_string(), serde_json::from_slice(v.value())?));
            }
            Ok(out)
        })
        .await
    }

    /// Where `source`'s interrupted polling pass resumes, as last stored by [`Journal::observe`].
    pub async fn capture_position(&self, source: &str) -> Result<Option<Vec<u8>>, JournalError> {
        let source = source.to_string();
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(CAPTURE_POSITIONS)?;
            Ok(table.get(source.as_str())?.map(|v| v.value().to_vec()))
        })
        .await
    }
}

fn later(a: &Option<String>, b: &Option<String>) -> Option<String> {
    match (a, b) {
        (Some(x), Some(y)) if sequencer_after(x, y) => Some(x.clone()),
        (_, Some(y)) => Some(y.clone()),
        (x, None) => x.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn present(digest: &str, sequencer: Option<&str>) -> Observed {
        Observed::Present {
            seen: Seen {
                fingerprint: format!("f-{digest}"),
                etag: None,
                digest: digest.into(),
                last_modified_ms: 1,
                unsettled: false,
                sequencer: sequencer.map(str::to_string),
            },
            data: serde_json::json!({"id": "a", "v": digest}),
        }
    }

    fn observation(state: Observed) -> Observation {
        Observation {
            resource: "users".into(),
            id: "a".into(),
            state,
            timestamp: "2026-12-03T00:00:00.000Z".into(),
        }
    }

    #[tokio::test]
    async fn only_changes_become_events_and_the_kind_follows_what_was_seen() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), 1 << 20).unwrap();
        let run = |states: Vec<Observed>| {
            let journal = journal.clone();
            async move {
                journal
                    .observe("src", states.into_iter().map(observation).collect(), None)
                    .await
                    .unwrap()
            }
        };
        let actions = |outcomes: Vec<Outcome>| -> Vec<Option<Action>> {
            outcomes
                .into_iter()
                .map(|o| match o {
                    Outcome::Appended { action, .. } => Some(action),
                    Outcome::Unchanged => None,
                })
                .collect()
        };
        let got = actions(
            run(vec![
                Observed::Absent,
                present("1", Some("0A")),
                present("1", None),
                present("2", None),
                Observed::Absent,
                Observed::Absent,
                present("2", None),
            ])
            .await,
        );
        use Action::*;
        assert_eq!(
            got,
            vec![
                None,
                Some(Insert),
                None,
                Some(Update),
                Some(Delete),
                None,
                Some(Insert)
            ]
        );
        let events = journal.read(1, 10).await.unwrap();
        assert_eq!(events.len(), 4);
        assert_eq!(events[0].event.source.as_deref(), Some("src"));
        assert_eq!(events[1].event.data.as_ref().unwrap()["v"], "2");
        assert_eq!(events[2].event.data, None);

        // The sequencer only moves forward, even when an unchanged read carries none.
        run(vec![present("2", Some("0B")), present("2", Some("0A"))]).await;
        let seen = journal
            .seen(
                "src",
                vec![RecordKey {
                    resource: "users".into(),
                    id: "a".into(),
                }],
            )
            .await
            .unwrap();
        assert_eq!(seen[0].as_ref().unwrap().sequencer.as_deref(), Some("0B"));
        let between = journal
            .seen_between("src", "users", None, None)
            .await
            .unwrap();
        assert_eq!(between.len(), 1);
        assert!(
            journal
                .seen_between("src", "users", Some("a".into()), None)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            journal
                .seen_between("src", "user", None, None)
                .await
                .unwrap()
                .is_empty(),
            "a resource whose name starts another's sees only its own"
        );
    }

    #[test]
    fn sequencers_compare_by_length_then_value() {
        assert!(sequencer_after("0055AED6DCD90281E6", "0055AED6DCD90281E5"));
        assert!(sequencer_after(
            "0055AED6DCD90281E6",
            "0055AED6DCD90281E500"
        ));
        assert!(sequencer_after(
            "0055AED6DCD90281E501",
            "0055AED6DCD90281E5"
        ));
        assert!(!sequencer_after("0A", "0a00"));
    }
}
