//! A replicator's feed on this host: receives from the replicator's queue while the worker
//! has room, keeps what it holds hidden from other hosts while its deliveries run, and
//! deletes each message once the worker is done with it (delivered or dead-lettered).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Notify, watch};

use super::{Cluster, Envelope};

pub struct Feed {
    cluster: Arc<Cluster>,
    replicator: String,
    queue: String,
    /// Received, not yet taken by the worker.
    inbox: Mutex<VecDeque<Envelope>>,
    /// Receipts of the messages held, by version.
    held: Mutex<HashMap<u64, Vec<String>>>,
    capacity: usize,
    /// Counts receipts; the worker wakes on it.
    arrived: watch::Sender<u64>,
    room: Notify,
    /// Receiving starts once the worker's destination is ready.
    open: watch::Sender<bool>,
}

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
        let receipts: Vec<String> = {
            let mut held = self.held.lock().expect("feed lock");
            versions
                .iter()
                .filter_map(|v| held.remove(v))
                .flatten()
                .collect()
        };
        if receipts.is_empty() {
            return;
        }
        self.room.notify_one();
        let feed = self.clone();
        tokio::spawn(async move {
            if let Err(e) = feed.cluster.queues.delete(&feed.queue, &receipts).await {
                tracing::warn!(replicator = %feed.replicator, error = %e, "delivered messages could not be deleted; they come back and their versions keep them from changing anything");
            }
        });
    }

    /// Messages in the replicator's queue (waiting and held by hosts), as SQS estimates.
    pub fn backlog(&self) -> u64 {
        self.cluster.backlog(&self.replicator)
    }

    /// Hands every held message back to the queue at once (at shutdown, once the worker
    /// stopped), so other hosts need not wait out the visibility timeout.
    pub async fn release(&self) {
        let receipts: Vec<String> = {
            let mut held = self.held.lock().expect("feed lock");
            held.drain().flat_map(|(_, r)| r).collect()
        };
        if receipts.is_empty() {
            return;
        }
        let queues = &self.cluster.queues;
        match queues.extend(&self.queue, &receipts, Duration::ZERO).await {
            Ok(()) => {
                tracing::info!(replicator = %self.replicator, messages = receipts.len(), "held messages handed back to the cluster")
            }
            Err(e) => {
                tracing::warn!(replicator = %self.replicator, error = %e, "held messages could not be handed back; other hosts take them after the visibility timeout")
            }
        }
    }

    /// Messages received and not yet done.
    pub fn held(&self) -> usize {
        self.held
            .lock()
            .expect("feed lock")
            .values()
            .map(Vec::len)
            .sum()
    }

    /// Receives, extends and measures until the host stops.
    pub async fn run(self: Arc<Self>) {
        let mut open = self.open.subscribe();
        let _ = open.wait_for(|o| *o).await;
        tokio::spawn(self.clone().keep_hidden());
        loop {
            if self.held() >= self.capacity {
                self.room.notified().await;
                continue;
            }
            let received = match self.cluster.queues.receive(&self.queue).await {
                Ok(r) => r,
                Err(e) => {
                    tracing::error!(replicator = %self.replicator, error = %e, "cannot receive from the replicator's queue; retrying");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    continue;
                }
            };
            let mut taken = 0;
            for m in received {
                let envelope: Envelope = match serde_json::from_str(&m.body) {
                    Ok(e) => e,
                    Err(e) => {
                        tracing::error!(replicator = %self.replicator, error = %e, "a message on the replicator's queue is not an event; deleted");
                        let _ = self.cluster.queues.delete(&self.queue, &[m.receipt]).await;
                        continue;
                    }
                };
                let version = match &envelope {
                    Envelope::Event(e) => e.sequence,
                    Envelope::Redrive(d) => d.sequence,
                };
                self.held
                    .lock()
                    .expect("feed lock")
                    .entry(version)
                    .or_default()
                    .push(m.receipt);
                self.inbox.lock().expect("feed lock").push_back(envelope);
                taken += 1;
            }
            if taken > 0 {
                self.arrived.send_modify(|n| *n += taken);
            }
        }
    }

    /// Extends the messages held, a third of the visibility timeout before they would show.
    async fn keep_hidden(self: Arc<Self>) {
        let visibility = self.cluster.queues.visibility();
        let mut tick = tokio::time::interval(visibility / 3);
        tick.tick().await;
        loop {
            tick.tick().await;
            let receipts: Vec<String> = self
                .held
                .lock()
                .expect("feed lock")
                .values()
                .flatten()
                .cloned()
                .collect();
            if receipts.is_empty() {
                continue;
            }
            if let Err(e) = self
                .cluster
                .queues
                .extend(&self.queue, &receipts, visibility)
                .await
            {
                tracing::error!(replicator = %self.replicator, error = %e, "cannot keep held messages hidden; another host may deliver them too");
            }
        }
    }
}
