//! The sequencer, run by every host: takes events off the intake queue (SQS hands a key's
//! events to one host at a time, in order), gives each its version, sends it to the queue of
//! every replicator that takes it, and only then deletes it from the intake queue. Deletes
//! wait out the clock skew on their own tasks, so the next receive does not wait for them.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;
use tokio::task::{JoinError, JoinSet};

use super::queues::{MAX_MESSAGE_BYTES, Outgoing};
use super::refresh::Refresh;
use super::{Accepted, Cluster, ClusterError, Envelope};
use crate::delivery::{Backoff, RouteIndex, for_background_outage};
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

/// One receive: versions given and events fanned out; `None` when nothing came. What fails
/// on the way (reading a captured record again, a replicator's queue refusing) is tried again
/// in place with the round's intake messages kept hidden, never handed back: the versions
/// already sent stand, and no queue gets a second copy under another version.
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
    // All kept hidden while anything is retried; the readable ones deleted at the end.
    let hidden: Vec<String> = received.iter().map(|m| m.receipt.clone()).collect();
    let mut receipts = Vec::with_capacity(received.len());
    for message in &received {
        let accepted: Accepted = match serde_json::from_str(&message.body) {
            Ok(a) => a,
            // Left alone: it shows again after the visibility timeout, maybe to a host that
            // reads it (one of a newer version during an upgrade).
            Err(e) => {
                cluster.report("sequencer", Err(&ClusterError::Unreadable(e)));
                continue;
            }
        };
        receipts.push(message.receipt.clone());
        let event = match &accepted.captured {
            Some(source) => {
                let refreshed = until_done(cluster, &hidden, || async {
                    refresh
                        .apply(source, accepted.event.clone())
                        .await
                        .map_err(ClusterError::Refresh)
                })
                .await;
                // Grown past what a message holds: the state captured stands.
                if fits(&refreshed) {
                    refreshed
                } else {
                    tracing::warn!(resource = %refreshed.resource, id = %refreshed.id, "a captured record read again is too large for a message; the state captured is sent");
                    accepted.event
                }
            }
            None => accepted.event,
        };
        // A backfill's copies go below its start: a live change made since wins at every
        // guarded destination, whichever arrives first. Spread, so that few share a version.
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
    futures::future::join_all(fan_out.into_iter().map(|(queue, messages)| {
        let hidden = &hidden;
        until_done(cluster, hidden, move || {
            let messages = messages.clone();
            async move { queues.send(queue, messages).await }
        })
    }))
    .await;
    Ok(Some(Release { newest, receipts }))
}

/// Whether an event still fits in a message once versioned (a generous allowance for the
/// envelope around it).
fn fits(event: &crate::event::Event) -> bool {
    serde_json::to_vec(event).is_ok_and(|b| b.len() + 1024 <= MAX_MESSAGE_BYTES)
}

/// Runs `attempt` until it works. Meanwhile the round's intake messages stay hidden, so no
/// other host versions their keys' next events, and each failure shows in status, metrics
/// and the stream.
async fn until_done<T, F, Fut>(cluster: &Cluster, receipts: &[String], mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, ClusterError>>,
{
    let mut delays: Option<Backoff> = None;
    loop {
        let e = match attempt().await {
            Ok(done) => return done,
            Err(e) => e,
        };
        cluster.report("sequencer", Err(&e));
        let queues = &cluster.queues;
        let hidden = queues
            .extend(&queues.intake, receipts, queues.visibility())
            .await;
        if let Err(e) = hidden {
            cluster.report("sequencer", Err(&e));
        }
        let delay = delays
            .get_or_insert_with(for_background_outage)
            .next()
            .unwrap_or(Duration::from_secs(30));
        tokio::time::sleep(delay).await;
    }
}
