//! A replicator's feed on this host: receives from the replicator's queue while the worker
//! has room, keeps what it holds hidden from other hosts while its deliveries run, and
//! deletes each message once the worker is done with it (delivered or dead-lettered).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{Cluster, ClusterError, Envelope};

pub struct Feed {
    cluster: Arc<Cluster>,
    replicator: String,
    queue: String,
    /// Received, not yet taken by the worker.
    inbox: Mutex<VecDeque<Envelope>>,
    held: Mutex<Held>,
    capacity: usize,
    /// Counts messages given to the worker; the worker wakes on it.
    arrived: watch::Sender<u64>,
    room: Notify,
    /// Receiving starts once the worker's destination is ready.
    open: watch::Sender<bool>,
    /// Cancelled when the worker stopped: no more receiving or extending.
    closed: CancellationToken,
}

/// The receipts of the messages a feed holds, by version: one message per version, so the
/// worker's "done with this version" names one message.
type Held = HashMap<u64, String>;

impl Feed {
    pub fn new(cluster: Arc<Cluster>, replicator: &str, capacity: usize) -> Arc<Feed> {
        let queue = cluster.queues.replicators[replicator].clone();
        Arc::new(Feed {
            cluster,
            replicator: replicator.to_string(),
            queue,
            inbox: Mutex::default(),
            held: Mutex::default(),
            capacity,
            arrived: watch::channel(0).0,
            room: Notify::new(),
            open: watch::channel(false).0,
            closed: CancellationToken::new(),
        })
    }

    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.cluster
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.arrived.subscribe()
    }

    /// Starts receiving (once the destination is ready).
    pub fn open(&self) {
        self.open.send_replace(true);
    }

    /// Up to `max` received messages, oldest first.
    pub fn take(&self, max: usize) -> Vec<Envelope> {
        let mut inbox = self.inbox.lock().expect("feed lock");
        let n = max.min(inbox.len());
        inbox.drain(..n).collect()
    }

    /// The worker is done with these versions: their messages are deleted.
    pub fn done(self: &Arc<Self>, versions: Vec<u64>) {
        let receipts = self.forget(&versions);
        if receipts.is_empty() {
            return;
        }
        let feed = self.clone();
        tokio::spawn(async move {
            let deleted = feed.cluster.queues.delete(&feed.queue, &receipts).await;
            // Not deleted: they come back, and their versions keep them from changing anything.
            feed.cluster
                .report("feed delete", deleted.as_ref().map(|_| ()));
        });
    }

    /// Stops receiving and extending (the worker stopped). With `hand_back`, every held
    /// message goes back to the queue at once, so other hosts need not wait out the
    /// visibility timeout; without it (deliveries may still run) they show after it.
    pub async fn close(&self, hand_back: bool) {
        self.closed.cancel();
        if hand_back {
            let receipts: Vec<String> = std::mem::take(&mut *self.held.lock().expect("feed lock"))
                .into_values()
                .collect();
            self.send_back(receipts).await;
        }
    }

    /// Hands these versions' messages back to the queue at once, to be received again.
    pub async fn hand_back(&self, versions: Vec<u64>) {
        let receipts = self.forget(&versions);
        self.send_back(receipts).await;
    }

    async fn send_back(&self, receipts: Vec<String>) {
        if receipts.is_empty() {
            return;
        }
        let handed = self
            .cluster
            .queues
            .extend(&self.queue, &receipts, Duration::ZERO)
            .await;
        self.cluster
            .report("feed hand-back", handed.as_ref().map(|_| ()));
    }

    /// No longer holds these versions' messages; their receipts.
    fn forget(&self, versions: &[u64]) -> Vec<String> {
        let receipts: Vec<String> = {
            let mut held = self.held.lock().expect("feed lock");
            versions.iter().filter_map(|v| held.remove(v)).collect()
        };
        if !receipts.is_empty() {
            self.room.notify_one();
        }
        receipts
    }

    /// Messages in the replicator's queue (waiting and held by hosts), as SQS estimates.
    pub fn backlog(&self) -> u64 {
        self.cluster.backlog(&self.replicator)
    }

    /// Messages received and not yet done.
    pub fn held(&self) -> usize {
        self.held.lock().expect("feed lock").len()
    }

    /// Receives and extends until closed.
    pub async fn run(self: Arc<Self>) {
        let mut open = self.open.subscribe();
        tokio::select! {
            _ = open.wait_for(|o| *o) => {}
            () = self.closed.cancelled() => return,
        }
        tokio::spawn(self.clone().keep_hidden());
        loop {
            if self.held() >= self.capacity {
                tokio::select! {
                    () = self.room.notified() => continue,
                    () = self.closed.cancelled() => return,
                }
            }
            let received = tokio::select! {
                r = self.cluster.queues.receive(&self.queue) => r,
                () = self.closed.cancelled() => return,
            };
            self.cluster.report("feed", received.as_ref().map(|_| ()));
            let Ok(received) = received else {
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            };
            let mut given = 0;
            for m in received {
                let mut envelope: Envelope = match serde_json::from_str(&m.body) {
                    Ok(e) => e,
                    // Left alone: it shows again after the visibility timeout, maybe to a
                    // host that reads it (one of a newer version during an upgrade).
                    Err(e) => {
                        self.cluster
                            .report("feed", Err(&ClusterError::Unreadable(e)));
                        continue;
                    }
                };
                {
                    let mut held = self.held.lock().expect("feed lock");
                    let version = unique_version(&mut envelope, &held);
                    held.insert(version, m.receipt);
                }
                self.inbox.lock().expect("feed lock").push_back(envelope);
                given += 1;
            }
            if given > 0 {
                self.arrived.send_modify(|n| *n += given);
            }
        }
    }

    /// Extends the messages held, a third of the visibility timeout before they would show.
    async fn keep_hidden(self: Arc<Self>) {
        let visibility = self.cluster.queues.visibility();
        let mut tick = tokio::time::interval(visibility / 3);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = self.closed.cancelled() => return,
            }
            let receipts: Vec<String> = self
                .held
                .lock()
                .expect("feed lock")
                .values()
                .cloned()
                .collect();
            if receipts.is_empty() {
                continue;
            }
            // A failure here may let another host deliver these too: it shows in status.
            let extended = self
                .cluster
                .queues
                .extend(&self.queue, &receipts, visibility)
                .await;
            self.cluster
                .report("feed extend", extended.as_ref().map(|_| ()));
        }
    }
}

