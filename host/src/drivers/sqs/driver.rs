//! Sends a batch as SendMessageBatch requests: grouped by queue, up to 10 entries whose sizes
//! add up to at most the queue's `MaximumMessageSize`, each entry's outcome its record's.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use aws_sdk_sqs::operation::send_message_batch::SendMessageBatchOutput;
use aws_sdk_sqs::types::QueueAttributeName;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::config::{MessageGroup, QueueRef, SqsConfig};
use super::message::{Message, Shape};
use crate::delivery::sqs::{self, Unusable};
use crate::delivery::{Route, aws, bounded};
use crate::drivers::util::http::parse_retry_after;
use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver, ErrorKind};

/// SendMessageBatch takes at most this many entries.
const MAX_ENTRIES: usize = 10;

/// What a record id escapes in an S3 key: all but letters, digits and `-_.~`.
const KEY_ESCAPES: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// S3 codes after which no large body can be stored until someone fixes the bucket.
const BUCKET_UNUSABLE: [&str; 3] = ["NoSuchBucket", "InvalidAccessKeyId", "AllAccessDisabled"];

/// A queue as read from SQS.
#[derive(Debug)]
struct Queue {
    url: String,
    fifo: bool,
    max_size: usize,
    /// How the queue appears in messages.
    shown: String,
}

/// A message on its way, with the index of its delivery in the batch.
struct Entry {
    index: usize,
    message: Message,
}

type EntryResult = (usize, Result<(), DeliveryError>);

pub struct SqsDriver {
    config: SqsConfig,
    routes: Vec<Route>,
    sqs: aws_sdk_sqs::Client,
    /// Where bodies over the limit go, with `largePayloads`.
    s3: Option<aws_sdk_s3::Client>,
    queues: Mutex<HashMap<QueueRef, Arc<Queue>>>,
    requests: AtomicU64,
}

impl SqsDriver {
    pub async fn new(config: SqsConfig, routes: &[Route]) -> SqsDriver {
        let sqs = aws_sdk_sqs::Client::new(&config.access.sdk_config().await);
        let s3 = match &config.large_payloads {
            Some(large) => {
                let s3_config = aws_sdk_s3::config::Builder::from(&large.access.sdk_config().await)
                    .force_path_style(large.access.endpoint.is_some())
                    .build();
                Some(aws_sdk_s3::Client::from_conf(s3_config))
            }
            None => None,
        };
        SqsDriver {
            config,
            routes: routes.to_vec(),
            sqs,
            s3,
            queues: Mutex::new(HashMap::new()),
            requests: AtomicU64::new(0),
        }
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// The queue, read from SQS once (URL, FIFO or not, size limit).
    async fn queue(&self, reference: &QueueRef) -> Result<Arc<Queue>, DeliveryError> {
        if let Some(q) = self.queues.lock().expect("not poisoned").get(reference) {
            return Ok(q.clone());
        }
        let shown = reference.to_string();
        if matches!(reference, QueueRef::Name(_)) {
            self.count();
        }
        let url = reference
            .url(&self.sqs)
            .await
            .map_err(|e| self.error("GetQueueUrl", &shown, e))?;
        self.count();
        let answer = self
            .sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(QueueAttributeName::FifoQueue)
            .attribute_names(QueueAttributeName::MaximumMessageSize)
            .attribute_names(QueueAttributeName::ContentBasedDeduplication)
            .send()
            .await
            .map_err(|e| self.error("GetQueueAttributes", &shown, e))?;
        let attributes = answer.attributes.unwrap_or_default();
        let flag = |name| attributes.get(&name).is_some_and(|v| v == "true");
        let fifo = flag(QueueAttributeName::FifoQueue);
        if fifo
            && !self.config.deduplication
            && !flag(QueueAttributeName::ContentBasedDeduplication)
        {
            return Err(DeliveryError::unavailable(format!(
                "{shown} is a FIFO queue without content-based deduplication and \
                 deduplicationId is false: SQS would refuse every message; set \
                 deduplicationId: true (the default) or turn ContentBasedDeduplication on"
            )));
        }
        let max_size = attributes
            .get(&QueueAttributeName::MaximumMessageSize)
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_048_576);
        let queue = Arc::new(Queue {
            url,
            fifo,
            max_size,
            shown,
        });
        self.queues
            .lock()
            .expect("not poisoned")
            .insert(reference.clone(), queue.clone());
        Ok(queue)
    }

