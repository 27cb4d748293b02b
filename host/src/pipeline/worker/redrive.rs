//! Redriven dead letters: each goes through its route again (its transform too, when it failed
//! there), behind its key's current events. Its entry leaves the redrive queue only once every
//! delivery made of it is finished, so a crash before that redrives it again.

use std::collections::HashMap;
use std::sync::Arc;

use super::{Item, Redriven, Worker};
use crate::cluster::feed::Feed;
use crate::event::StoredEvent;
use crate::journal::{DeadLetter, Journal};
use crate::plugins::TransformOutcome;

/// Where a redrive waits until it is finished: the journal's redrive queue, or (in cluster
/// mode) the replicator's queue, whose message the feed deletes.
#[derive(Clone)]
pub enum RedriveQueue {
    Journal(Arc<Journal>),
    Cluster(Arc<Feed>),
}

/// Deliveries still out per redriven dead letter.
pub struct Redrives {
    queue: RedriveQueue,
    outstanding: HashMap<u64, u32>,
}

impl Redrives {
    pub fn new(queue: RedriveQueue) -> Redrives {
        Redrives {
            queue,
            outstanding: HashMap::new(),
        }
    }

    /// One delivery made of a redrive is finished; the last one closes the entry.
    pub fn one_done(&mut self, redriven: Redriven) {
        let left = self.outstanding.entry(redriven.dead_letter).or_insert(1);
        *left -= 1;
        if *left == 0 {
            self.outstanding.remove(&redriven.dead_letter);
            self.close(redriven);
        }
    }

    /// A redrive whose route is gone. In cluster mode its message is deleted once the dead
    /// letter is back in the shared state (so its key is not held forever and it stays in
    /// sight); the journal keeps it in its redrive queue.
    fn unroutable(&self, entry: DeadLetter) {
        let RedriveQueue::Cluster(feed) = &self.queue else {
            return;
        };
        let feed = feed.clone();
        tokio::spawn(async move {
            let cluster = feed.cluster();
            let version = entry.sequence;
            match cluster
                .state
                .put_dead_letter(entry, || cluster.clock.next())
                .await
            {
                Ok(_) => feed.done(vec![version]),
                Err(e) => {
                    tracing::error!(error = %e, "cannot put back a dead letter whose route is gone; its message goes back to the queue");
                    feed.hand_back(vec![version]).await;
                }
            }
        });
    }

    /// Removes a finished entry from its queue, in the background.
    fn close(&self, redriven: Redriven) {
        match &self.queue {
            RedriveQueue::Cluster(feed) => feed.done(vec![redriven.version]),
            RedriveQueue::Journal(journal) => {
                let journal = journal.clone();
                let dead_letter = redriven.dead_letter;
                tokio::spawn(async move {
                    if let Err(e) = journal.redrive_done(dead_letter).await {
                        tracing::error!(error = %e, dead_letter, "cannot mark a redrive as done; it will be delivered again after a restart");
                    }
                });
            }
        }
    }
}

impl Worker {
    pub(super) async fn load_redrives(&mut self) {
        match self.shared.journal.pending_redrives(&self.shared.id).await {
            Ok(entries) => self.redrive(entries).await,
            Err(e) => self.report_stall(&format!("cannot read the redrive queue: {e}")),
        }
    }

    /// Queues dead letters again, behind their key's current events, with their own sequence.
    pub(super) async fn redrive(&mut self, entries: Vec<DeadLetter>) {
        let s = self.shared.clone();
        for entry in entries {
            let route_key = if entry.route.is_empty() {
                &entry.resource
            } else {
                &entry.route
            };
            let route = s
                .routes
                .iter()
                .position(|r| r.resource == *route_key && r.destination == entry.destination);
            let Some(route) = route else {
                tracing::warn!(replicator = %s.id, dead_letter = entry.id, "redrive skipped: the route no longer exists");
                self.redrives.unroutable(entry);
                continue;
            };
            let redriven = Redriven {
                dead_letter: entry.id,
                redrives: entry.redrives,
                version: entry.sequence,
            };
            s.counters.emit(crate::pipeline::telemetry::MonitorEvent {
                name: "redriven",
                replicator: s.id.clone(),
                source: None,
                resource: Some(entry.resource.clone()),
                operation: Some(entry.action.clone()),
                id: Some(entry.record_id.clone()),
                sequence: Some(entry.sequence),
                attempt: None,
                error: None,
                plugin: None,
            });
            // A record that failed in the transform goes through it again; one that failed
            // at delivery was transformed already.
            let original = Arc::new(entry.event);
            let events: Vec<Arc<StoredEvent>> = match self.transforms.of(route) {
                Some(t) if !entry.transformed => {
                    match self.transforms.apply_one(t, original.clone()).await {
                        TransformOutcome::Emit(list) => list.into_iter().map(Arc::new).collect(),
                        TransformOutcome::Failed(failure) => {
                            let mut item = Item::new(original, route);
                            item.redriven = Some(redriven);
                            s.dead_letter_surely(&item, &failure.reason, false).await;
                            Vec::new()
                        }
                    }
                }
                _ => vec![original],
            };
            if events.is_empty() {
                self.redrives.close(redriven);
                continue;
            }
            self.redrives
                .outstanding
                .insert(redriven.dead_letter, events.len() as u32);
            for event in events {
                let mut item = Item::new(event, route);
                item.redriven = Some(redriven);
                self.enqueue(item);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::records::fixtures;
    use std::time::Duration;

    #[tokio::test]
    async fn a_fanned_out_redrive_leaves_the_queue_after_its_last_delivery() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), 1 << 20).unwrap();
        let id = journal
            .dead_letter(fixtures::dead_letter("r", "u1"))
            .await
            .unwrap();
        journal.redrive(vec![id]).await.unwrap();
        let mut redrives = Redrives::new(RedriveQueue::Journal(journal.clone()));
        redrives.outstanding.insert(id, 3);
        let redriven = Redriven {
            dead_letter: id,
            redrives: 0,
            version: 1,
        };
        redrives.one_done(redriven);
        redrives.one_done(redriven);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(
            journal.pending_redrives("r").await.unwrap().len(),
            1,
            "two of three deliveries done: a crash now redrives it again"
        );
        redrives.one_done(redriven);
        for _ in 0..100 {
            if journal.pending_redrives("r").await.unwrap().is_empty() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the entry stayed in the redrive queue after its last delivery");
    }
}
