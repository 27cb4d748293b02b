//! SQS options: s3db.js's names (`region`, `queueUrl`, `queues`, `defaultQueue`, `queueName`,
//! `messageGroupId`, `deduplicationId`, `credentials`, `endpoint`) plus `messageGroupField`,
//! `largePayloads` and `parallelism`.

use std::collections::BTreeMap;

use crate::delivery::aws::AwsAccess;
pub use crate::delivery::sqs::QueueRef;
use crate::delivery::sqs::id_problem;
use crate::delivery::{ANY_RESOURCE, Route};
use crate::options::{Problems, Section, join};

/// A message attribute (`DataType` `String` or `Number`, or a custom type such as
/// `String.tenant`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribute {
    pub name: String,
    pub data_type: String,
    pub value: String,
}

impl Attribute {
    pub(super) fn new(name: &str, data_type: &str, value: String) -> Attribute {
        Attribute {
            name: name.to_string(),
            data_type: data_type.to_string(),
            value,
        }
    }
}

/// The attributes every message carries; `messageAttributes` may not reuse their names.
pub const RECORD_ATTRIBUTES: [&str; 4] = ["resource", "action", "id", "sequence"];
/// SQS takes at most this many attributes per message (one is kept for the pointer's size).
pub const MAX_ATTRIBUTES: usize = 10;

/// The FIFO message group of a record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageGroup {
    /// The record's key (`resource:id`): keys run in parallel, each in order. The default.
    Key,
    /// One group for everything (s3db.js's `messageGroupId`): one message in flight per queue.
    Fixed(String),
    /// A field of the record (`messageGroupField`), e.g. a tenant; the key when it is missing.
    Field(String),
}

/// `largePayloads`: bodies over the queue's limit go to S3, the message carries a pointer.
#[derive(Debug, Clone)]
pub struct LargePayloads {
    pub bucket: String,
    /// Key prefix, ending in `/` when not empty.
    pub prefix: String,
    /// The driver's region and credentials; its own `endpoint` when given (for local servers).
    pub access: AwsAccess,
}

#[derive(Debug, Clone)]
pub struct SqsConfig {
    pub access: AwsAccess,
    /// `queueUrl` or `queueName`: every resource without a queue of its own.
    pub queue: Option<QueueRef>,
    /// `queues`: resource -> queue.
    pub queues: BTreeMap<String, QueueRef>,
    /// `defaultQueue` (`defaultQueueUrl`, `defaultQueueName`): the last resort.
    pub default_queue: Option<QueueRef>,
    pub message_group: MessageGroup,
    /// Send a deduplication id (`resource:id:sequence`) on FIFO queues.
    pub deduplication: bool,
    pub large_payloads: Option<LargePayloads>,
    /// `messageAttributes`: added to every message.
    pub message_attributes: Vec<Attribute>,
    /// SendMessageBatch requests in flight at once for one batch.
    pub parallelism: usize,
}

impl SqsConfig {
    /// The queue of a route's events of `resource` (the event's own, for a `*` route): the
    /// one its entry names, else `queues[resource]`, else `queueUrl`/`queueName`, else
    /// `defaultQueue`.
    pub fn queue_for(&self, route: &Route, resource: &str) -> Option<QueueRef> {
        if route.named {
            return QueueRef::parse(&route.destination).ok();
        }
        self.queues
            .get(resource)
            .or(self.queue.as_ref())
            .or(self.default_queue.as_ref())
            .cloned()
    }

    /// Every route has a queue, and the queues the routes name are queues.
    pub fn check_routes(&self, routes: &[Route], resources_path: &str, problems: &Problems) {
        for route in routes {
            let at = join(resources_path, &route.resource);
            if route.named {
                if let Err(e) = QueueRef::parse(&route.destination) {
                    problems.add(at, e);
                }
            } else if route.resource != ANY_RESOURCE
                && self.queue_for(route, &route.resource).is_none()
            {
                problems.add(
                    at,
                    format!(
                        "no queue for resource \"{}\": name one here (queueUrl, queue or \
                         queueName), or give queues.{}, queueUrl, queueName or defaultQueue",
                        route.resource, route.resource
                    ),
                );
            }
        }
    }
}

/// The queue at `key`: `Ok(None)` when absent, `Err` (reported) when it names no queue.
fn queue_ref(s: &mut Section, key: &str) -> Result<Option<QueueRef>, ()> {
    let Some(text) = s.string(key) else {
        return Ok(None);
    };
    match QueueRef::parse(&text) {
        Ok(q) => Ok(Some(q)),
        Err(e) => {
            s.problem(key, e);
            Err(())
        }
    }
}

