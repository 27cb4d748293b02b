//! The `cluster` section: run as one of any number of identical hosts whose durable log is a
//! set of SQS FIFO queues instead of the local journal (design: `docs/cluster.md`).

use std::time::Duration;

use crate::delivery::aws::AwsAccess;
use crate::options::Section;
use crate::s3db::Connection;

#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// `region`, `endpoint`, `credentials`, as the sqs driver takes them.
    pub access: AwsAccess,
    /// Queue names start with it: `<prefix>intake.fifo`, `<prefix><replicator>.fifo`.
    pub queue_prefix: String,
    /// Create missing queues at start (`createQueues`, default true).
    pub create_queues: bool,
    /// How long a received message stays hidden from other hosts; held messages are
    /// extended while their deliveries run, so it only bounds how soon a dead host's work
    /// is taken over.
    pub visibility_timeout: Duration,
    /// The largest difference between two hosts' clocks (`maxClockSkew`): a host waits this
    /// long past an event's version before another host may version the key's next event.
    pub max_clock_skew: Duration,
    /// This host's name in status (`hostId`, default `<hostname>-<pid>`).
    pub host_id: String,
    /// Long-poll wait of one ReceiveMessage (`waitTimeSeconds`, 0-20).
    pub wait: Duration,
    /// Receive loops on the intake queue per host (`sequencers`).
    pub sequencers: usize,
    /// The s3db database every host keeps the shared state in: dead letters, heartbeats
    /// (`stateDatabase`, required).
    pub state_database: Connection,
}

const QUEUE_PREFIX_MAX: usize = 40;

/// The section, or `None` when a required key is missing (each problem is recorded).
pub fn parse(s: &mut Section) -> Option<ClusterConfig> {
    let access = AwsAccess::parse(s);
    let queue_prefix = s
        .string("queuePrefix")
        .unwrap_or_else(|| "replicator-".into());
    let valid = queue_prefix.len() <= QUEUE_PREFIX_MAX
        && queue_prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if !valid {
        s.problem(
            "queuePrefix",
            format!(
                "\"{queue_prefix}\" cannot start a queue name: up to {QUEUE_PREFIX_MAX} letters, digits, '-' and '_'"
            ),
        );
    }
    let visibility_timeout = s
        .duration("visibilityTimeout")
        .unwrap_or(Duration::from_secs(30));
    if !(Duration::from_secs(2)..=Duration::from_secs(43_200)).contains(&visibility_timeout) {
        s.problem(
            "visibilityTimeout",
            "must be between 2s and 12h (SQS's limit)",
        );
    }
    let max_clock_skew = s
        .duration("maxClockSkew")
        .unwrap_or(Duration::from_millis(20));
    if max_clock_skew > Duration::from_secs(1) {
        s.problem(
            "maxClockSkew",
            "must be at most 1s (every version waits this long); synchronise the hosts' clocks",
        );
    }
    let host_id = s.string("hostId").unwrap_or_else(default_host_id);
    let wait = Duration::from_secs(s.u64_in("waitTimeSeconds", 0, 20).unwrap_or(2));
    let sequencers = s.u64_in("sequencers", 1, 64).unwrap_or(2) as usize;
    let create_queues = s.bool("createQueues").unwrap_or(true);
    let state_database = Connection::required(s, "stateDatabase");
    Some(ClusterConfig {
        state_database: state_database?,
        access,
        queue_prefix,
        create_queues,
        visibility_timeout,
        max_clock_skew,
        host_id,
        wait,
        sequencers,
    })
}

fn default_host_id() -> String {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{name}-{}", std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::options::Problems;
    use serde_json::json;

    #[test]
    fn defaults_and_problems_named_by_key() {
        let problems = Problems::default();
        let v = json!({"endpoint": "http://127.0.0.1:4566", "stateDatabase": "file:///tmp/x"});
        let mut s = Section::open(&v, "cluster".into(), &problems).unwrap();
        let c = parse(&mut s).unwrap();
        s.finish();
        assert!(problems.into_vec().is_empty());
        assert_eq!(c.queue_prefix, "replicator-");
        assert_eq!(c.visibility_timeout, Duration::from_secs(30));
        assert_eq!(c.sequencers, 2);

        let problems = Problems::default();
        let v = json!({"queuePrefix": "a b", "visibilityTimeout": "1s", "maxClockSkew": "5s"});
        let mut s = Section::open(&v, "cluster".into(), &problems).unwrap();
        parse(&mut s);
        s.finish();
        let listed: Vec<String> = problems.into_vec().iter().map(|p| p.to_string()).collect();
        assert!(
            listed[0].starts_with("cluster.queuePrefix: \"a b\""),
            "{listed:?}"
        );
        assert!(
            listed[1].starts_with("cluster.visibilityTimeout"),
            "{listed:?}"
        );
        assert!(listed[2].starts_with("cluster.maxClockSkew"), "{listed:?}");
        assert!(listed[3].starts_with("cluster.stateDatabase"), "{listed:?}");
    }
}
