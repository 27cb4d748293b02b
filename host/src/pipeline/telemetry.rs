//! What the pipeline tells the outside: Prometheus metrics, per-replicator status counters,
//! and the monitoring events streamed over SSE (named as s3db.js names them).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::broadcast;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReplicatorLabel {
    pub replicator: String,
}

/// A change capture source (`sources[].id`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabel {
    pub source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceActionLabel {
    pub source: String,
    pub action: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceReasonLabel {
    pub source: String,
    pub reason: String,
}

type Latency = Family<ReplicatorLabel, Histogram, fn() -> Histogram>;

fn latency_histogram() -> Histogram {
    // 0.25 ms .. ~4 min
    Histogram::new(exponential_buckets(0.000_25, 2.0, 20))
}

/// Every metric the host exports.
pub struct Metrics {
    pub registry: Registry,
    pub accepted: Counter,
    pub rejected: Counter,
    pub intake_to_journal: Histogram,
    pub delivered: Family<ReplicatorLabel, Counter>,
    pub failed: Family<ReplicatorLabel, Counter>,
    pub skipped: Family<ReplicatorLabel, Counter>,
    pub dead_lettered: Family<ReplicatorLabel, Counter>,
    pub backlog: Family<ReplicatorLabel, Gauge>,
    pub lag_seconds: Family<ReplicatorLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    pub journal_to_delivered: Latency,
    pub destination_call: Latency,
    pub destination_requests: Family<ReplicatorLabel, Counter>,
    pub plugin_requests_denied: crate::plugins::egress::DeniedRequests,
    pub plugin_reloads: crate::plugins::live::Reloads,
    pub cluster: crate::cluster::metrics::ClusterMetrics,
    pub captured: Family<SourceActionLabel, Counter>,
    pub capture_skipped: Family<SourceReasonLabel, Counter>,
    pub capture_lag: Family<SourceLabel, Histogram, fn() -> Histogram>,
    pub capture_errors: Family<SourceLabel, Counter>,
    pub capture_requests: Family<SourceLabel, Counter>,
    pub capture_pass_seconds: Family<SourceLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("replicator");
        let accepted = Counter::default();
        let rejected = Counter::default();
        let intake_to_journal = latency_histogram();
        let delivered = Family::default();
        let failed = Family::default();
        let skipped = Family::default();
        let dead_lettered = Family::default();
        let backlog = Family::default();
        let lag_seconds = Family::default();
        let journal_to_delivered: Latency = Family::new_with_constructor(latency_histogram);
        let destination_call: Latency = Family::new_with_constructor(latency_histogram);
        let destination_requests = Family::default();
        let plugin_requests_denied = crate::plugins::egress::DeniedRequests::default();
        let plugin_reloads = crate::plugins::live::Reloads::default();
        let captured = Family::default();
        let capture_skipped = Family::default();
        let capture_lag: Family<SourceLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(latency_histogram);
        let capture_errors = Family::default();
        let capture_requests = Family::default();
        let capture_pass_seconds = Family::default();
        registry.register(
            "capture_changes",
            "Changes read from a source's bucket and made durable in the journal",
            captured.clone(),
        );
        registry.register(
            "capture_skipped",
            "Notifications and objects a source looked at and did not journal, by reason",
            capture_skipped.clone(),
        );
        registry.register(
            "capture_lag_seconds",
            "Time from an object's last-modified time (a deletion's notification) to its change being durable",
            capture_lag.clone(),
        );
        registry.register(
            "capture_errors",
            "Rounds of a source that failed (bucket, queue or journal); it tries again",
            capture_errors.clone(),
        );
        registry.register(
            "capture_requests",
            "Requests a source made to S3 and SQS",
            capture_requests.clone(),
        );
        registry.register(
            "capture_poll_pass_seconds",
            "Duration of a source's last complete polling pass",
            capture_pass_seconds.clone(),
        );
        registry.register(
            "events_accepted",
            "Events made durable by intake",
            accepted.clone(),
        );
        registry.register(
            "events_rejected",
            "Events refused by intake (invalid, unauthorised, over budget)",
            rejected.clone(),
        );
        registry.register(
            "intake_to_journal_seconds",
            "Time from receiving a request to its events being durable",
            intake_to_journal.clone(),
        );
        registry.register(
            "events_delivered",
            "Deliveries that reached the destination",
            delivered.clone(),
        );
        registry.register(
            "events_failed",
            "Delivery attempts that failed",
            failed.clone(),
        );
        registry.register(
            "events_skipped",
            "Events a replicator's routes filter out by action",
            skipped.clone(),
        );
        registry.register(
            "events_dead_lettered",
            "Deliveries moved to the dead-letter queue",
            dead_lettered.clone(),
        );
        registry.register(
            "backlog_events",
            "Events accepted but not yet done by the replicator",
            backlog.clone(),
        );
        registry.register(
            "lag_seconds",
            "Age of the oldest event the replicator has not finished",
            lag_seconds.clone(),
        );
        registry.register(
            "journal_to_delivered_seconds",
            "Time from an event being durable to its delivery",
            journal_to_delivered.clone(),
        );
        registry.register(
            "destination_call_seconds",
            "Duration of one batch call to the destination",
            destination_call.clone(),
        );
        registry.register(
            "destination_requests",
            "Requests sent to the destination (drivers that count them)",
            destination_requests.clone(),
        );
        registry.register(
            "plugin_requests_denied",
            "Outbound requests of plugins refused by their allowHosts, per plugin",
            plugin_requests_denied.clone(),
        );
        registry.register(
            "plugin_reloads",
            "New versions of plugin files swapped in (reloaded) or refused, per plugin",
            plugin_reloads.clone(),
        );
        let cluster = crate::cluster::metrics::ClusterMetrics::default();
        cluster.register(&mut registry);
        Metrics {
            registry,
            cluster,
            captured,
            capture_skipped,
            capture_lag,
            capture_errors,
            capture_requests,
            capture_pass_seconds,
            destination_requests,
            plugin_requests_denied,
            plugin_reloads,
            accepted,
            rejected,
            intake_to_journal,
            delivered,
            failed,
            skipped,
            dead_lettered,
            backlog,
            lag_seconds,
            journal_to_delivered,
            destination_call,
        }
    }
}

