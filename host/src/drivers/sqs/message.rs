//! One delivery as an SQS message: SPEC's payload as the body, `resource`, `action`, `id` and
//! `sequence` as message attributes (so subscribers and SNS filters route without parsing),
//! and on FIFO queues the message group and a deduplication id that includes the sequence.

use aws_sdk_sqs::types::{MessageAttributeValue, SendMessageBatchRequestEntry};

use super::config::{Attribute, MessageGroup, RECORD_ATTRIBUTES};
use crate::delivery::sqs::sqs_id;
use crate::drivers::Delivery;
use crate::drivers::util::payload::Payload;

/// The Amazon SQS Extended Client's pointer class and size attribute, so Java and Python
/// consumers read offloaded bodies with the library they already use.
const POINTER_CLASS: &str = "software.amazon.payloadoffloading.PayloadS3Pointer";
const EXTENDED_SIZE_ATTRIBUTE: &str = "ExtendedPayloadSize";

/// A message ready to be put into a batch.
#[derive(Debug, Clone, Default)]
pub struct Message {
    pub body: String,
    attributes: Vec<Attribute>,
    group_id: Option<String>,
    deduplication_id: Option<String>,
}

/// How messages are made for one queue.
#[derive(Clone, Copy)]
pub struct Shape<'a> {
    pub fifo: bool,
    pub group: &'a MessageGroup,
    pub deduplication: bool,
    /// `messageAttributes`: the same on every message.
    pub extra_attributes: &'a [Attribute],
}

impl Message {
    pub fn of(d: &Delivery, shape: &Shape) -> Message {
        let e = &d.event.event;
        // The route's destination names the queue; the body names the record's resource.
        let payload = Payload::with_resource(d, &e.resource);
        let body = serde_json::to_string(&payload).expect("payloads serialize");
        let [resource, action, id, sequence] = RECORD_ATTRIBUTES;
        let mut attributes = vec![
            Attribute::new(resource, "String", e.resource.clone()),
            Attribute::new(action, "String", e.action.as_str().to_string()),
            Attribute::new(id, "String", e.id.clone()),
            Attribute::new(sequence, "Number", d.event.sequence.to_string()),
        ];
        attributes.extend_from_slice(shape.extra_attributes);
        let key = format!("{}:{}", e.resource, e.id);
        let group_id = shape.fifo.then(|| match shape.group {
            MessageGroup::Key => sqs_id(key.clone()),
            MessageGroup::Fixed(group) => group.clone(),
            MessageGroup::Field(field) => {
                let value = [&e.data, &e.before]
                    .into_iter()
                    .flatten()
                    .find_map(|doc| doc.get(field.as_str()))
                    .and_then(|v| match v {
                        serde_json::Value::String(s) => Some(s.clone()),
                        serde_json::Value::Number(n) => Some(n.to_string()),
                        serde_json::Value::Bool(b) => Some(b.to_string()),
                        _ => None,
                    });
                sqs_id(value.unwrap_or_else(|| key.clone()))
            }
        });
        let deduplication_id = (shape.fifo && shape.deduplication)
            .then(|| sqs_id(format!("{key}:{}", d.event.sequence)));
        Message {
            body,
            attributes,
            group_id,
            deduplication_id,
        }
    }

    /// The size SQS counts against `MaximumMessageSize`: the body plus each attribute's name,
    /// type and value.
    pub fn size(&self) -> usize {
        self.body.len()
            + self
                .attributes
                .iter()
                .map(|a| a.name.len() + a.data_type.len() + a.value.len())
                .sum::<usize>()
    }

    /// The message that points at the body stored in S3 (the Extended Client's format).
    pub fn offloaded(mut self, bucket: &str, key: &str) -> Message {
        let size = self.body.len();
        self.body =
            serde_json::json!([POINTER_CLASS, {"s3BucketName": bucket, "s3Key": key}]).to_string();
        self.attributes.push(Attribute::new(
            EXTENDED_SIZE_ATTRIBUTE,
            "Number",
            size.to_string(),
        ));
        self
    }

