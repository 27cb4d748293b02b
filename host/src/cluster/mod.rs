//! Cluster mode: the durable log is SQS FIFO queues instead of the local journal, so any
//! number of identical hosts share intake and delivery. Intake sends each event to the intake
//! queue (message group = the record's key); every host's sequencer gives it a version and
//! fans it out to one queue per replicator; every host's feeds hand those to the workers.

pub mod clock;
pub mod feed;
pub mod forwarder;
pub mod queues;
pub mod sequencer;

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::sync::Arc;

use crate::config::cluster::ClusterConfig;
use crate::event::{Event, StoredEvent};
use crate::journal::DeadLetter;
use clock::Clock;
use queues::{Outgoing, Queues};

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

/// What the intake queue carries: an accepted event and its identity (its deduplication id:
/// the same event posted again within SQS's 5 minutes is taken once).
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    pub identity: String,
    pub received_at_ms: i64,
    pub event: Event,
}

/// What a replicator's queue carries: a versioned event, or a dead letter sent again.
#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Envelope {
    Event(StoredEvent),
    Redrive(Box<DeadLetter>),
}

/// This host's part in the cluster: the queues and the version clock.
pub struct Cluster {
    pub config: ClusterConfig,
    pub queues: Queues,
    pub clock: Clock,
    /// The last failure of this host's cluster tasks (sequencer, forwarder), until one works.
    pub last_error: std::sync::Mutex<Option<String>>,
}

impl Cluster {
    pub async fn join(
        config: ClusterConfig,
        replicators: &[String],
    ) -> Result<Arc<Cluster>, ClusterError> {
        let queues = Queues::open(&config, replicators).await?;
        Ok(Arc::new(Cluster {
            clock: Clock::new(config.max_clock_skew),
            config,
            queues,
            last_error: Default::default(),
        }))
    }

    /// Sends accepted events to the intake queue; returns once SQS holds every one.
    pub async fn accept(
        &self,
        events: impl IntoIterator<Item = (Event, i64)>,
    ) -> Result<(), ClusterError> {
        let mut messages = Vec::new();
        for (index, (event, received_at_ms)) in events.into_iter().enumerate() {
            let identity = identity(&event)?;
            let (resource, id) = (event.resource.clone(), event.id.clone());
            let body = serde_json::to_string(&Accepted {
                identity: identity.clone(),
                received_at_ms,
                event,
            })?;
            if body.len() > queues::MAX_MESSAGE_BYTES {
                return Err(ClusterError::TooLarge {
                    index,
                    size: body.len(),
                    max: queues::MAX_MESSAGE_BYTES,
                });
            }
            messages.push(Outgoing::new(&resource, &id, &identity, body));
        }
        self.queues.send(&self.queues.intake, messages).await
    }

    /// Sends dead letters back to their replicator's queue, behind their key's events.
    pub async fn redrive(&self, entries: Vec<DeadLetter>) -> Result<(), ClusterError> {
        for entry in entries {
            let Some(queue) = self.queues.replicators.get(&entry.replicator) else {
                continue;
            };
            // The version tells events apart across hosts; the count, redrives of one.
            let dedup = format!(
                "redrive:{}:{}:{}:{}:{}",
                entry.replicator, entry.resource, entry.record_id, entry.sequence, entry.redrives
            );
            let (resource, id) = (entry.resource.clone(), entry.record_id.clone());
            let body = serde_json::to_string(&Envelope::Redrive(Box::new(entry)))?;
            self.queues
                .send(queue, vec![Outgoing::new(&resource, &id, &dedup, body)])
                .await?;
        }
        Ok(())
    }
}

impl Cluster {
    /// Records how a cluster task is doing: an error stays shown until the next success.
    pub fn report(&self, task: &str, outcome: Result<(), &ClusterError>) {
        let mut last = self.last_error.lock().expect("cluster error lock");
        match outcome {
            Ok(()) => *last = None,
            Err(e) => {
                tracing::error!(task, error = %e, "cluster task failed; retrying");
                *last = Some(format!("{task}: {e}"));
            }
        }
    }
}

/// An event's identity: the SHA-256 of its JSON.
fn identity(event: &Event) -> Result<String, serde_json::Error> {
    let digest = Sha256::digest(serde_json::to_vec(event)?);
    Ok(digest.iter().map(|b| format!("{b:02x}")).collect())
}
