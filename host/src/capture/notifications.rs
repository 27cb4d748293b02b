//! Notifications mode: long-polls the SQS queue S3 notifies of the bucket's changes, reads
//! each record a notification names as it is now, and deletes the messages only once what
//! they said is durable in the journal (a host that dies first has them redelivered).

use aws_sdk_sqs::types::DeleteMessageBatchRequestEntry;
use serde_json::Value;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use super::source::{CaptureError, Source, Wanted};
use super::stats::{Part, Skip};
use crate::config::sources::{DEFAULT_PARALLELISM, NotificationsConfig};
use crate::delivery::aws;
use crate::delivery::sqs::{QueueRef, Unusable, unusable};
use crate::s3db::KeyKind;
use crate::s3db::connection::Location;

/// One record of a notification: an object of a bucket changed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectEvent {
    pub bucket: String,
    /// Decoded (S3 sends keys URL-encoded, spaces as `+`).
    pub key: String,
    pub sequencer: Option<String>,
    pub event_time: Option<String>,
}

/// The object events of one message body: S3's own, or S3's wrapped by SNS (a topic that fans
/// the bucket's notifications out to several queues).
pub fn parse_message(body: &str) -> Result<Vec<ObjectEvent>, Skip> {
    let value: Value = serde_json::from_str(body).map_err(|_| Skip::Unreadable)?;
    if value["Type"] == "Notification"
        && let Some(inner) = value["Message"].as_str()
    {
        return parse_message(inner);
    }
    if value["Event"] == "s3:TestEvent" {
        return Err(Skip::TestEvent);
    }
    let records = value["Records"].as_array().ok_or(Skip::Unreadable)?;
    records
        .iter()
        .map(|r| {
            let s3 = &r["s3"];
            let bucket = s3["bucket"]["name"].as_str().ok_or(Skip::Unreadable)?;
            let key = s3["object"]["key"].as_str().ok_or(Skip::Unreadable)?;
            Ok(ObjectEvent {
                bucket: bucket.to_string(),
                key: decode_key(key),
                sequencer: s3["object"]["sequencer"].as_str().map(str::to_string),
                event_time: r["eventTime"].as_str().map(str::to_string),
            })
        })
        .collect()
}

/// Undoes S3's form encoding of keys in notifications.
fn decode_key(key: &str) -> String {
    percent_encoding::percent_decode_str(&key.replace('+', " "))
        .decode_utf8_lossy()
        .into_owned()
}

/// What one message asks of the source.
#[derive(Debug, Default)]
struct Notice {
    wanted: Vec<Wanted>,
    skipped: Vec<Skip>,
    catalog_changed: bool,
}

impl Source {
    fn notice(&self, body: &str) -> Notice {
        let mut notice = Notice::default();
        let events = match parse_message(body) {
            Ok(events) => events,
            Err(skip) => {
                notice.skipped.push(skip);
                return notice;
            }
        };
        let bucket = match &self.db.conn.location {
            Location::S3 { bucket, .. } => bucket.as_str(),
            Location::File { .. } => "",
        };
        for e in events {
            if e.bucket != bucket {
                notice.skipped.push(Skip::OtherBucket);
                continue;
            }
            match self.db.classify(&e.key) {
                KeyKind::Record { resource, id } => match self.admits(&resource) {
                    Ok(()) => notice.wanted.push(Wanted {
                        resource,
                        id,
                        sequencer: e.sequencer,
                        event_time: e.event_time,
                    }),
                    Err(skip) => notice.skipped.push(skip),
                },
                KeyKind::Catalog => {
                    notice.catalog_changed = true;
                    notice.skipped.push(Skip::NotARecord);
                }
                KeyKind::Outside => notice.skipped.push(Skip::OutsidePrefix),
                KeyKind::PartitionReference | KeyKind::PluginStorage | KeyKind::Other => {
                    notice.skipped.push(Skip::NotARecord)
                }
            }
        }
        notice
    }
}

/// Runs `config.receivers` receivers until shutdown.
pub async fn run(source: Arc<Source>, config: NotificationsConfig, shutdown: CancellationToken) {
    let client = aws_sdk_sqs::Client::new(&config.access.sdk_config().await);
    let receivers: Vec<_> = (0..config.receivers)
        .map(|_| {
            tokio::spawn(receive_loop(
                source.clone(),
                client.clone(),
                config.clone(),
                shutdown.clone(),
            ))
        })
        .collect();
    for r in receivers {
        let _ = r.await;
    }
}

async fn receive_loop(
    source: Arc<Source>,
    client: aws_sdk_sqs::Client,
    config: NotificationsConfig,
    shutdown: CancellationToken,
) {
    let mut url: Option<String> = None;
    let mut outage = super::Outage::default();
    while !shutdown.is_cancelled() {
        let round = tokio::select! {
            r = round(&source, &client, &config, &mut url) => r,
            _ = shutdown.cancelled() => return,
        };
        match round {
            Ok(()) => {
                outage.reset();
                source.counters.running(Part::Notifications);
            }
            Err(e) => {
                source.counters.failed(Part::Notifications, &e.to_string());
                if !outage.wait(&shutdown).await {
                    return;
                }
            }
        }
    }
}

