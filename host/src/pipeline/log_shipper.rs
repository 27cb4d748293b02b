//! `persistReplicatorLog`: copies the replication log from the journal into an s3db resource
//! (`plg_<replicatorLogResource>`) that s3db.js can query, partitioned by day as s3db.js's own
//! log resource is. It follows the journal with a saved position, so nothing is lost across
//! restarts or outages of that database.

use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::telemetry::{MonitorEvent, Telemetry};
use crate::delivery::{Backoff, bounded};
use crate::journal::{Journal, JournalError, LogEntry};
use crate::s3db::schema::{Catalog, Partition};
use crate::s3db::{Behavior, Connection, Database, Resource, S3dbError};

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

/// Why a round of shipping stopped; the next round starts where it did.
#[derive(Debug, thiserror::Error)]
enum ShipError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    S3db(#[from] S3dbError),
    #[error("{0} is not in s3db.json right after it was defined (another writer removed it)")]
    Vanished(String),
}

/// Writes at once, at most, into the log database.
const PARALLEL_WRITES: usize = 32;

pub async fn run(
    journal: Arc<Journal>,
    telemetry: Arc<Telemetry>,
    conn: Connection,
    resource: String,
    host: Option<String>,
) {
    let name = format!("plg_{resource}");
    let mut db: Option<Database> = None;
    let mut backoff: Option<Backoff> = None;
    loop {
        let result = async {
            let db = match &db {
                Some(db) => db,
                None => db.insert(Database::connect(conn.clone()).await?),
            };
            ship(&journal, db, &name, host.as_deref()).await
        }
        .await;
        match result {
            Ok(shipped) => {
                backoff = None;
                if shipped == 0 {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
            Err(e) => {
                tracing::warn!(destination = %conn.shown, error = %e, "cannot write the replication log to s3db; retrying");
                let mut event = MonitorEvent::replicator_wide(
                    "replicator_log_error",
                    POSITION.trim_start_matches('#'),
                    e.to_string(),
                );
                event.resource = Some(name.clone());
                telemetry.emit(event);
                let delay = backoff.get_or_insert_with(outage_delays).next();
                tokio::time::sleep(delay.unwrap_or(Duration::from_secs(30))).await;
            }
        }
    }
}

/// Delays while the log database is away: 200 ms doubling to 30 s, with jitter.
fn outage_delays() -> Backoff {
    Box::new(
        ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(200))
            .with_max_delay(Duration::from_secs(30))
            .with_jitter()
            .without_max_times()
            .build(),
    )
}

/// Writes the next entries; returns how many.
async fn ship(
    journal: &Journal,
    db: &Database,
    name: &str,
    host: Option<&str>,
) -> Result<usize, ShipError> {
    let after = journal.cursor(POSITION).await?.unwrap_or(0);
    let entries = journal.logs_after(after, 200).await?;
    let Some(last) = entries.last().map(|e| e.log_id) else {
        return Ok(0);
    };
    let resource = ensure_resource(db, name).await?;
    // Collected first: a lazy iterator of futures is not `Send` across the await.
    let writes: Vec<_> = entries
        .iter()
        .map(|e| {
            let (id, record) = record(e, host);
            let resource = &resource;
            async move { db.put_record(resource, &id, &record, None).await }
        })
        .collect();
    for result in bounded(writes, PARALLEL_WRITES).await {
        result?;
    }
    journal.commit_cursor(POSITION, last).await?;
    Ok(entries.len())
}

/// Creates the log resource with s3db.js's layout (body-only, partition `byDate`).
async fn ensure_resource(db: &Database, name: &str) -> Result<Resource, ShipError> {
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
        if let Some(entry) = catalog.resources.remove(name) {
            db.define(name, entry).await?;
        }
    }
    match db.resource(name) {
        Some(resource) => Ok(resource?),
        None => Err(ShipError::Vanished(name.to_string())),
    }
}

/// The record of one log entry, with an id s3db.js accepts; in cluster mode the id names the
/// host too (each host numbers its entries on its own).
fn record(e: &LogEntry, host: Option<&str>) -> (String, Value) {
    let safe = |s: &str| s.replace(['/', '\\', '=', '%'], "_");
    let id = match host {
        Some(h) => format!(
            "{}-{}-{}-{}",
            safe(&e.resource),
            safe(&e.id),
            safe(h),
            e.log_id
        ),
        None => format!("{}-{}-{}", safe(&e.resource), safe(&e.id), e.log_id),
    };
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