impl Metrics {
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

/// A monitoring event for `/v1/stream`.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MonitorEvent {
    /// The SSE event name: `replicated`, `replicator_error`, `dead_lettered`, `redriven`...
    #[serde(skip)]
    pub name: &'static str,
    /// Empty for an event about a change capture source.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub replicator: String,
    /// The change capture source an event is about.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub operation: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sequence: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attempt: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The plugin file an event is about (`plugin_reloaded`, `plugin_refused`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plugin: Option<String>,
}

impl MonitorEvent {
    /// An event about a whole replicator, not one record (a stall, a log that cannot be written).
    pub fn replicator_wide(name: &'static str, replicator: &str, error: String) -> Self {
        MonitorEvent {
            name,
            replicator: replicator.to_string(),
            source: None,
            resource: None,
            operation: None,
            id: None,
            sequence: None,
            attempt: None,
            error: Some(error),
            plugin: None,
        }
    }
}

impl MonitorEvent {
    /// A change capture source cannot make progress (`source_error`).
    pub fn source_error(source: &str, error: String) -> Self {
        MonitorEvent {
            source: Some(source.to_string()),
            ..MonitorEvent::replicator_wide("source_error", "", error)
        }
    }
}

/// Where a replicator stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Starting,
    Running,
    Failing,
    Paused,
}

/// Live counters of one replicator, read by `/v1/status`.
pub struct ReplicatorStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub skipped: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Everything up to here is done (committed or about to be).
    pub cursor: AtomicU64,
    /// Milliseconds since the epoch of the oldest unfinished event, 0 when none.
    pub oldest_pending_ms: AtomicU64,
    pub initialised: AtomicBool,
    pub state: Mutex<State>,
    pub last_error: Mutex<Option<String>>,
    /// The driver's background work is failing (it shows until it recovers, whatever the
    /// deliveries do meanwhile).
    pub background_error: Mutex<Option<String>>,
}

impl ReplicatorStats {
    pub fn new(cursor: u64, state: State) -> Self {
        ReplicatorStats {
            delivered: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            skipped: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            cursor: AtomicU64::new(cursor),
            oldest_pending_ms: AtomicU64::new(0),
            initialised: AtomicBool::new(false),
            state: Mutex::new(state),
            last_error: Mutex::new(None),
            background_error: Mutex::new(None),
        }
    }

    pub fn set_state(&self, state: State) {
        *self.state.lock().expect("state lock") = state;
    }

    pub fn state(&self) -> State {
        if self.background_error().is_some() {
            return State::Failing;
        }
        *self.state.lock().expect("state lock")
    }

    fn background_error(&self) -> Option<String> {
        self.background_error.lock().expect("error lock").clone()
    }

    pub fn set_error(&self, error: Option<String>) {
        *self.last_error.lock().expect("error lock") = error;
    }

    pub fn last_error(&self) -> Option<String> {
        self.background_error()
            .or_else(|| self.last_error.lock().expect("error lock").clone())
    }

    pub fn cursor(&self) -> u64 {
        self.cursor.load(Ordering::Relaxed)
    }
}

/// Metrics plus the monitoring bus, shared by intake, pipeline and admin.
pub struct Telemetry {
    pub metrics: Metrics,
    pub monitor: broadcast::Sender<MonitorEvent>,
    /// Log every replication (`verbose`).
    pub verbose: bool,
}

impl Telemetry {
    pub fn new(verbose: bool) -> Self {
        Telemetry {
            metrics: Metrics::default(),
            monitor: broadcast::channel(4096).0,
            verbose,
        }
    }

    pub fn emit(&self, event: MonitorEvent) {
        // Nobody listening is fine.
        let _ = self.monitor.send(event);
    }
}

