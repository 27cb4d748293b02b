//! Captured changes are read again from their bucket when sequenced. Hosts capture the same
//! notification queue in parallel, so one host's older read could reach the intake queue after
//! another's newer one; the sequencer holds the key's message group while it reads, so each
//! key's events leave it with states that only move forward, and the last is the newest.

use serde_json::Value;
use std::collections::HashMap;
use tokio::sync::OnceCell;

use crate::config::SourceConfig;
use crate::event::{Action, Event};
use crate::s3db::{Database, RecordRead, S3dbError};

/// The source databases, connected on first use.
pub struct Refresh {
    sources: HashMap<String, (SourceConfig, OnceCell<Database>)>,
}

impl Refresh {
    pub fn new(configs: &[SourceConfig]) -> Refresh {
        Refresh {
            sources: configs
                .iter()
                .map(|c| (c.id.clone(), (c.clone(), OnceCell::new())))
                .collect(),
        }
    }

    /// `event` with the record's state as stored now: its data when it exists (an insert
    /// if it was a delete), a delete when it is gone. Unchanged when the source or resource
    /// is not known here.
    pub async fn apply(&self, source: &str, mut event: Event) -> Result<Event, S3dbError> {
        let Some((config, db)) = self.sources.get(source) else {
            return Ok(event);
        };
        let db = db
            .get_or_try_init(|| Database::connect(config.connection.clone()))
            .await?;
        match db.read_record(&event.resource, &event.id).await? {
            RecordRead::UnknownResource => {}
            RecordRead::Found(record) => {
                if event.action == Action::Delete {
                    event.action = Action::Insert;
                    event.before = None;
                }
                event.data = Some(record.data);
            }
            RecordRead::Missing if event.action != Action::Delete => {
                event.action = Action::Delete;
                event.before = event.data.clone().filter(Value::is_object);
            }
            RecordRead::Missing => {}
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::s3db::{Behavior, Connection};
    use serde_json::json;

    fn event(action: Action, data: Option<Value>) -> Event {
        Event {
            resource: "users".into(),
            action,
            id: "u1".into(),
            data,
            before: None,
            timestamp: "2026-12-03T00:00:00.000Z".into(),
            source: Some("app".into()),
            metadata: None,
        }
    }

    #[tokio::test]
    async fn a_stale_captured_event_takes_the_records_state_now() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!("file://{}", dir.path().display());
        let db = Database::connect(Connection::parse(&text).unwrap())
            .await
            .unwrap();
        let newest = json!({"id": "u1", "name": "newest"});
        let users = db
            .ensure("users", &[&newest], Behavior::BodyOverflow)
            .await
            .unwrap();
        db.put_record(&users, "u1", &newest, None).await.unwrap();
        let config: Vec<SourceConfig> = crate::config::sources::parse(
            &json!([{"id": "app", "connectionString": text, "poll": "1s"}]),
            &Default::default(),
        );
        let refresh = Refresh::new(&config);

        let stale = event(Action::Update, Some(json!({"id": "u1", "name": "old"})));
        let now = refresh.apply("app", stale).await.unwrap();
        assert_eq!(
            (now.action, now.data),
            (Action::Update, Some(newest.clone()))
        );
        let deleted_since = refresh
            .apply("app", event(Action::Delete, None))
            .await
            .unwrap();
        assert_eq!(deleted_since.action, Action::Insert, "it exists again");

        db.delete_record(&users, "u1", &[]).await.unwrap();
        let gone = refresh
            .apply(
                "app",
                event(Action::Update, Some(json!({"id": "u1", "name": "old"}))),
            )
            .await
            .unwrap();
        assert_eq!(gone.action, Action::Delete);
        assert_eq!(gone.before, Some(json!({"id": "u1", "name": "old"})));
        let elsewhere = refresh
            .apply("other", event(Action::Update, None))
            .await
            .unwrap();
        assert_eq!(
            elsewhere,
            event(Action::Update, None),
            "unknown sources pass through"
        );
    }
}