    /// Forgets a queue SQS says is gone, so it is looked up again when it is back.
    fn forget(&self, reference: &QueueRef) {
        self.queues.lock().expect("not poisoned").remove(reference);
    }

    /// A failed call as a delivery error, with what a person can do about it.
    fn error<E>(&self, call: &str, shown: &str, e: SdkError<E, Response>) -> DeliveryError
    where
        E: ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (kind, hint) = match sqs::unusable(&e) {
            Some(Unusable::Missing) => (
                ErrorKind::Unavailable,
                ": the queue does not exist; create it or correct the queue option (waiting for it)",
            ),
            Some(Unusable::Refused) => (
                ErrorKind::Unavailable,
                ": the credentials are refused or may not use this queue (sqs:GetQueueUrl, \
                 sqs:GetQueueAttributes, sqs:SendMessage; kms:GenerateDataKey for encrypted queues)",
            ),
            None => (aws::error_kind(&e), ""),
        };
        let retry_after = match &e {
            SdkError::ServiceError(s) => s
                .raw()
                .headers()
                .get("retry-after")
                .and_then(parse_retry_after),
            _ => None,
        };
        DeliveryError {
            kind,
            message: format!("{call} {shown}: {}{hint}", aws::describe(&e)),
            retry_after,
        }
    }

    /// The message of one delivery for `queue`, its body moved to S3 when it is over the
    /// queue's limit and `largePayloads` is set.
    async fn message(&self, d: &Delivery, queue: &Queue) -> Result<Message, DeliveryError> {
        let shape = Shape {
            fifo: queue.fifo,
            group: &self.config.message_group,
            deduplication: self.config.deduplication,
            extra_attributes: &self.config.message_attributes,
        };
        let message = Message::of(d, &shape);
        let size = message.size();
        if size <= queue.max_size {
            return Ok(message);
        }
        let (Some(large), Some(s3)) = (&self.config.large_payloads, &self.s3) else {
            return Err(DeliveryError::permanent(format!(
                "the message is {size} bytes, over the {} bytes {} takes (MaximumMessageSize); \
                 set largePayloads {{bucket, prefix}} to send large records through S3",
                queue.max_size, queue.shown
            )));
        };
        let e = &d.event.event;
        // The same key on every attempt, so a retry overwrites rather than leaves a copy.
        let key = format!(
            "{}{}/{}/{}.json",
            large.prefix,
            e.resource,
            percent_encoding::utf8_percent_encode(&e.id, KEY_ESCAPES),
            d.event.sequence
        );
        self.count();
        s3.put_object()
            .bucket(&large.bucket)
            .key(&key)
            .content_type("application/json")
            .body(message.body.clone().into_bytes().into())
            .send()
            .await
            .map_err(|err| DeliveryError {
                kind: aws::error_kind_with(&err, |c| {
                    BUCKET_UNUSABLE.contains(&c) || sqs::ACCESS_REFUSED.contains(&c)
                }),
                message: format!(
                    "storing the {size}-byte body in s3://{}/{key}: {}",
                    large.bucket,
                    aws::describe(&err)
                ),
                retry_after: None,
            })?;
        Ok(message.offloaded(&large.bucket, &key))
    }

    /// One SendMessageBatch: each entry's verdict, or the request's error.
    async fn send_batch(
        &self,
        reference: &QueueRef,
        queue: &Queue,
        entries: &[Entry],
    ) -> Result<Vec<EntryResult>, DeliveryError> {
        self.count();
        let request = self
            .sqs
            .send_message_batch()
            .queue_url(&queue.url)
            .set_entries(Some(
                entries
                    .iter()
                    .map(|e| e.message.entry(e.index.to_string()))
                    .collect(),
            ));
        let answer = match request.send().await {
            Ok(answer) => answer,
            Err(e) => {
                let error = self.error("SendMessageBatch", &queue.shown, e);
                if error.kind == ErrorKind::Unavailable {
                    self.forget(reference);
                }
                return Err(error);
            }
        };
        Ok(verdicts(entries, &answer, &queue.shown))
    }

    /// A batch request; one SQS refuses as a whole (not per entry) is sent again one entry
    /// at a time, so only the record at fault fails.
    async fn send_chunk(
        &self,
        reference: &QueueRef,
        queue: &Queue,
        entries: Vec<Entry>,
    ) -> Vec<EntryResult> {
        let all = |entries: &[Entry], e: DeliveryError| -> Vec<EntryResult> {
            entries.iter().map(|x| (x.index, Err(e.clone()))).collect()
        };
        match self.send_batch(reference, queue, &entries).await {
            Ok(results) => results,
            Err(e) if e.kind == ErrorKind::Permanent && entries.len() > 1 => {
                // The queue may have changed (a smaller MaximumMessageSize): read it again
                // for the next batches.
                self.forget(reference);
                let mut singles = Vec::with_capacity(entries.len());
                for entry in entries {
                    let one = std::slice::from_ref(&entry);
                    match self.send_batch(reference, queue, one).await {
                        Ok(r) => singles.extend(r),
                        Err(e) => singles.extend(all(one, e)),
                    }
                }
                singles
            }
            Err(e) => all(&entries, e),
        }
    }

    /// The deliveries of one queue: messages made, packed into requests, sent.
    async fn deliver_to(
        &self,
        reference: &QueueRef,
        items: Vec<(usize, &Delivery)>,
    ) -> Vec<EntryResult> {
        let queue = match self.queue(reference).await {
            Ok(q) => q,
            Err(e) => return items.iter().map(|(i, _)| (*i, Err(e.clone()))).collect(),
        };
        let mut results = Vec::new();
        let mut chunks: Vec<Vec<Entry>> = Vec::new();
        let mut chunk_size = 0;
        for (index, d) in items {
            let message = match self.message(d, &queue).await {
                Ok(m) => m,
                Err(e) => {
                    results.push((index, Err(e)));
                    continue;
                }
            };
            let size = message.size();
            let fits = chunks
                .last()
                .is_some_and(|c| c.len() < MAX_ENTRIES && chunk_size + size <= queue.max_size);
            if !fits {
                chunks.push(Vec::new());
                chunk_size = 0;
            }
            chunk_size += size;
            chunks
                .last_mut()
                .expect("a chunk was just pushed")
                .push(Entry { index, message });
        }
        // Groups that hold several keys keep their order across keys only if their requests
        // go one after another.
        let shared_groups = queue.fifo && self.config.message_group != MessageGroup::Key;
        let parallelism = if shared_groups {
            1
        } else {
            self.config.parallelism
        };
        let sends: Vec<_> = chunks
            .into_iter()
            .map(|chunk| self.send_chunk(reference, &queue, chunk))
            .collect();
        for sent in bounded(sends, parallelism).await {
            results.extend(sent);
        }
        results
    }
}

