//! What a source tells the outside: its status counters and Prometheus series, moved together,
//! and its failures on status, metrics and the stream at once.

use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::event::Action;
use crate::pipeline::telemetry::{
    MonitorEvent, SourceActionLabel, SourceLabel, SourceReasonLabel, Telemetry,
};

/// Why something a source looked at made no event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Skip {
    /// S3's `s3:TestEvent`, sent when notifications are configured.
    TestEvent,
    /// A notification about another bucket (a queue shared by several).
    OtherBucket,
    /// A key outside the database's prefix.
    OutsidePrefix,
    /// Partition references, plugin storage, `s3db.json`, files that are not s3db's.
    NotARecord,
    /// A resource s3db.js plugins made for themselves.
    PluginResource,
    /// A resource `resources` leaves out.
    NotCaptured,
    /// A resource `s3db.json` does not define.
    UnknownResource,
    /// A notification older than one already handled for the record (its `sequencer`).
    Stale,
    /// The record is as last seen: a duplicate notification, or nothing changed.
    Unchanged,
    /// A message that is not an S3 notification.
    Unreadable,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::TestEvent => "test_event",
            Skip::OtherBucket => "other_bucket",
            Skip::OutsidePrefix => "outside_prefix",
            Skip::NotARecord => "not_a_record",
            Skip::PluginResource => "plugin_resource",
            Skip::NotCaptured => "not_captured",
            Skip::UnknownResource => "unknown_resource",
            Skip::Stale => "stale",
            Skip::Unchanged => "unchanged",
            Skip::Unreadable => "unreadable",
        }
    }
}

/// Where a source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum SourceState {
    Starting,
    Running,
    /// It cannot make progress (the bucket, the queue or the journal refuses); it retries.
    Failing,
}

/// The last complete polling pass.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PassReport {
    /// Records listed.
    pub objects: u64,
    /// Events journaled.
    pub changes: u64,
    /// Requests made to the store (listing and reads).
    pub requests: u64,
    pub seconds: f64,
    pub finished_at: String,
}

/// Changes captured, by action.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
pub struct Captured {
    pub insert: u64,
    pub update: u64,
    pub delete: u64,
}

/// What part of a source a failure is in: each recovers on its own, and the source is
/// `failing` while any part is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Part {
    /// Opening the database (reading `s3db.json`).
    Connect,
    Notifications,
    Poll,
}

/// Live figures of one source, read by `/v1/status`.
pub struct SourceStats {
    captured: [AtomicU64; 3],
    skipped: Mutex<BTreeMap<&'static str, u64>>,
    /// Of the last change captured, in milliseconds.
    lag_ms: AtomicU64,
    /// A round of some part went through.
    started: std::sync::atomic::AtomicBool,
    /// The parts failing now, with their last error.
    failures: Mutex<BTreeMap<Part, String>>,
    last_pass: Mutex<Option<PassReport>>,
}

impl SourceStats {
    fn new() -> Self {
        SourceStats {
            captured: Default::default(),
            skipped: Mutex::new(BTreeMap::new()),
            lag_ms: AtomicU64::new(0),
            started: Default::default(),
            failures: Mutex::new(BTreeMap::new()),
            last_pass: Mutex::new(None),
        }
    }

    pub fn captured(&self) -> Captured {
        let n = |a: Action| self.captured[a as usize].load(Ordering::Relaxed);
        Captured {
            insert: n(Action::Insert),
            update: n(Action::Update),
            delete: n(Action::Delete),
        }
    }

    pub fn skipped(&self) -> BTreeMap<&'static str, u64> {
        self.skipped.lock().expect("stats lock").clone()
    }

    pub fn lag_seconds(&self) -> f64 {
        self.lag_ms.load(Ordering::Relaxed) as f64 / 1000.0
    }

    pub fn state(&self) -> SourceState {
        if !self.failures.lock().expect("stats lock").is_empty() {
            SourceState::Failing
        } else if self.started.load(Ordering::Relaxed) {
            SourceState::Running
        } else {
            SourceState::Starting
        }
    }

    /// The errors of the parts failing now.
    pub fn last_error(&self) -> Option<String> {
        let failures = self.failures.lock().expect("stats lock");
        (!failures.is_empty()).then(|| failures.values().cloned().collect::<Vec<_>>().join("; "))
    }

    pub fn last_pass(&self) -> Option<PassReport> {
        self.last_pass.lock().expect("stats lock").clone()
    }
}

/// One source's figures: status counters and Prometheus series move together.
#[derive(Clone)]
pub struct SourceCounters {
    pub stats: Arc<SourceStats>,
    telemetry: Arc<Telemetry>,
    label: SourceLabel,
}

impl SourceCounters {
    pub fn new(source: &str, telemetry: Arc<Telemetry>) -> Self {
        SourceCounters {
            stats: Arc::new(SourceStats::new()),
            telemetry,
            label: SourceLabel {
                source: source.to_string(),
            },
        }
    }

    /// A change is durable in the journal, `lag_seconds` after the object changed.
    pub fn captured(&self, action: Action, lag_seconds: f64) {
        self.stats.captured[action as usize].fetch_add(1, Ordering::Relaxed);
        self.stats
            .lag_ms
            .store((lag_seconds.max(0.0) * 1000.0) as u64, Ordering::Relaxed);
        let m = &self.telemetry.metrics;
        m.captured
            .get_or_create(&SourceActionLabel {
                source: self.label.source.clone(),
                action: action.as_str().into(),
            })
            .inc();
        m.capture_lag
            .get_or_create(&self.label)
            .observe(lag_seconds);
    }

    pub fn skipped(&self, reason: Skip) {
        *self
            .stats
            .skipped
            .lock()
            .expect("stats lock")
            .entry(reason.as_str())
            .or_default() += 1;
        self.telemetry
            .metrics
            .capture_skipped
            .get_or_create(&SourceReasonLabel {
                source: self.label.source.clone(),
                reason: reason.as_str().into(),
            })
            .inc();
    }

    pub fn requests(&self, n: u64) {
        if n > 0 {
            self.telemetry
                .metrics
                .capture_requests
                .get_or_create(&self.label)
                .inc_by(n);
        }
    }

    /// A round of `part` failed and will be tried again: the state says `failing` with the
    /// reason until a round of that part succeeds, and the stream gets a `source_error`.
    pub fn failed(&self, part: Part, error: &str) {
        self.stats
            .failures
            .lock()
            .expect("stats lock")
            .insert(part, error.to_string());
        self.telemetry
            .metrics
            .capture_errors
            .get_or_create(&self.label)
            .inc();
        tracing::warn!(source = %self.label.source, %error, "change capture failed; retrying");
        self.telemetry
            .emit(MonitorEvent::source_error(&self.label.source, error.into()));
    }

    /// A round of `part` went through.
    pub fn running(&self, part: Part) {
        self.stats.started.store(true, Ordering::Relaxed);
        if self
            .stats
            .failures
            .lock()
            .expect("stats lock")
            .remove(&part)
            .is_some()
        {
            tracing::info!(source = %self.label.source, ?part, "change capture works again");
        }
    }

    pub fn pass(&self, report: PassReport) {
        self.telemetry
            .metrics
            .capture_pass_seconds
            .get_or_create(&self.label)
            .set(report.seconds);
        *self.stats.last_pass.lock().expect("stats lock") = Some(report);
    }
}
