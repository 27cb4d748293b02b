//! Cluster mode: the durable log is SQS FIFO queues instead of the local journal, so any
//! number of identical hosts share intake and delivery. Intake sends each event to the intake
//! queue (message group = the record's key); every host's sequencer gives it a version and
//! fans it out to one queue per replicator; every host's feeds hand those to the workers.

pub mod clock;
pub mod feed;
pub mod forwarder;
pub mod metrics;
pub mod queues;
pub mod refresh;
pub mod sequencer;
pub mod state;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::config::cluster::ClusterConfig;
use crate::event::{BackfillTag, Event, StoredEvent};
use crate::journal::DeadLetter;
use clock::Clock;
use metrics::{ClusterMetrics, QueueLabel, TaskLabel};
use queues::{Depth, Outgoing, Queues};
use state::{HostWork, SharedState};
use std::collections::BTreeMap;
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("{call} on {queue} failed: {reason}")]
    Queue {
        call: &'static str,
        queue: String,
        reason: String,
    },
    #[error("{call} on {queue} refused: {reason}")]
    Refused {
        call: &'static str,
        queue: String,
        reason: String,
    },
    #[error("event {index} is {size} bytes, over the {max} bytes an SQS message holds")]
    TooLarge {
        index: usize,
        size: usize,
        max: usize,
    },
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("cannot read a captured record again from its bucket: {0}")]
    Refresh(#[source] crate::s3db::S3dbError),
    #[error("the cluster's state database: {0}")]
    State(#[from] crate::s3db::store::StoreError),
    #[error("a queue message is not one this host reads: {0}")]
    Unreadable(#[source] serde_json::Error),
    #[error("cannot encode a queue message: {0}")]
    Encoding(#[from] serde_json::Error),
}

impl ClusterError {
    fn queue<E>(call: &'static str, queue: &str, e: &SdkError<E, Response>) -> ClusterError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        ClusterError::Queue {
            call,
            queue: crate::redact::url(queue),
            reason: crate::delivery::aws::describe(e),
        }
    }
}

/// What the intake queue carries: an accepted event and its identity, unique to this
/// acceptance. It is the deduplication id of the event's message in each replicator's queue,
/// so a sequencer that fans it out twice (it died before deleting) sends one copy. Content is
/// never the identity: two changes alike in every field are still two changes.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub identity: String,
    pub received_at_ms: i64,
    pub event: Event,
    /// The source that captured it from its bucket (read again when sequenced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub captured: Option<String>,
    /// Set on a backfill's copies: versioned below the backfill's start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backfill: Option<BackfillTag>,
}

/// What a replicator's queue carries: a versioned event, or a dead letter sent again.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Envelope {
    Event(Box<StoredEvent>),
    Redrive(Box<DeadLetter>),
}

/// This host's part in the cluster: the queues and the version clock.
pub struct Cluster {
    pub config: ClusterConfig,
    pub queues: Queues,
    pub clock: Clock,
    /// Dead letters and heartbeats, alike from every host.
    pub state: SharedState,
    /// The last failure of each of this host's cluster tasks, until that task works again.
    last_errors: std::sync::Mutex<BTreeMap<&'static str, String>>,
    /// Each queue's depth as last measured, by replicator id (`""`: the intake queue).
    depths: std::sync::Mutex<BTreeMap<String, Depth>>,
    started_at: String,
    /// How far the forwarder sent the local journal on (captured changes).
    pub forwarded: watch::Sender<u64>,
    pub metrics: ClusterMetrics,
    /// Told of each failed round of a cluster task (the event stream says it).
    notify: Notify,
}

