//! The cluster's Prometheus metrics, registered with the host's others
//! (`replicator_cluster_*`): what this host sequenced, SQS requests, each queue's depth, and
//! failures of the cluster's tasks.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLabel {
    /// `intake`, or the replicator whose queue it is.
    pub queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TaskLabel {
    /// `sequencer`, `forwarder`, `heartbeat`, `feed`, `feed extend`, `feed delete`,
    /// `feed hand-back`.
    pub task: &'static str,
}

#[derive(Clone, Default)]
pub struct ClusterMetrics {
    pub sequenced: Counter,
    pub requests: Counter,
    pub queue_messages: Family<QueueLabel, Gauge>,
    pub errors: Family<TaskLabel, Counter>,
}

impl ClusterMetrics {
    pub fn register(&self, registry: &mut Registry) {
        registry.register(
            "cluster_sequenced",
            "Events this host versioned and sent to the replicators' queues",
            self.sequenced.clone(),
        );
        registry.register(
            "cluster_sqs_requests",
            "Requests this host made to the cluster's SQS queues",
            self.requests.clone(),
        );
        registry.register(
            "cluster_queue_messages",
            "Messages in each cluster queue, waiting or held by a host, as SQS last estimated",
            self.queue_messages.clone(),
        );
        registry.register(
            "cluster_errors",
            "Failed rounds of this host's cluster tasks, per task",
            self.errors.clone(),
        );
    }
}