/// Receives up to 10 notifications, journals what they name, deletes them.
async fn round(
    source: &Source,
    client: &aws_sdk_sqs::Client,
    config: &NotificationsConfig,
    url: &mut Option<String>,
) -> Result<(), CaptureError> {
    let shown = config.queue.to_string();
    let queue_url = match url {
        Some(u) => u.clone(),
        None => {
            if matches!(config.queue, QueueRef::Name(_)) {
                source.report_requests(1);
            }
            let resolved = config
                .queue
                .url(client)
                .await
                .map_err(|e| queue_error("GetQueueUrl", &shown, &e))?;
            url.insert(resolved).clone()
        }
    };
    source.report_requests(1);
    let answer = client
        .receive_message()
        .queue_url(&queue_url)
        .max_number_of_messages(10)
        .wait_time_seconds(config.wait.as_secs() as i32)
        .visibility_timeout(config.visibility_timeout.as_secs().max(1) as i32)
        .send()
        .await
        .map_err(|e| {
            if unusable(&e) == Some(Unusable::Missing) {
                *url = None;
            }
            queue_error("ReceiveMessage", &shown, &e)
        })?;
    let messages = answer.messages.unwrap_or_default();
    if messages.is_empty() {
        return Ok(());
    }
    let notices: Vec<Notice> = messages
        .iter()
        .map(|m| source.notice(m.body().unwrap_or_default()))
        .collect();
    if notices.iter().any(|n| n.catalog_changed) {
        source.db.reload().await?;
    }
    let wanted = notices.iter().flat_map(|n| n.wanted.clone()).collect();
    source.capture(wanted, None, DEFAULT_PARALLELISM).await?;
    for skip in notices.iter().flat_map(|n| &n.skipped) {
        source.counters.skipped(*skip);
    }
    let entries: Vec<DeleteMessageBatchRequestEntry> = messages
        .iter()
        .enumerate()
        .filter_map(|(i, m)| {
            DeleteMessageBatchRequestEntry::builder()
                .id(i.to_string())
                .receipt_handle(m.receipt_handle()?)
                .build()
                .ok()
        })
        .collect();
    source.report_requests(1);
    // What the messages said is durable: a delete that fails only means they come back and
    // are found unchanged.
    match client
        .delete_message_batch()
        .queue_url(&queue_url)
        .set_entries(Some(entries))
        .send()
        .await
    {
        Ok(answer) if !answer.failed.is_empty() => tracing::warn!(
            source = source.id(),
            failed = answer.failed.len(),
            "some notifications could not be deleted; they will be read again and change nothing"
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(
            source = source.id(),
            error = %aws::describe(&e),
            "notifications could not be deleted; they will be read again and change nothing"
        ),
    }
    Ok(())
}

fn queue_error<E>(
    call: &str,
    shown: &str,
    e: &aws_smithy_runtime_api::client::result::SdkError<E, aws_smithy_runtime_api::http::Response>,
) -> CaptureError
where
    E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
{
    let hint = match unusable(e) {
        Some(Unusable::Missing) => {
            ": the queue does not exist; create it and point the bucket's notifications at it (waiting for it)"
        }
        Some(Unusable::Refused) => {
            ": the credentials are refused or may not use this queue (sqs:GetQueueUrl, \
             sqs:ReceiveMessage, sqs:DeleteMessage; kms:Decrypt for encrypted queues)"
        }
        None => "",
    };
    CaptureError::Queue(format!("{call} {shown}: {}{hint}", aws::describe(e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s3_sns_and_test_events() {
        let s3 = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventTime":"2026-12-03T10:00:00.000Z","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"app/resource%3Dusers/data/id%3Dthe+one%C3%A9","sequencer":"0055AED6DCD90281E5"}}}]}"#;
        let events = parse_message(s3).unwrap();
        assert_eq!(
            events,
            vec![ObjectEvent {
                bucket: "b".into(),
                key: "app/resource=users/data/id=the oneé".into(),
                sequencer: Some("0055AED6DCD90281E5".into()),
                event_time: Some("2026-12-03T10:00:00.000Z".into()),
            }]
        );
        let sns = serde_json::json!({"Type": "Notification", "Message": s3}).to_string();
        assert_eq!(parse_message(&sns).unwrap(), events);
        assert_eq!(
            parse_message(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#),
            Err(Skip::TestEvent)
        );
        assert_eq!(parse_message("not json"), Err(Skip::Unreadable));
        assert_eq!(
            parse_message(r#"{"Records":[{"s3":{}}]}"#),
            Err(Skip::Unreadable)
        );
    }
}