/// One replicator's figures: each change moves its status counters and its Prometheus series
/// together, and failures reach the status, the metrics and the stream at once.
pub struct ReplicatorCounters {
    pub stats: Arc<ReplicatorStats>,
    pub telemetry: Arc<Telemetry>,
    label: ReplicatorLabel,
}

impl ReplicatorCounters {
    pub fn new(replicator: &str, stats: Arc<ReplicatorStats>, telemetry: Arc<Telemetry>) -> Self {
        ReplicatorCounters {
            stats,
            telemetry,
            label: ReplicatorLabel {
                replicator: replicator.to_string(),
            },
        }
    }

    pub fn replicator(&self) -> &str {
        &self.label.replicator
    }

    /// A delivery reached its destination `seconds_in_journal` after it was accepted.
    pub fn delivered(&self, seconds_in_journal: f64) {
        self.stats.delivered.fetch_add(1, Ordering::Relaxed);
        let m = &self.telemetry.metrics;
        m.delivered.get_or_create(&self.label).inc();
        m.journal_to_delivered
            .get_or_create(&self.label)
            .observe(seconds_in_journal);
    }

    /// An attempt failed; `error` becomes the replicator's last error.
    pub fn failed(&self, error: &str) {
        self.stats.failed.fetch_add(1, Ordering::Relaxed);
        self.telemetry
            .metrics
            .failed
            .get_or_create(&self.label)
            .inc();
        self.stats.set_error(Some(error.to_string()));
    }

    pub fn skipped(&self) {
        self.stats.skipped.fetch_add(1, Ordering::Relaxed);
        self.telemetry
            .metrics
            .skipped
            .get_or_create(&self.label)
            .inc();
    }

    pub fn dead_lettered(&self) {
        self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        let m = &self.telemetry.metrics;
        m.dead_lettered.get_or_create(&self.label).inc();
    }

    pub fn destination_call(&self, seconds: f64) {
        let m = &self.telemetry.metrics;
        m.destination_call
            .get_or_create(&self.label)
            .observe(seconds);
    }

    pub fn destination_requests(&self, more: u64) {
        let m = &self.telemetry.metrics;
        m.destination_requests
            .get_or_create(&self.label)
            .inc_by(more);
    }

    /// Where the replicator stands: done through `cursor`, `backlog` events behind the head,
    /// the oldest unfinished one accepted at `oldest_pending_ms` (0: none).
    pub fn progress(&self, cursor: u64, backlog: u64, oldest_pending_ms: i64) {
        self.stats.cursor.store(cursor, Ordering::Relaxed);
        self.stats
            .oldest_pending_ms
            .store(oldest_pending_ms.max(0) as u64, Ordering::Relaxed);
        let m = &self.telemetry.metrics;
        m.backlog.get_or_create(&self.label).set(backlog as i64);
        m.lag_seconds.get_or_create(&self.label).set(lag_seconds(
            oldest_pending_ms,
            chrono::Utc::now().timestamp_millis(),
        ));
    }

    pub fn emit(&self, event: MonitorEvent) {
        self.telemetry.emit(event);
    }

    /// Something stops the replicator from making progress: counted as a failure, the state
    /// `failing` with the reason, and a `replicator_error` on the stream (`attempt`: how many
    /// times it happened in a row, when that is known).
    pub fn stalled(&self, error: &str, attempt: Option<u32>) {
        self.failed(error);
        self.stats.set_state(State::Failing);
        let mut event =
            MonitorEvent::replicator_wide("replicator_error", self.replicator(), error.to_string());
        event.attempt = attempt;
        self.emit(event);
    }

    /// Whether anyone follows the stream: the per-record events of the hot path are made only
    /// then (each costs four strings).
    pub fn watched(&self) -> bool {
        self.telemetry.monitor.receiver_count() > 0
    }

    pub fn verbose(&self) -> bool {
        self.telemetry.verbose
    }
}

/// The state shows `failing` while the background error lasts (see [`ReplicatorStats::state`]),
/// whatever deliveries do meanwhile; each failure counts in `failed` (status and
/// `replicator_events_failed_total`) and goes on the stream.
impl crate::delivery::BackgroundReport for ReplicatorCounters {
    fn failed(&self, error: &crate::delivery::DeliveryError) {
        let message = error.message.clone();
        *self.stats.background_error.lock().expect("error lock") = Some(message.clone());
        ReplicatorCounters::failed(self, &message);
        self.emit(MonitorEvent::replicator_wide(
            "replicator_error",
            self.replicator(),
            message,
        ));
    }

    fn recovered(&self) {
        *self.stats.background_error.lock().expect("error lock") = None;
        self.stats.set_error(None);
    }
}

/// Seconds since the oldest unfinished event was accepted (0 when none is waiting).
pub fn lag_seconds(oldest_pending_ms: i64, now_ms: i64) -> f64 {
    if oldest_pending_ms > 0 {
        (now_ms - oldest_pending_ms).max(0) as f64 / 1000.0
    } else {
        0.0
    }
}