/// Each entry's verdict from SendMessageBatch's answer: successful; failed, where SQS's sender
/// faults fail the same way again (that record's permanent error) and the rest are worth
/// another attempt; or not mentioned at all (another attempt).
fn verdicts(entries: &[Entry], answer: &SendMessageBatchOutput, shown: &str) -> Vec<EntryResult> {
    let mut by_id: HashMap<&str, Result<(), DeliveryError>> = HashMap::new();
    for ok in &answer.successful {
        by_id.insert(ok.id(), Ok(()));
    }
    for failed in &answer.failed {
        let code = failed.code();
        let kind = if sqs::unusable_code(code).is_some() {
            ErrorKind::Unavailable
        } else if failed.sender_fault() {
            ErrorKind::Permanent
        } else {
            ErrorKind::Transient
        };
        let message = format!(
            "{shown} refused the message: {}: {}",
            failed.code(),
            failed.message().unwrap_or("no message")
        );
        by_id.insert(failed.id(), Err(DeliveryError::new(kind, message)));
    }
    entries
        .iter()
        .map(|e| {
            let verdict = by_id
                .remove(e.index.to_string().as_str())
                .unwrap_or_else(|| {
                    Err(DeliveryError::transient(format!(
                        "SendMessageBatch {shown}: the answer does not mention this message"
                    )))
                });
            (e.index, verdict)
        })
        .collect()
}

