//! The JSON body webhook and queue destinations receive: the s3db.js envelope field names
//! plus `id` and `sequence`, so receivers can order and de-duplicate.

use serde::Serialize;
use serde_json::Value;

use crate::delivery::Delivery;

#[derive(Serialize)]
pub struct Payload<'a> {
    pub resource: &'a str,
    pub action: &'static str,
    pub id: &'a str,
    pub sequence: u64,
    pub timestamp: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<&'a str>,
    pub data: Option<&'a Value>,
    pub before: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metadata: Option<&'a Value>,
}

impl<'a> Payload<'a> {
    /// The payload of one delivery; `resource` is the route's destination name.
    pub fn of(d: &'a Delivery) -> Self {
        Self::with_resource(d, d.destination())
    }

    /// The payload naming `resource` (queues name the record's own resource: the route's
    /// destination is the queue).
    pub fn with_resource(d: &'a Delivery, resource: &'a str) -> Self {
        let e = &d.event.event;
        Payload {
            resource,
            action: e.action.as_str(),
            id: &e.id,
            sequence: d.event.sequence,
            timestamp: &e.timestamp,
            source: e.source.as_deref(),
            data: e.data.as_ref(),
            before: e.before.as_ref(),
            metadata: e.metadata.as_ref(),
        }
    }
}

/// The idempotency key of a delivery: `(resource, id, sequence)`.
pub fn idempotency_key(d: &Delivery) -> String {
    format!(
        "{}:{}:{}",
        d.route.destination, d.event.event.id, d.event.sequence
    )
}
