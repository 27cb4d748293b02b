//! The cluster's SQS FIFO queues: one intake queue and one per replicator, created at start
//! when missing; sending in batches of up to 10, receiving, extending and deleting.

use aws_sdk_sqs::types::{
    BatchResultErrorEntry, ChangeMessageVisibilityBatchRequestEntry,
    DeleteMessageBatchRequestEntry, Message, QueueAttributeName, SendMessageBatchRequestEntry,
};
use prometheus_client::metrics::counter::Counter;
use std::collections::HashMap;
use std::time::Duration;

use super::ClusterError;
use crate::config::cluster::ClusterConfig;
use crate::delivery::aws;
use crate::delivery::sqs::sqs_id;

/// The intake queue's name after the prefix.
const INTAKE: &str = "intake";

/// Most entries SQS takes in one batch request, and most bytes in one.
const BATCH_ENTRIES: usize = 10;
pub const MAX_MESSAGE_BYTES: usize = 262_144;

/// One message to send: its group (the record's key), its deduplication id and its body.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub group: String,
    pub dedup: String,
    pub body: String,
}

impl Outgoing {
    pub fn new(resource: &str, id: &str, identity: &str, body: String) -> Outgoing {
        Outgoing {
            group: sqs_id(format!("{resource}:{id}")),
            dedup: sqs_id(identity.to_string()),
            body,
        }
    }
}

/// A received message: its body and what deletes or extends it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: String,
    pub receipt: String,
}

/// How many messages a queue holds, as SQS estimates it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Depth {
    pub visible: u64,
    pub in_flight: u64,
}

pub struct Queues {
    client: aws_sdk_sqs::Client,
    pub intake: String,
    /// Each replicator's queue URL, by replicator id.
    pub replicators: HashMap<String, String>,
    visibility: Duration,
    wait: Duration,
    requests: Counter,
}

impl Queues {
    /// Finds (or creates) the intake queue and each replicator's.
    pub async fn open(
        config: &ClusterConfig,
        replicators: &[String],
        requests: Counter,
    ) -> Result<Queues, ClusterError> {
        let client = aws_sdk_sqs::Client::new(&config.access.sdk_config().await);
        let url = |name: String| {
            let client = client.clone();
            let requests = requests.clone();
            async move { queue_url(&client, &name, config, &requests).await }
        };
        let intake = url(format!("{}{INTAKE}.fifo", config.queue_prefix)).await?;
        let mut urls = HashMap::new();
        for id in replicators {
            urls.insert(id.clone(), url(queue_name(&config.queue_prefix, id)).await?);
        }
        Ok(Queues {
            client,
            intake,
            replicators: urls,
            visibility: config.visibility_timeout,
            wait: config.wait,
            requests,
        })
    }

    fn count(&self) {
        self.requests.inc();
    }

    /// Sends every message, in order, in as few requests as fit; an error when any is not
    /// taken (those that were are deduplicated when sent again within 5 minutes).
    pub async fn send(&self, queue: &str, messages: Vec<Outgoing>) -> Result<(), ClusterError> {
        for chunk in chunks(messages) {
            self.count();
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    SendMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .message_group_id(&m.group)
                        .message_deduplication_id(&m.dedup)
                        .message_body(&m.body)
                        .build()
                        .expect("id and body are set")
                })
                .collect();
            let answer = self
                .client
                .send_message_batch()
                .queue_url(queue)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| ClusterError::queue("SendMessageBatch", queue, &e))?;
            refused("SendMessageBatch", queue, &answer.failed, chunk.len())?;
        }
        Ok(())
    }

    /// Up to 10 messages, hidden from other hosts for the visibility timeout.
    pub async fn receive(&self, queue: &str) -> Result<Vec<Received>, ClusterError> {
        self.count();
        let answer = self
            .client
            .receive_message()
            .queue_url(queue)
            .max_number_of_messages(BATCH_ENTRIES as i32)
            .wait_time_seconds(self.wait.as_secs() as i32)
            .visibility_timeout(self.visibility.as_secs() as i32)
            .send()
            .await
            .map_err(|e| ClusterError::queue("ReceiveMessage", queue, &e))?;
        Ok(answer
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(received)
            .collect())
    }

    /// Deletes handled messages; a failure only means they come back (and are deduplicated
    /// or guarded by their version downstream).
    pub async fn delete(&self, queue: &str, receipts: &[String]) -> Result<(), ClusterError> {
        for chunk in receipts.chunks(BATCH_ENTRIES) {
            self.count();
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .build()
                        .expect("id and handle are set")
                })
                .collect();
            let answer = self
                .client
                .delete_message_batch()
                .queue_url(queue)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| ClusterError::queue("DeleteMessageBatch", queue, &e))?;
            refused("DeleteMessageBatch", queue, &answer.failed, chunk.len())?;
        }
        Ok(())
    }

    /// Hides held messages for another visibility timeout (`Duration::ZERO`: hands them back
    /// at once).
    pub async fn extend(
        &self,
        queue: &str,
        receipts: &[String],
        hidden_for: Duration,
    ) -> Result<(), ClusterError> {
        // Every chunk is tried: one refused entry (a receipt gone stale) leaves the rest held.
        let mut outcome = Ok(());
        for chunk in receipts.chunks(BATCH_ENTRIES) {
            self.count();
            let entries = chunk
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    ChangeMessageVisibilityBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(r)
                        .visibility_timeout(hidden_for.as_secs() as i32)
                        .build()
                        .expect("id and handle are set")
                })
                .collect();
            let call = "ChangeMessageVisibilityBatch";
            let answer = self
                .client
                .change_message_visibility_batch()
                .queue_url(queue)
                .set_entries(Some(entries))
                .send()
                .await
                .map_err(|e| ClusterError::queue(call, queue, &e))
                .and_then(|a| refused(call, queue, &a.failed, chunk.len()));
            if outcome.is_ok() {
                outcome = answer;
            }
        }
        outcome
    }

    pub fn visibility(&self) -> Duration {
        self.visibility
    }

    /// What SQS estimates a queue holds.
    pub async fn depth(&self, queue: &str) -> Result<Depth, ClusterError> {
        self.count();
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(queue)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .map_err(|e| ClusterError::queue("GetQueueAttributes", queue, &e))?;
        let attributes = answer.attributes.unwrap_or_default();
        let number = |name: QueueAttributeName| {
            attributes
                .get(&name)
                .and_then(|v| v.parse().ok())
                .unwrap_or(0)
        };
        Ok(Depth {
            visible: number(QueueAttributeName::ApproximateNumberOfMessages),
            in_flight: number(QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
        })
    }
}

