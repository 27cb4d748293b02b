//! The sequencer, run by every host: takes events off the intake queue (SQS hands a key's
//! events to one host at a time, in order), gives each its version, sends it to the queue of
//! every replicator that takes it, and only then deletes it from the intake queue. Deletes
//! wait out the clock skew on their own tasks, so the next receive does not wait for them.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinError, JoinSet};

use super::queues::{Outgoing, Received};
use super::refresh::Refresh;
use super::{Accepted, Cluster, ClusterError, Envelope};
use crate::delivery::RouteIndex;
use crate::event::StoredEvent;

/// A replicator's queue and which events its routes take.
pub struct Destination {
    pub replicator: String,
    pub queue: String,
    pub routes: RouteIndex,
}

pub async fn run(
    cluster: Arc<Cluster>,
    destinations: Arc<Vec<Destination>>,
    refresh: Arc<Refresh>,
) {
    let mut releasing = JoinSet::new();
    loop {
        while releasing.len() >= RELEASING_MAX
            && let Some(done) = releasing.join_next().await
        {
            report_release(&cluster, done);
        }
        while let Some(done) = releasing.try_join_next() {
            report_release(&cluster, done);
        }
        match round(&cluster, &destinations, &refresh).await {
            Ok(Some(release)) => {
                cluster.report("sequencer", Ok(()));
                cluster
                    .metrics
                    .sequenced
                    .inc_by(release.receipts.len() as u64);
                releasing.spawn(finish(cluster.clone(), release));
            }
            Ok(None) => cluster.report("sequencer", Ok(())),
            Err(e) => {
                cluster.report("sequencer", Err(&e));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    }
}

/// How far below its backfill's start a copy's version may go (µs).
const COPY_SPREAD: u64 = 1_000_000;

/// Rounds of one sequencer whose intake messages are still being deleted, at most: each waits
/// out `maxClockSkew`, so this bounds a loop at about this many rounds of 10 per that wait.
const RELEASING_MAX: usize = 32;

/// A round's intake messages, deleted once every host's clock is past their newest version.
struct Release {
    newest: u64,
    receipts: Vec<String>,
}

async fn finish(cluster: Arc<Cluster>, release: Release) -> Result<(), ClusterError> {
    cluster.clock.settle(release.newest).await;
    let queues = &cluster.queues;
    queues.delete(&queues.intake, &release.receipts).await
}

fn report_release(cluster: &Cluster, done: Result<Result<(), ClusterError>, JoinError>) {
    // Not deleted: they come back after the visibility timeout, and the replicators' queues
    // drop them as duplicates.
    if let Ok(Err(e)) = done {
        cluster.report("sequencer", Err(&e));
    }
}

/// One receive: versions given and events fanned out; `None` when nothing came.
async fn round(
    cluster: &Cluster,
    destinations: &[Destination],
    refresh: &Refresh,
) -> Result<Option<Release>, ClusterError> {
    let queues = &cluster.queues;
    let received = queues.receive(&queues.intake).await?;
    if received.is_empty() {
        return Ok(None);
    }
    let mut fan_out: HashMap<&str, Vec<Outgoing>> = HashMap::new();
    let mut newest = 0;
    for message in &received {
        let accepted: Accepted = match serde_json::from_str(&message.body) {
            Ok(a) => a,
            Err(e) => {
                // Only hosts write here; a message that is not theirs is dropped, loudly.
                tracing::error!(error = %e, "a message on the intake queue is not an accepted event; deleted");
                continue;
            }
        };
        let event = match &accepted.captured {
            Some(source) => match refresh.apply(source, accepted.event).await {
                Ok(event) => event,
                Err(e) => {
                    let _ = queues
                        .extend(&queues.intake, &receipts_of(&received), Duration::ZERO)
                        .await;
                    return Err(ClusterError::Refresh(e));
                }
            },
            None => accepted.event,
        };
        // A backfill's copies go below its start: a live change made since wins at every
        // guarded destination, whichever arrives first. Distinct, so each is acked alone.
        let version = match &accepted.backfill {
            Some(tag) => tag
                .since
                .saturating_sub(1 + cluster.clock.next() % COPY_SPREAD),
            None => cluster.clock.next(),
        };
        newest = newest.max(version);
        let takers: Vec<&Destination> = destinations
            .iter()
            .filter(|d| {
                let aimed = accepted.backfill.as_ref().is_none_or(|tag| {
                    tag.replicators.is_empty() || tag.replicators.contains(&d.replicator)
                });
                aimed
                    && d.routes
                        .routes_of(&event.resource, event.action)
                        .is_some_and(|r| !r.is_empty())
            })
            .collect();
        if takers.is_empty() {
            continue;
        }
        let (resource, id) = (event.resource.clone(), event.id.clone());
        let body = serde_json::to_string(&Envelope::Event(Box::new(StoredEvent {
            sequence: version,
            received_at_ms: accepted.received_at_ms,
            event,
            backfill: accepted.backfill,
        })))?;
        for d in takers {
            fan_out.entry(&d.queue).or_default().push(Outgoing::new(
                &resource,
                &id,
                &accepted.identity,
                body.clone(),
            ));
        }
    }
    let sent = futures::future::join_all(
        fan_out
            .into_iter()
            .map(|(queue, messages)| queues.send(queue, messages)),
    )
    .await;
    let receipts = receipts_of(&received);
    if let Some(Err(e)) = sent.into_iter().find(Result::is_err) {
        // Handed back at once; what was sent is deduplicated when sent again.
        let _ = queues
            .extend(&queues.intake, &receipts, Duration::ZERO)
            .await;
        return Err(e);
    }
    Ok(Some(Release { newest, receipts }))
}

fn receipts_of(received: &[Received]) -> Vec<String> {
    received.iter().map(|m| m.receipt.clone()).collect()
}
