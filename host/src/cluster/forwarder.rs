//! In cluster mode the local journal only holds what this host captured from buckets
//! (`sources`); the forwarder sends it on to the intake queue and moves its cursor past what
//! SQS took, so a restart sends the rest.

use std::sync::Arc;
use std::time::Duration;

use super::{Accepted, Cluster, ClusterError};
use crate::journal::Journal;

/// The forwarder's cursor in the journal.
pub const POSITION: &str = "cluster-forwarder";

pub async fn run(cluster: Arc<Cluster>, journal: Arc<Journal>) {
    let mut head = journal.subscribe_head();
    match journal.cursor(POSITION).await {
        Ok(position) => {
            cluster.forwarded.send_replace(position.unwrap_or(0));
        }
        Err(e) => cluster.report("forwarder", Err(&e.into())),
    }
    loop {
        match forward(&cluster, &journal).await {
            Ok(true) => cluster.report("forwarder", Ok(())),
            Ok(false) => {
                if head.changed().await.is_err() {
                    return;
                }
            }
            Err(e) => {
                cluster.report("forwarder", Err(&e));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// Sends the next events after the cursor; true when there may be more.
async fn forward(cluster: &Cluster, journal: &Journal) -> Result<bool, ClusterError> {
    let from = journal.cursor(POSITION).await?.unwrap_or(0);
    let events = journal.read(from + 1, 100).await?;
    let Some(last) = events.last().map(|e| e.sequence) else {
        return Ok(false);
    };
    cluster
        .send_intake(events.into_iter().map(|e| Accepted {
            identity: String::new(),
            received_at_ms: e.received_at_ms,
            captured: e.event.source.clone(),
            event: e.event,
            backfill: None,
        }))
        .await?;
    journal.commit_cursor(POSITION, last).await?;
    cluster.forwarded.send_replace(last);
    Ok(true)
}