#[async_trait::async_trait]
impl Driver for SqsDriver {
    /// Looks up every queue the routes use: a missing one keeps the replicator waiting (and
    /// says so) until it exists.
    async fn init(&self) -> Result<(), DeliveryError> {
        let mut seen = Vec::new();
        for route in &self.routes {
            if let Some(q) = self.config.queue_for(route, &route.resource)
                && !seen.contains(&q)
            {
                self.queue(&q).await?;
                seen.push(q);
            }
        }
        Ok(())
    }

    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
        let mut results: Vec<Result<(), DeliveryError>> = vec![Ok(()); batch.len()];
        let mut by_queue: BTreeMap<QueueRef, Vec<(usize, &Delivery)>> = BTreeMap::new();
        for (i, d) in batch.iter().enumerate() {
            match self.config.queue_for(&d.route, d.destination()) {
                Some(q) => by_queue.entry(q).or_default().push((i, d)),
                None => {
                    results[i] = Err(DeliveryError::permanent(format!(
                        "no queue for resource \"{}\"",
                        d.route.resource
                    )))
                }
            }
        }
        let sends: Vec<_> = by_queue
            .iter()
            .map(|(q, items)| self.deliver_to(q, items.clone()))
            .collect();
        for sent in futures::future::join_all(sends).await {
            for (i, r) in sent {
                results[i] = r;
            }
        }
        Ok(results)
    }

    fn requests_made(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_sqs::types::{BatchResultErrorEntry, SendMessageBatchResultEntry};

    fn entry(index: usize) -> Entry {
        Entry {
            index,
            message: Message::default(),
        }
    }

    #[test]
    fn each_entry_gets_its_own_verdict() {
        let ok = |id: &str| {
            SendMessageBatchResultEntry::builder()
                .id(id)
                .message_id("m")
                .md5_of_message_body("x")
                .build()
                .unwrap()
        };
        let failed = |id: &str, sender_fault: bool, code: &str| {
            BatchResultErrorEntry::builder()
                .id(id)
                .sender_fault(sender_fault)
                .code(code)
                .message("why")
                .build()
                .unwrap()
        };
        let answer = SendMessageBatchOutput::builder()
            .successful(ok("3"))
            .failed(failed("5", true, "InvalidParameterValue"))
            .failed(failed("7", false, "InternalError"))
            .build()
            .unwrap();
        let entries = [entry(3), entry(5), entry(7), entry(9)];
        let results = verdicts(&entries, &answer, "queue \"q\"");
        let kinds: Vec<_> = results
            .iter()
            .map(|(i, r)| (*i, r.as_ref().err().map(|e| e.kind)))
            .collect();
        assert_eq!(
            kinds,
            [
                (3, None),
                (5, Some(ErrorKind::Permanent)),
                (7, Some(ErrorKind::Transient)),
                (9, Some(ErrorKind::Transient))
            ]
        );
        assert_eq!(
            results[1].1.as_ref().unwrap_err().message,
            "queue \"q\" refused the message: InvalidParameterValue: why"
        );
    }
}