    pub fn entry(&self, id: String) -> SendMessageBatchRequestEntry {
        let mut entry = SendMessageBatchRequestEntry::builder()
            .id(id)
            .message_body(&self.body)
            .set_message_group_id(self.group_id.clone())
            .set_message_deduplication_id(self.deduplication_id.clone());
        for a in &self.attributes {
            entry = entry.message_attributes(
                &a.name,
                MessageAttributeValue::builder()
                    .data_type(&a.data_type)
                    .string_value(&a.value)
                    .build()
                    .expect("data type is set"),
            );
        }
        entry.build().expect("id and body are set")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::{ActionSet, Route};
    use crate::event::{StoredEvent, parse_event};
    use std::sync::Arc;

    fn delivery(resource: &str, id: &str, sequence: u64) -> Delivery {
        let event = parse_event(
            serde_json::json!({"resource": resource, "action": "insert", "id": id,
                               "data": {"id": id, "tenant": "t1"}}),
            "2026-12-02T00:00:00Z",
        )
        .unwrap();
        Delivery {
            event: Arc::new(StoredEvent {
                sequence,
                received_at_ms: 0,
                event,
                backfill: None,
            }),
            route: Arc::new(Route {
                resource: resource.into(),
                destination: "q.fifo".into(),
                named: true,
                actions: ActionSet::ALL,
                transform: None,
                options: Default::default(),
            }),
        }
    }

    #[test]
    fn fifo_messages_group_by_key_and_deduplicate_by_sequence() {
        let d = delivery("users", "u1", 7);
        let extra = [Attribute::new("source", "String", "prod".into())];
        let shape = Shape {
            fifo: true,
            group: &MessageGroup::Key,
            deduplication: true,
            extra_attributes: &extra,
        };
        let m = Message::of(&d, &shape);
        assert_eq!(m.group_id.as_deref(), Some("users:u1"));
        assert_eq!(m.deduplication_id.as_deref(), Some("users:u1:7"));
        let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(body["resource"], "users");
        assert_eq!(body["sequence"], 7);
        let names: Vec<_> = m.attributes.iter().map(|a| a.name.as_str()).collect();
        assert_eq!(names, ["resource", "action", "id", "sequence", "source"]);
        assert_eq!(
            m.size(),
            m.body.len()
                + "resourceStringusers".len()
                + "actionStringinsert".len()
                + "idStringu1".len()
                + "sequenceNumber7".len()
                + "sourceStringprod".len()
        );

        let by_tenant = Message::of(
            &d,
            &Shape {
                group: &MessageGroup::Field("tenant".into()),
                ..shape
            },
        );
        assert_eq!(by_tenant.group_id.as_deref(), Some("t1"));

        let standard = Message::of(
            &d,
            &Shape {
                fifo: false,
                ..shape
            },
        );
        assert!(standard.group_id.is_none() && standard.deduplication_id.is_none());
    }

    #[test]
    fn ids_sqs_refuses_are_digested() {
        let long = "x".repeat(200);
        let id = sqs_id(format!("users:{long}"));
        assert!(id.starts_with("sha256-") && id.len() == 71, "{id}");
        assert_eq!(id, sqs_id(format!("users:{long}")));
        assert!(sqs_id("users:ünï code".into()).starts_with("sha256-"));
    }

    #[test]
    fn offloaded_bodies_use_the_extended_client_pointer() {
        let d = delivery("users", "u1", 1);
        let shape = Shape {
            fifo: false,
            group: &MessageGroup::Key,
            deduplication: true,
            extra_attributes: &[],
        };
        let m = Message::of(&d, &shape);
        let size = m.body.len();
        let m = m.offloaded("b", "p/users/u1/1.json");
        let body: serde_json::Value = serde_json::from_str(&m.body).unwrap();
        assert_eq!(body[0], POINTER_CLASS);
        assert_eq!(body[1]["s3Key"], "p/users/u1/1.json");
        assert_eq!(m.attributes.last().unwrap().value, size.to_string());
    }
}
