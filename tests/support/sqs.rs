//! The SQS server `tests/run` started (moto, `tests/servers/sqs.sh`): a queue per test, and
//! everything a queue received, read back with the AWS SDK as a consumer would.

use serde_json::Value;
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use aws_sdk_sqs::types::{
    DeleteMessageBatchRequestEntry, MessageSystemAttributeName, QueueAttributeName,
};

/// A connection to the test SQS server, with the static credentials the tests use.
pub struct Sqs {
    pub client: aws_sdk_sqs::Client,
    /// moto's S3, for bodies sent through S3.
    pub s3: aws_sdk_s3::Client,
    /// The server's base URL (moto also serves S3 there).
    pub endpoint: String,
}

/// A message as a consumer receives it.
#[derive(Debug, Clone)]
pub struct Received {
    pub body: Value,
    /// Message attributes, name -> value.
    pub attributes: BTreeMap<String, String>,
    pub group_id: Option<String>,
    pub deduplication_id: Option<String>,
}

impl Received {
    pub fn sequence(&self) -> u64 {
        self.body["sequence"]
            .as_u64()
            .expect("a sequence in the body")
    }

    pub fn id(&self) -> &str {
        self.body["id"].as_str().expect("an id in the body")
    }
}

/// A queue name no other test or earlier run uses (the server may be reused across runs).
pub fn unique(name: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let (stem, fifo) = match name.strip_suffix(".fifo") {
        Some(stem) => (stem, ".fifo"),
        None => (name, ""),
    };
    format!("{stem}-{}-{nanos}{fifo}", std::process::id())
}

impl Sqs {
    /// The SQS server of the run (`SQS_ENDPOINT`).
    pub async fn connect() -> Sqs {
        let endpoint = std::env::var("SQS_ENDPOINT")
            .expect("SQS_ENDPOINT is not set: run the tests with tests/run (it starts moto)");
        Sqs::connect_to(endpoint).await
    }

    /// moto (`MOTO_ENDPOINT`), whose S3 notifies its SQS queues.
    pub async fn moto() -> Sqs {
        let endpoint = std::env::var("MOTO_ENDPOINT")
            .expect("MOTO_ENDPOINT is not set: start moto with tests/servers/sqs.sh");
        Sqs::connect_to(endpoint).await
    }

