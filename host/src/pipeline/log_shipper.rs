//! `persistReplicatorLog`: copies the replication log from the journal into an s3db resource
//! (`plg_<replicatorLogResource>`) that s3db.js can query, partitioned by day as s3db.js's own
//! log resource is. It follows the journal with a saved position, so nothing is lost across
//! restarts or outages of that database.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use super::telemetry::{MonitorEvent, Telemetry};
use crate::journal::{Journal, LogEntry};
use crate::s3db::schema::{Catalog, Partition};
use crate::s3db::{Behavior, Connection, Database};

/// The cursor name under which the shipped position is kept (not a valid replicator id).
pub const POSITION: &str = "#replicator-log";

/// The attributes of s3db.js 21.6's log resource, plus what the host knows beyond them.
const ATTRIBUTES: [(&str, &str); 12] = [
    ("replicator", "string|required"),
    ("resource", "string|required"),
    ("action", "string|required"),
    ("status", "string|required"),
    ("error", "string|optional"),
    ("timestamp", "datetime|required"),
    ("createdAt", "dateonly|required"),
    ("recordId", "string|optional"),
    ("sequence", "number|integer|optional"),
    ("attempts", "number|integer|optional"),
    ("destination", "string|optional"),
    ("data", "json|optional"),
];

pub async fn run(
    journal: Arc<Journal>,
    telemetry: Arc<Telemetry>,
    conn: Connection,
    resource: String,
) {
    let name = format!("plg_{resource}");
    let mut delay = Duration::from_millis(200);
    let mut db: Option<Database> = None;
    loop {
        let result = async {
            if db.is_none() {
                db = Some(
                    Database::connect(conn.clone())
                        .await
                        .map_err(|e| e.to_string())?,
                );
            }
            ship(&journal, db.as_ref().expect("connected"), &name).await
        }
        .await;
        match result {
            Ok(shipped) => {
                delay = Duration::from_millis(200);
                if shipped == 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Err(e) => {
                tracing::warn!(destination = %conn.shown, error = %e, "cannot write the replication log to s3db; retrying");
                telemetry.emit(MonitorEvent {
                    name: "replicator_log_error",
                    replicator: POSITION.trim_start_matches('#').into(),
                    resource: Some(name.clone()),
                    operation: None,
                    id: None,
                    sequence: None,
                    attempt: None,
                    error: Some(e),
                });
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// Writes the next entries; returns how many.
async fn ship(journal: &Journal, db: &Database, name: &str) -> Result<usize, String> {
    let after = journal
        .cursor(POSITION)
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or(0);
    let entries = journal
        .logs_after(after, 200)
        .await
        .map_err(|e| e.to_string())?;
    let Some(last) = entries.last().map(|e| e.log_id) else {
        return Ok(0);
    };
    let resource = ensure_resource(db, name).await?;
    let writes: Vec<_> = entries
        .iter()
        .map(|e| {
            let (id, record) = record(e);
            let resource = &resource;
            async move { db.put_record(resource, &id, &record, None).await }
        })
        .collect();
    for result in futures::future::join_all(writes).await {
        result.map_err(|e| e.to_string())?;
    }
    journal
        .commit_cursor(POSITION, last)
        .await
        .map_err(|e| e.to_string())?;
    Ok(entries.len())
}

/// Creates the log resource with s3db.js's layout (body-only, partition `byDate`).
async fn ensure_resource(db: &Database, name: &str) -> Result<crate::s3db::Resource, String> {
    if db.resource(name).is_none() {
        let fields: Vec<(String, &'static str)> = ATTRIBUTES
            .iter()
            .map(|(k, d)| (k.to_string(), *d))
            .collect();
        let mut catalog = Catalog::empty();
        catalog.extend(name, &fields, Behavior::BodyOnly);
        let by_date = Partition {
            fields: [("createdAt".to_string(), "dateonly".to_string())].into(),
            extra: Default::default(),
        };
        catalog.set_partitions(name, [("byDate".to_string(), by_date)].into());
        let entry = catalog.resources.remove(name).expect("extend created it");
        db.define(name, entry).await.map_err(|e| e.to_string())?;
    }
    match db.resource(name) {
        Some(resource) => resource.map_err(|e| e.to_string()),
        None => Err(format!(
            "{name} is not in s3db.json right after it was defined"
        )),
    }
}

/// The record of one log entry, with an id s3db.js accepts.
fn record(e: &LogEntry) -> (String, Value) {
    let safe = |s: &str| s.replace(['/', '\\', '=', '%'], "_");
    let id = format!("{}-{}-{}", safe(&e.resource), safe(&e.id), e.log_id);
    let day = e.at.get(..10).unwrap_or_default().to_string();
    let status = serde_json::to_value(e.status).unwrap_or(Value::Null);
    (
        id,
        json!({
            "replicator": e.replicator, "resource": e.resource, "action": e.action, "status": status,
            "error": e.error, "timestamp": e.at, "createdAt": day, "recordId": e.id,
            "sequence": e.sequence, "attempts": e.attempts, "destination": e.destination,
        }),
    )
}