fn received(m: Message) -> Option<Received> {
    Some(Received {
        receipt: m.receipt_handle?,
        body: m.body.unwrap_or_default(),
    })
}

/// The entries a batch request did not carry out, as one error naming the first.
fn refused(
    call: &'static str,
    queue: &str,
    failed: &[BatchResultErrorEntry],
    sent: usize,
) -> Result<(), ClusterError> {
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(ClusterError::Refused {
            call,
            queue: crate::redact::url(queue),
            reason: format!(
                "{} of {sent} entries refused: {} ({})",
                failed.len(),
                first.message().unwrap_or_default(),
                first.code()
            ),
        }),
    }
}

/// A replicator's queue name: its id when SQS takes it as it is, else (and for an id that is
/// the intake queue's name, or too long) what SQS takes of it followed by a digest of the id,
/// so two ids never share a queue.
pub fn queue_name(prefix: &str, replicator: &str) -> String {
    let cleaned: String = replicator
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let room = 80 - ".fifo".len() - prefix.len();
    let as_is = cleaned == replicator && replicator != INTAKE && cleaned.len() <= room;
    let stem = if as_is {
        cleaned
    } else {
        let digest = sqs_id(format!("{replicator}\u{0}"));
        let digest = &digest.trim_start_matches("sha256-")[..16];
        let keep = cleaned.len().min(room - 17);
        format!("{}-{digest}", &cleaned[..keep])
    };
    format!("{prefix}{stem}.fifo")
}

/// Groups messages into batch requests: at most 10, and at most 256 KiB, each.
fn chunks(messages: Vec<Outgoing>) -> Vec<Vec<Outgoing>> {
    let mut out: Vec<Vec<Outgoing>> = Vec::new();
    let mut bytes = 0;
    for m in messages {
        let size = m.body.len();
        match out.last_mut() {
            Some(last) if last.len() < BATCH_ENTRIES && bytes + size <= MAX_MESSAGE_BYTES => {
                bytes += size;
                last.push(m);
            }
            _ => {
                bytes = size;
                out.push(vec![m]);
            }
        }
    }
    out
}

/// The queue's URL; created first (FIFO, with the configured visibility timeout) when allowed.
async fn queue_url(
    client: &aws_sdk_sqs::Client,
    name: &str,
    config: &ClusterConfig,
    requests: &Counter,
) -> Result<String, ClusterError> {
    requests.inc();
    if config.create_queues {
        let created = client
            .create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::FifoQueue, "true")
            // The longest SQS keeps a message: a replicator paused this long loses events.
            .attributes(QueueAttributeName::MessageRetentionPeriod, "1209600")
            .attributes(
                QueueAttributeName::VisibilityTimeout,
                config.visibility_timeout.as_secs().to_string(),
            )
            .send()
            .await;
        match created {
            Ok(answer) => return answer.queue_url.ok_or_else(|| no_url("CreateQueue", name)),
            // Made before with other attributes: use it as it is.
            Err(e) if aws::error_code(&e) == Some("QueueAlreadyExists") => {}
            Err(e) => return Err(ClusterError::queue("CreateQueue", name, &e)),
        }
    }
    let answer = client
        .get_queue_url()
        .queue_name(name)
        .send()
        .await
        .map_err(|e| ClusterError::queue("GetQueueUrl", name, &e))?;
    answer.queue_url.ok_or_else(|| no_url("GetQueueUrl", name))
}

fn no_url(call: &'static str, name: &str) -> ClusterError {
    ClusterError::Refused {
        call,
        queue: name.to_string(),
        reason: "the answer names no queue URL".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_names_are_what_sqs_takes() {
        assert_eq!(queue_name("r-", "pg-1"), "r-pg-1.fifo");
        let dotted = queue_name("r-", "pg.main");
        assert!(
            dotted.starts_with("r-pg_main-") && dotted.ends_with(".fifo"),
            "{dotted}"
        );
        assert_ne!(
            dotted,
            queue_name("r-", "pg_main"),
            "two ids never share a queue"
        );
        assert_ne!(queue_name("r-", "intake"), "r-intake.fifo");
        let long = queue_name("r-", &"x".repeat(100));
        assert_eq!(long.len(), 80);
        assert_ne!(long, queue_name("r-", &"x".repeat(101)));
    }

    #[test]
    fn batches_hold_ten_messages_and_fit_the_size_limit() {
        let m = |n| Outgoing::new("u", "1", "i", "x".repeat(n));
        let sizes: Vec<usize> = chunks((0..25).map(|_| m(10)).collect())
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, [10, 10, 5]);
        let big: Vec<usize> = chunks(vec![m(200_000), m(100_000), m(10)])
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(big, [1, 2]);
    }
}
