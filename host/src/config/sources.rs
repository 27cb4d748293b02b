//! The `sources` section: s3db databases whose changes the host reads from the bucket, each
//! through S3 event notifications on an SQS queue (`notifications`), listing (`poll`), or both.

use serde_json::Value;
use std::collections::BTreeSet;
use std::time::Duration;

use crate::delivery::aws::AwsAccess;
use crate::delivery::sqs::QueueRef;
use crate::options::{Problems, Section, index};
use crate::s3db::Connection;

#[derive(Debug, Clone)]
pub struct SourceConfig {
    pub id: String,
    pub connection: Connection,
    /// The resources captured; `None`: every resource but s3db.js plugins' own.
    pub resources: Option<BTreeSet<String>>,
    pub notifications: Option<NotificationsConfig>,
    pub poll: Option<PollConfig>,
}

impl SourceConfig {
    pub fn captures(&self, resource: &str) -> bool {
        self.resources
            .as_ref()
            .is_none_or(|list| list.contains(resource))
    }

    /// How it captures, as status shows it.
    pub fn mode(&self) -> &'static str {
        match (&self.notifications, &self.poll) {
            (Some(_), Some(_)) => "notifications+poll",
            (Some(_), None) => "notifications",
            _ => "poll",
        }
    }
}

/// `notifications`: the SQS queue S3 sends the bucket's event notifications to.
#[derive(Debug, Clone)]
pub struct NotificationsConfig {
    pub queue: QueueRef,
    /// `region`, `endpoint`, `credentials`, as the sqs driver takes them.
    pub access: AwsAccess,
    /// Long-poll wait of one ReceiveMessage (`waitTimeSeconds`, 0-20).
    pub wait: Duration,
    /// How long a received notification stays hidden before SQS hands it out again
    /// (`visibilityTimeout`): a host that dies mid-batch has its notifications redelivered.
    pub visibility_timeout: Duration,
    /// ReceiveMessage calls in flight at once (`receivers`).
    pub receivers: usize,
}

/// `poll`: list each resource's records and compare with what was seen.
#[derive(Debug, Clone)]
pub struct PollConfig {
    /// Pause between the end of one pass and the start of the next.
    pub interval: Duration,
    /// Objects read at once.
    pub parallelism: usize,
}

/// Records read at once by default, by either mode.
pub const DEFAULT_PARALLELISM: usize = 16;

/// Reads the `sources` list; every problem is reported with its key path.
pub fn parse(value: &Value, problems: &Problems) -> Vec<SourceConfig> {
    let Value::Array(list) = value else {
        problems.add(
            "sources",
            format!(
                "must be a list of sources, found {}",
                crate::event::kind_of(value)
            ),
        );
        return Vec::new();
    };
    let mut sources: Vec<SourceConfig> = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = index("sources", i);
        let Some(mut s) = Section::open(item, path.clone(), problems) else {
            continue;
        };
        if let Some(source) = source(&mut s, i) {
            if sources.iter().any(|o| o.id == source.id) {
                s.problem("id", format!("duplicate source id \"{}\"", source.id));
            }
            sources.push(source);
        }
        s.finish();
    }
    sources
}

fn source(s: &mut Section, i: usize) -> Option<SourceConfig> {
    let id = s.id("id", || format!("source-{i}"));
    let connection = Connection::required(s, "connectionString");
    let resources = resources(s);
    let notifications = s.section("notifications").and_then(|mut n| {
        let parsed = notifications(&mut n);
        n.finish();
        parsed
    });
    let poll = poll(s);
    if !s.has("notifications") && !s.has("poll") {
        s.problem(
            "notifications",
            "a source needs notifications (an SQS queue S3 notifies), poll (an interval), or both",
        );
    }
    let in_directory = connection
        .as_ref()
        .is_some_and(|c| matches!(c.location, crate::s3db::connection::Location::File { .. }));
    if s.has("notifications") && in_directory {
        s.problem(
            "notifications",
            "a file:// database sends no notifications; use poll",
        );
    }
    Some(SourceConfig {
        id,
        connection: connection?,
        resources: resources.ok()?,
        notifications,
        poll: poll.ok()?,
    })
}

/// `resources`: a list of names; absent means all but plugin resources.
fn resources(s: &mut Section) -> Result<Option<BTreeSet<String>>, ()> {
    let path = s.path_of("resources");
    let Some(value) = s.value("resources") else {
        return Ok(None);
    };
    let Value::Array(items) = value else {
        s.problem(
            "resources",
            format!(
                "must be a list of resource names, found {}",
                crate::event::kind_of(value)
            ),
        );
        return Err(());
    };
    let mut names = BTreeSet::new();
    let mut ok = true;
    for (i, item) in items.iter().enumerate() {
        match item.as_str() {
            Some(name) => match crate::event::resource_name_problem(name) {
                None => {
                    names.insert(name.to_string());
                }
                Some(problem) => {
                    s.problems().add(index(&path, i), problem);
                    ok = false;
                }
            },
            None => {
                s.problems().add(
                    index(&path, i),
                    format!(
                        "must be a resource name, found {}",
                        crate::event::kind_of(item)
                    ),
                );
                ok = false;
            }
        }
    }
    if ok { Ok(Some(names)) } else { Err(()) }
}