/// The envelope's version, made one this feed does not hold. Two hosts may give one version
/// to two keys' events in the same microsecond; the later one held here takes the next free
/// microsecond. Safe for order: a key's neighbouring versions are a commit wait (milliseconds)
/// away; a redelivery may so carry a slightly different version of the same change, which a
/// guard takes as what it is, the same state again.
fn unique_version(envelope: &mut Envelope, held: &Held) -> u64 {
    let mut version = match envelope {
        Envelope::Event(e) => e.sequence,
        Envelope::Redrive(d) => d.sequence,
    };
    while held.contains_key(&version) {
        version += 1;
    }
    match envelope {
        Envelope::Event(e) => e.sequence = version,
        Envelope::Redrive(d) => {
            d.sequence = version;
            d.event.sequence = version;
        }
    }
    version
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::records::fixtures;

    #[test]
    fn a_version_held_already_becomes_the_next_free_one() {
        let mut held = Held::new();
        let mut first = Envelope::Redrive(Box::new(fixtures::dead_letter("r", "u1")));
        let v = unique_version(&mut first, &held);
        held.insert(v, "a".into());
        held.insert(v + 1, "b".into());
        let mut second = Envelope::Redrive(Box::new(fixtures::dead_letter("r", "u2")));
        assert_eq!(unique_version(&mut second, &held), v + 2);
        let Envelope::Redrive(d) = second else {
            unreachable!()
        };
        assert_eq!((d.sequence, d.event.sequence), (v + 2, v + 2));
    }
}