    pub async fn connect_to(endpoint: String) -> Sqs {
        let config = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new("us-east-1"))
            .endpoint_url(&endpoint)
            .credentials_provider(aws_sdk_sqs::config::Credentials::new(
                "test", "test", None, None, "tests",
            ))
            .load()
            .await;
        let s3 = aws_sdk_s3::config::Builder::from(&config)
            .force_path_style(true)
            .build();
        Sqs {
            client: aws_sdk_sqs::Client::new(&config),
            s3: aws_sdk_s3::Client::from_conf(s3),
            endpoint,
        }
    }

    /// Creates a queue (FIFO when the name ends in `.fifo`) and returns its URL.
    pub async fn create_queue(&self, name: &str, attributes: &[(&str, &str)]) -> String {
        let mut request = self.client.create_queue().queue_name(name);
        if name.ends_with(".fifo") {
            request = request.attributes(QueueAttributeName::FifoQueue, "true");
        }
        for (k, v) in attributes {
            request = request.attributes(QueueAttributeName::from(*k), *v);
        }
        request.send().await.unwrap().queue_url.unwrap()
    }

    pub async fn set_attribute(&self, url: &str, name: &str, value: &str) {
        self.client
            .set_queue_attributes()
            .queue_url(url)
            .attributes(QueueAttributeName::from(name), value)
            .send()
            .await
            .unwrap();
    }

    /// How many messages the queue holds, as SQS counts them.
    pub async fn approximate_messages(&self, url: &str) -> u64 {
        self.count(url, &[QueueAttributeName::ApproximateNumberOfMessages])
            .await
    }

    /// Messages the queue holds, visible or handed out and not yet deleted.
    pub async fn messages_held(&self, url: &str) -> u64 {
        self.count(
            url,
            &[
                QueueAttributeName::ApproximateNumberOfMessages,
                QueueAttributeName::ApproximateNumberOfMessagesNotVisible,
            ],
        )
        .await
    }

    /// The sum of the queue's counters `names`.
    async fn count(&self, url: &str, names: &[QueueAttributeName]) -> u64 {
        let answer = self
            .client
            .get_queue_attributes()
            .queue_url(url)
            .set_attribute_names(Some(names.to_vec()))
            .send()
            .await
            .unwrap();
        let attributes = answer.attributes.unwrap_or_default();
        names
            .iter()
            .map(|n| attributes.get(n).map_or(0, |v| v.parse::<u64>().unwrap()))
            .sum()
    }

    /// Receives (and deletes) messages until `expected` arrived, or nothing more came for
    /// `idle`; in the order SQS handed them out.
    pub async fn receive(&self, url: &str, expected: usize, idle: Duration) -> Vec<Received> {
        let mut out = Vec::new();
        let mut last = Instant::now();
        while out.len() < expected && last.elapsed() < idle {
            let answer = self
                .client
                .receive_message()
                .queue_url(url)
                .max_number_of_messages(10)
                .wait_time_seconds(1)
                .message_attribute_names("All")
                .message_system_attribute_names(MessageSystemAttributeName::All)
                .send()
                .await
                .unwrap();
            let messages = answer.messages.unwrap_or_default();
            if messages.is_empty() {
                continue;
            }
            last = Instant::now();
            let mut deletes = Vec::new();
            for (i, m) in messages.into_iter().enumerate() {
                let system = m.attributes.clone().unwrap_or_default();
                let body = m.body.as_deref().unwrap_or("null");
                out.push(Received {
                    body: serde_json::from_str(body)
                        .unwrap_or_else(|e| panic!("body is not JSON ({e}): {body}")),
                    attributes: m
                        .message_attributes
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(k, v)| (k, v.string_value.unwrap_or_default()))
                        .collect(),
                    group_id: system
                        .get(&MessageSystemAttributeName::MessageGroupId)
                        .cloned(),
                    deduplication_id: system
                        .get(&MessageSystemAttributeName::MessageDeduplicationId)
                        .cloned(),
                });
                deletes.push(
                    DeleteMessageBatchRequestEntry::builder()
                        .id(i.to_string())
                        .receipt_handle(m.receipt_handle.unwrap())
                        .build()
                        .unwrap(),
                );
            }
            self.client
                .delete_message_batch()
                .queue_url(url)
                .set_entries(Some(deletes))
                .send()
                .await
                .unwrap();
        }
        out
    }

    /// A fresh bucket whose ObjectCreated and ObjectRemoved notifications go to a fresh standard
    /// queue; returns both names (the queue as its URL).
    pub async fn notified_bucket(&self, name: &str) -> (String, String) {
        use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
        let bucket = unique(name).to_lowercase();
        self.create_bucket(&bucket).await;
        let queue = self.create_queue(&unique(name), &[]).await;
        let arn = self
            .client
            .get_queue_attributes()
            .queue_url(&queue)
            .attribute_names(QueueAttributeName::QueueArn)
            .send()
            .await
            .unwrap()
            .attributes
            .unwrap()[&QueueAttributeName::QueueArn]
            .clone();
        let to_queue = QueueConfiguration::builder()
            .queue_arn(arn)
            .events(Event::from("s3:ObjectCreated:*"))
            .events(Event::from("s3:ObjectRemoved:*"))
            .build()
            .unwrap();
        self.s3
            .put_bucket_notification_configuration()
            .bucket(&bucket)
            .notification_configuration(
                NotificationConfiguration::builder()
                    .queue_configurations(to_queue)
                    .build(),
            )
            .send()
            .await
            .unwrap();
        (bucket, queue)
    }

    /// The config of a source reading `connection` through the notifications of `queue`.
    pub fn notifications_source(&self, id: &str, connection: &str, queue: &str) -> String {
        format!(
            "  - id: {id}\n    connectionString: {connection}\n    notifications:\n      queueUrl: {queue}\n      endpoint: {}\n      credentials: {{accessKeyId: test, secretAccessKey: test}}\n      waitTimeSeconds: 1\n      visibilityTimeout: 2s\n",
            self.endpoint
        )
    }

    /// An s3db connection string for a prefix of a bucket of this server.
    pub fn database(&self, bucket: &str, prefix: &str) -> String {
        let host = self.endpoint.trim_start_matches("http://");
        format!("http://test:test@{host}/{bucket}/{prefix}")
    }

    /// Creates a bucket on moto's S3 (same server).
    pub async fn create_bucket(&self, bucket: &str) {
        self.s3.create_bucket().bucket(bucket).send().await.unwrap();
    }

    /// An object of moto's S3, as JSON.
    pub async fn object(&self, bucket: &str, key: &str) -> Value {
        let object = self
            .s3
            .get_object()
            .bucket(bucket)
            .key(key)
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {bucket}/{key}: {e:?}"));
        let bytes = object.body.collect().await.unwrap().into_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }
}