/// The first of `keys` that is given; a second one is a conflict.
fn one_queue_of(s: &mut Section, keys: &[&str]) -> Result<Option<QueueRef>, ()> {
    let mut found: Option<(QueueRef, &str)> = None;
    let mut invalid = false;
    for key in keys {
        match queue_ref(s, key) {
            Ok(Some(q)) => match &found {
                Some((_, first)) => s.problem(key, format!("conflicts with {first}; give one")),
                None => found = Some((q, key)),
            },
            Ok(None) => {}
            Err(()) => invalid = true,
        }
    }
    if invalid {
        return Err(());
    }
    Ok(found.map(|(q, _)| q))
}

pub fn parse(s: &mut Section) -> Option<SqsConfig> {
    let access = AwsAccess::parse(s);
    // A queue option that names no queue makes the config invalid here, so that no route is
    // reported as lacking the queue it was meant to have.
    let queue = one_queue_of(s, &["queueUrl", "queueName"]);
    let default_queue = one_queue_of(s, &["defaultQueue", "defaultQueueUrl", "defaultQueueName"]);
    let mut queues = Ok(BTreeMap::new());
    if let Some(mut q) = s.section("queues") {
        let names: Vec<String> = q.unread().into_iter().cloned().collect();
        for resource in names {
            match (queue_ref(&mut q, &resource), &mut queues) {
                (Ok(Some(r)), Ok(map)) => {
                    map.insert(resource, r);
                }
                (Err(()), _) => queues = Err(()),
                _ => {}
            }
        }
        q.finish();
    }
    let group_id = s.string("messageGroupId");
    let group_field = s.string("messageGroupField");
    let message_group = match (group_id, group_field) {
        (Some(_), Some(_)) => {
            s.problem(
                "messageGroupField",
                "conflicts with messageGroupId; give one",
            );
            MessageGroup::Key
        }
        (Some(id), None) => {
            if let Some(problem) = id_problem(&id) {
                s.problem("messageGroupId", problem);
            }
            MessageGroup::Fixed(id)
        }
        (None, Some(field)) if field.is_empty() => {
            s.problem("messageGroupField", "must name a field of the record");
            MessageGroup::Key
        }
        (None, Some(field)) => MessageGroup::Field(field),
        (None, None) => MessageGroup::Key,
    };
    let deduplication = s.bool("deduplicationId").unwrap_or(true);
    let large_payloads = s.section("largePayloads").and_then(|mut l| {
        let bucket = l.required_string("bucket");
        let prefix = l.string("prefix").unwrap_or_default();
        let endpoint = l.http_url("endpoint");
        l.finish();
        let mut access = access.clone();
        if endpoint.is_some() {
            access.endpoint = endpoint;
        }
        let prefix = match prefix.trim_matches('/') {
            "" => String::new(),
            p => format!("{p}/"),
        };
        Some(LargePayloads {
            bucket: bucket?,
            prefix,
            access,
        })
    });
    let message_attributes = s
        .section("messageAttributes")
        .map(|a| message_attributes(a))
        .unwrap_or_default();
    let parallelism = s.u64_in("parallelism", 1, 256).unwrap_or(16) as usize;
    Some(SqsConfig {
        access,
        queue: queue.ok()?,
        queues: queues.ok()?,
        default_queue: default_queue.ok()?,
        message_group,
        deduplication,
        large_payloads,
        message_attributes,
        parallelism,
    })
}