/// Told of each failure of a cluster task: the task and the error.
pub type Notify = Arc<dyn Fn(&'static str, &str) + Send + Sync>;

impl Cluster {
    pub async fn join(
        config: ClusterConfig,
        replicators: &[String],
        metrics: ClusterMetrics,
        notify: Notify,
    ) -> Result<Arc<Cluster>, ClusterError> {
        let queues = Queues::open(&config, replicators, metrics.requests.clone()).await?;
        Ok(Arc::new(Cluster {
            state: SharedState::open(&config.state_database).await,
            clock: Clock::new(config.max_clock_skew),
            config,
            queues,
            last_errors: Default::default(),
            depths: Default::default(),
            started_at: crate::event::now_rfc3339(),
            forwarded: watch::channel(0).0,
            metrics,
            notify,
        }))
    }

    /// Sends posted events (a backfill's copies when tagged) to the intake queue; returns
    /// once SQS holds every one.
    pub async fn accept(
        &self,
        events: Vec<Event>,
        received_at_ms: i64,
        backfill: Option<BackfillTag>,
    ) -> Result<(), ClusterError> {
        self.send_intake(events.into_iter().map(|event| Accepted {
            identity: String::new(),
            received_at_ms,
            event,
            captured: None,
            backfill: backfill.clone(),
        }))
        .await
    }

    /// Sends events to the intake queue, each under a new identity (filled in here).
    async fn send_intake(
        &self,
        events: impl IntoIterator<Item = Accepted>,
    ) -> Result<(), ClusterError> {
        let mut messages = Vec::new();
        for (index, mut accepted) in events.into_iter().enumerate() {
            accepted.identity = format!("{}.{}", self.config.host_id, self.clock.next());
            let (resource, id) = (accepted.event.resource.clone(), accepted.event.id.clone());
            let body = serde_json::to_string(&accepted)?;
            if body.len() > queues::MAX_MESSAGE_BYTES {
                return Err(ClusterError::TooLarge {
                    index,
                    size: body.len(),
                    max: queues::MAX_MESSAGE_BYTES,
                });
            }
            messages.push(Outgoing::new(&resource, &id, &accepted.identity, body));
        }
        self.queues.send(&self.queues.intake, messages).await
    }

    /// Sends dead letters back to their replicator's queue, behind their key's events, and
    /// only then removes them from the shared dead letters; returns the ids sent.
    pub async fn redrive(&self, ids: &[u64]) -> Result<Vec<u64>, ClusterError> {
        let mut sent = Vec::new();
        for (key, mut entry) in self.state.take(ids).await? {
            entry.redrives += 1;
            let id = entry.id;
            let Some(queue) = self.queues.replicators.get(&entry.replicator) else {
                continue;
            };
            // One per dead letter and redrive of it (one event may make several, one per
            // route); the version tells apart two hosts' dead letters with one id.
            let dedup = format!(
                "redrive:{}:{}:{}:{}",
                entry.replicator, entry.id, entry.sequence, entry.redrives
            );
            let (resource, record) = (entry.resource.clone(), entry.record_id.clone());
            let body = serde_json::to_string(&Envelope::Redrive(Box::new(entry)))?;
            self.queues
                .send(queue, vec![Outgoing::new(&resource, &record, &dedup, body)])
                .await?;
            self.state.remove(&[key]).await?;
            sent.push(id);
        }
        Ok(sent)
    }
}

impl Cluster {
    /// Records how a cluster task is doing: an error stays shown until the next success.
    pub fn report(&self, task: &'static str, outcome: Result<(), &ClusterError>) {
        let mut last = self.last_errors.lock().expect("cluster error lock");
        match outcome {
            Ok(()) => {
                last.remove(task);
            }
            Err(e) => {
                tracing::error!(task, error = %e, "cluster task failed; retrying");
                self.metrics.errors.get_or_create(&TaskLabel { task }).inc();
                let error = e.to_string();
                (self.notify)(task, &error);
                last.insert(task, error);
            }
        }
    }

    /// Each failing task's last error, as `task: error`; none when all work.
    pub fn last_error(&self) -> Option<String> {
        let last = self.last_errors.lock().expect("cluster error lock");
        (!last.is_empty()).then(|| {
            last.iter()
                .map(|(task, e)| format!("{task}: {e}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }
}

/// How often a host measures the queues' depths.
const MEASURE: Duration = Duration::from_secs(5);
/// How often a host writes its heartbeat (an S3 PUT: $0.86 a month per host at this rate).
pub const HEARTBEAT: Duration = Duration::from_secs(15);

impl Cluster {
    /// Messages in a replicator's queue (`""`: the intake queue), waiting or held, as SQS
    /// last estimated.
    pub fn backlog(&self, replicator: &str) -> u64 {
        self.depths
            .lock()
            .expect("depths lock")
            .get(replicator)
            .map_or(0, |d| d.visible + d.in_flight)
    }

    /// Measures each queue's depth every few seconds, and writes this host's heartbeat
    /// (`work` tells what each replicator does here) every [`HEARTBEAT`].
    pub async fn keep_watch(self: Arc<Self>, work: impl Fn() -> BTreeMap<String, HostWork>) {
        let mut tick = tokio::time::interval(MEASURE);
        let mut last_beat: Option<std::time::Instant> = None;
        loop {
            tick.tick().await;
            let queues = std::iter::once(("", &self.queues.intake)).chain(
                self.queues
                    .replicators
                    .iter()
                    .map(|(id, url)| (id.as_str(), url)),
            );
            for (id, url) in queues {
                match self.queues.depth(url).await {
                    Ok(d) => {
                        let queue = if id.is_empty() { "intake" } else { id };
                        self.metrics
                            .queue_messages
                            .get_or_create(&QueueLabel {
                                queue: queue.to_string(),
                            })
                            .set((d.visible + d.in_flight) as i64);
                        self.depths
                            .lock()
                            .expect("depths lock")
                            .insert(id.to_string(), d);
                    }
                    Err(e) => tracing::warn!(error = %e, "cannot read a queue's depth"),
                }
            }
            if last_beat.is_some_and(|t| t.elapsed() < HEARTBEAT - MEASURE / 2) {
                continue;
            }
            last_beat = Some(std::time::Instant::now());
            let heartbeat = state::Heartbeat {
                host_id: self.config.host_id.clone(),
                started_at: self.started_at.clone(),
                seen_at_ms: chrono::Utc::now().timestamp_millis(),
                replicators: work(),
            };
            if let Err(e) = self.state.beat(&heartbeat).await {
                self.report("heartbeat", Err(&ClusterError::State(e)));
            }
        }
    }
}