fn notifications(n: &mut Section) -> Option<NotificationsConfig> {
    let access = AwsAccess::parse(n);
    let queue = match (n.string("queueUrl"), n.string("queueName")) {
        (Some(_), Some(_)) => {
            n.problem("queueName", "conflicts with queueUrl; give one");
            None
        }
        (Some(text), None) | (None, Some(text)) => {
            let key = if n.has("queueUrl") {
                "queueUrl"
            } else {
                "queueName"
            };
            match QueueRef::parse(&text) {
                Ok(_) if text.ends_with(".fifo") => {
                    n.problem(
                        key,
                        "S3 sends notifications only to standard queues, not FIFO ones",
                    );
                    None
                }
                Ok(q) => Some(q),
                Err(e) => {
                    n.problem(key, e);
                    None
                }
            }
        }
        (None, None) => {
            n.problem("queueUrl", "is required (or queueName)");
            None
        }
    };
    let wait = n
        .u64_in("waitTimeSeconds", 0, 20)
        .map_or(Duration::from_secs(20), Duration::from_secs);
    let visibility_timeout = n
        .duration("visibilityTimeout")
        .unwrap_or(Duration::from_secs(60));
    if !(Duration::from_secs(1)..=Duration::from_secs(12 * 3600)).contains(&visibility_timeout) {
        n.problem(
            "visibilityTimeout",
            "must be between 1 second and 12 hours (SQS's limits)",
        );
    }
    let receivers = n.u64_in("receivers", 1, 64).unwrap_or(2) as usize;
    Some(NotificationsConfig {
        queue: queue?,
        access,
        wait,
        visibility_timeout,
        receivers,
    })
}

/// `poll`: an interval (`30s`, milliseconds), or `{interval, parallelism}`.
fn poll(s: &mut Section) -> Result<Option<PollConfig>, ()> {
    let at_least = |s: &Section, key: &str, d: Duration| {
        if d < Duration::from_millis(100) {
            s.problem(key, "must be at least 100ms");
            Err(())
        } else {
            Ok(d)
        }
    };
    match s.value("poll").cloned() {
        None => Ok(None),
        Some(Value::Object(_)) => {
            let mut p = s.section("poll").ok_or(())?;
            let interval = p.duration("interval").unwrap_or(Duration::from_secs(30));
            let interval = at_least(&p, "interval", interval);
            let parallelism = p
                .u64_in("parallelism", 1, 256)
                .map_or(DEFAULT_PARALLELISM, |n| n as usize);
            p.finish();
            Ok(Some(PollConfig {
                interval: interval?,
                parallelism,
            }))
        }
        Some(_) => {
            let interval = s.duration("poll").ok_or(())?;
            Ok(Some(PollConfig {
                interval: at_least(s, "poll", interval)?,
                parallelism: DEFAULT_PARALLELISM,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn problems(value: Value) -> Vec<String> {
        let problems = Problems::default();
        parse(&value, &problems);
        problems
            .into_vec()
            .iter()
            .map(ToString::to_string)
            .collect()
    }

    #[test]
    fn every_problem_is_named_with_its_path() {
        let got = problems(json!([
            {"id": "a b", "connectionString": "ftp://x", "resources": ["ok", "bad/name", 3]},
            {"connectionString": "file:///tmp/x", "notifications": {"queueUrl": "q.fifo"}},
            {"connectionString": "s3://k:s@bucket", "poll": "soon", "notifications": {"queueName": "q", "queueUrl": "http://h/1/q", "waitTimeSeconds": 30}},
            {"id": "d", "connectionString": "s3://bucket", "pol": "5s"}
        ]));
        let expected = [
            "sources[0].id: must use only letters, digits, '-', '_' and '.', found \"a b\"",
            "sources[0].connectionString: \"ftp://x\": unknown scheme ftp:// (use s3://, http(s):// or file://)",
            "sources[0].resources[2]: must be a resource name, found a number",
            "sources[0].notifications: a source needs notifications (an SQS queue S3 notifies), poll (an interval), or both",
            "sources[1].notifications.queueUrl: S3 sends notifications only to standard queues, not FIFO ones",
            "sources[2].notifications.queueName: conflicts with queueUrl; give one",
            "sources[2].notifications.waitTimeSeconds: must be between 0 and 20, found 30",
            "sources[1].notifications: a file:// database sends no notifications; use poll",
            "sources[2].poll: invalid duration \"soon\": expected number at 0",
            "sources[3].notifications: a source needs notifications (an SQS queue S3 notifies), poll (an interval), or both",
            "sources[3].pol: unknown option \"pol\" (did you mean \"poll\"?)",
        ];
        for e in expected {
            assert!(got.iter().any(|g| g == e), "missing {e:?} in {got:#?}");
        }
        assert!(
            got.iter()
                .any(|g| g.starts_with("sources[0].resources[1]: ")),
            "{got:#?}"
        );
    }

    #[test]
    fn a_full_source_and_the_short_poll_form() {
        let problems = Problems::default();
        let sources = parse(
            &json!([
                {"id": "app", "connectionString": "http://k:s@127.0.0.1:4566/bucket/app",
                 "resources": ["users"],
                 "notifications": {"queueUrl": "http://127.0.0.1:4566/000000000000/changes",
                                   "endpoint": "http://127.0.0.1:4566", "visibilityTimeout": "5s"},
                 "poll": {"interval": "1m", "parallelism": 4}},
                {"connectionString": "file:///tmp/db", "poll": 2000}
            ]),
            &problems,
        );
        assert!(problems.into_vec().is_empty());
        assert_eq!(sources[0].mode(), "notifications+poll");
        assert!(sources[0].captures("users") && !sources[0].captures("orders"));
        let n = sources[0].notifications.as_ref().unwrap();
        assert_eq!(n.visibility_timeout, Duration::from_secs(5));
        assert_eq!(n.wait, Duration::from_secs(20));
        assert_eq!(sources[0].poll.as_ref().unwrap().parallelism, 4);
        assert_eq!(sources[1].id, "source-1");
        assert_eq!(sources[1].mode(), "poll");
        assert!(sources[1].captures("anything"));
        assert_eq!(
            sources[1].poll.as_ref().unwrap().interval,
            Duration::from_secs(2)
        );
    }
}