/// s3db.js's `messageAttributes`: `{name: {DataType, StringValue}}`, or `{name: "text"}`.
fn message_attributes(mut s: Section) -> Vec<Attribute> {
    let names: Vec<String> = s.unread().into_iter().cloned().collect();
    let room = MAX_ATTRIBUTES - RECORD_ATTRIBUTES.len() - 1;
    if names.len() > room {
        s.problems().add(
            s.path(),
            format!(
                "at most {room} attributes: SQS takes {MAX_ATTRIBUTES} per message, and every \
                 message carries {} (and ExtendedPayloadSize when its body is in S3)",
                RECORD_ATTRIBUTES.join(", ")
            ),
        );
    }
    let mut out = Vec::new();
    for name in names {
        if RECORD_ATTRIBUTES.contains(&name.as_str()) {
            s.problem(&name, "is an attribute every message already carries");
        }
        let attribute = match s.value(&name) {
            Some(serde_json::Value::String(text)) => Some(Attribute {
                name: name.clone(),
                data_type: "String".into(),
                value: text.clone(),
            }),
            Some(serde_json::Value::Object(_)) => s.section(&name).and_then(|mut a| {
                let data_type = a.string("DataType").unwrap_or_else(|| "String".into());
                let value = a.required_string("StringValue");
                if !(data_type.starts_with("String") || data_type.starts_with("Number")) {
                    a.problem("DataType", format!("must be String or Number (optionally with a .suffix), found \"{data_type}\""));
                }
                a.finish();
                Some(Attribute {
                    name: name.clone(),
                    data_type,
                    value: value?,
                })
            }),
            _ => {
                s.problem(&name, "must be a string or {DataType, StringValue}");
                None
            }
        };
        out.extend(attribute);
    }
    s.finish();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::ActionSet;
    use serde_json::json;

    fn parsed(v: serde_json::Value) -> (Option<SqsConfig>, Vec<String>) {
        let problems = Problems::default();
        let mut s = Section::open(&v, "config".into(), &problems).unwrap();
        let c = parse(&mut s);
        s.finish();
        let p = problems
            .into_vec()
            .iter()
            .map(ToString::to_string)
            .collect();
        (c, p)
    }

    fn route(resource: &str, destination: Option<&str>) -> Route {
        Route {
            resource: resource.into(),
            destination: destination.unwrap_or(resource).into(),
            named: destination.is_some(),
            actions: ActionSet::ALL,
            transform: None,
            options: Default::default(),
        }
    }

    #[test]
    fn queues_resolve_in_s3db_js_order() {
        let (c, p) = parsed(json!({
            "region": "eu-west-1",
            "queues": {"orders": "https://sqs.eu-west-1.amazonaws.com/1/orders.fifo"},
            "defaultQueue": "general",
            "credentials": {"accessKeyId": "AK", "secretAccessKey": "SK"}
        }));
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(
            c.queue_for(&route("orders", None), "orders"),
            Some(QueueRef::Url(
                "https://sqs.eu-west-1.amazonaws.com/1/orders.fifo".into()
            ))
        );
        assert_eq!(
            c.queue_for(&route("users", None), "users"),
            Some(QueueRef::Name("general".into()))
        );
        assert_eq!(
            c.queue_for(&route("users", Some("people.fifo")), "users"),
            Some(QueueRef::Name("people.fifo".into()))
        );
        assert!(!format!("{c:?}").contains("SK"), "{c:?}");
    }

    /// The reference docs' "Advanced Configuration", as pasted.
    #[test]
    fn the_reference_docs_advanced_config_is_taken() {
        let (c, p) = parsed(json!({
            "region": "us-east-1",
            "credentials": {"accessKeyId": "AK", "secretAccessKey": "SK"},
            "queues": {
                "orders": "https://sqs.us-east-1.amazonaws.com/123456789012/order-events.fifo",
                "users": "https://sqs.us-east-1.amazonaws.com/123456789012/user-events.fifo"
            },
            "defaultQueueUrl": "https://sqs.us-east-1.amazonaws.com/123456789012/general-events.fifo",
            "messageGroupId": "s3db-replicator",
            "deduplicationId": true,
            "messageAttributes": {
                "source": {"StringValue": "production-db", "DataType": "String"},
                "version": {"StringValue": "1.0", "DataType": "String"}
            }
        }));
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert_eq!(
            c.message_group,
            MessageGroup::Fixed("s3db-replicator".into())
        );
        assert_eq!(c.message_attributes.len(), 2);
        assert_eq!(c.message_attributes[0].value, "production-db");
    }

    #[test]
    fn problems_are_named_with_their_path() {
        let (_, p) = parsed(json!({
            "queueUrl": "https://x/q", "queueName": "q",
            "queues": {"users": "not a queue"},
            "messageGroupId": "has space",
            "credentials": {"accessKeyId": "AK"},
            "endpoint": "localhost:4566"
        }));
        assert_eq!(p.len(), 5, "{p:?}");
        assert!(
            p.iter()
                .any(|m| m.starts_with("config.queueName: conflicts with queueUrl"))
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("config.queues.users: \"not a queue\""))
        );
        assert!(p.iter().any(|m| m.starts_with("config.messageGroupId: ")));
        assert!(
            p.iter()
                .any(|m| m == "config.credentials.secretAccessKey: is required")
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("config.endpoint: must be an http"))
        );

        let (c, p) = parsed(json!({}));
        assert!(p.is_empty());
        let problems = Problems::default();
        c.unwrap()
            .check_routes(&[route("users", None)], "resources", &problems);
        let p = problems.into_vec();
        assert!(
            p[0].to_string()
                .starts_with("resources.users: no queue for resource \"users\""),
            "{p:?}"
        );
    }
}
