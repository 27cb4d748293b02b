//! One source at run time: reads records' current state from the bucket and journals what
//! changed. Both modes come here, so a notification and a polling pass agree; one key is read
//! and journaled by one task at a time, so a later read never lands before an earlier one.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

use super::stats::{Skip, SourceCounters};
use crate::config::sources::SourceConfig;
use crate::delivery::bounded;
use crate::event::rfc3339;
use crate::journal::{Journal, JournalError, Observation, Observed, Outcome, RecordKey, Seen};
use crate::s3db::{Database, RecordRead, S3dbError};

/// A record read within this long of its last change may still change under the same stamp
/// (S3 keeps whole seconds, clocks drift): polling reads it again next pass.
const SETTLE: Duration = Duration::from_secs(5);

/// Why a round of capture stopped; nothing of it was journaled, so it is tried again whole
/// (notifications stay on the queue, a polling pass resumes at its last page).
#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error(transparent)]
    Bucket(#[from] S3dbError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(
        "the journal holds {held} bytes of undelivered events, over journal.maxBytes ({budget}); capture waits for the replicators"
    )]
    OverBudget { held: u64, budget: u64 },
    #[error("{0}")]
    Queue(String),
}

/// A record to look at, with what its notification said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wanted {
    pub resource: String,
    pub id: String,
    /// S3's order of the notification's event, for this key.
    pub sequencer: Option<String>,
    /// When S3 saw the change (the notification's `eventTime`), for a deletion's timestamp.
    pub event_time: Option<String>,
}

impl Wanted {
    pub fn record(resource: &str, id: &str) -> Wanted {
        Wanted {
            resource: resource.to_string(),
            id: id.to_string(),
            sequencer: None,
            event_time: None,
        }
    }
}

/// One async lock per key in use, dropped when nobody holds it.
#[derive(Default)]
struct KeyLocks(Mutex<HashMap<RecordKey, Arc<tokio::sync::Mutex<()>>>>);

impl KeyLocks {
    fn get(&self, key: &RecordKey) -> Arc<tokio::sync::Mutex<()>> {
        self.0
            .lock()
            .expect("locks")
            .entry(key.clone())
            .or_default()
            .clone()
    }

    fn release(&self, keys: &[RecordKey]) {
        let mut map = self.0.lock().expect("locks");
        for k in keys {
            // Only the map holds it: nobody waits.
            if map.get(k).is_some_and(|l| Arc::strong_count(l) == 1) {
                map.remove(k);
            }
        }
    }
}

pub struct Source {
    pub config: SourceConfig,
    pub db: Database,
    pub journal: Arc<Journal>,
    pub counters: SourceCounters,
    journal_budget: u64,
    /// In cluster mode: how far the forwarder sent the journal on to the intake queue.
    forwarded: Option<watch::Receiver<u64>>,
    locks: KeyLocks,
    /// Requests already added to the metric.
    requests_reported: AtomicU64,
}

impl Source {
    pub fn new(
        config: SourceConfig,
        db: Database,
        journal: Arc<Journal>,
        counters: SourceCounters,
        journal_budget: u64,
        forwarded: Option<watch::Receiver<u64>>,
    ) -> Source {
        Source {
            config,
            db,
            journal,
            counters,
            journal_budget,
            forwarded,
            locks: KeyLocks::default(),
            requests_reported: AtomicU64::new(0),
        }
    }

    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// Whether records of `resource` are captured, or why not.
    pub fn admits(&self, resource: &str) -> Result<(), Skip> {
        if !self.config.captures(resource) {
            Err(Skip::NotCaptured)
        } else if self.config.resources.is_none() && self.db.is_plugin_resource(resource) {
            Err(Skip::PluginResource)
        } else {
            Ok(())
        }
    }

    /// Adds the store's requests since the last call to the metric; `more` counts others
    /// (SQS calls).
    pub fn report_requests(&self, more: u64) {
        let total = self.db.store.requests();
        let before = self.requests_reported.swap(total, Ordering::Relaxed);
        self.counters.requests(total.saturating_sub(before) + more);
    }

    /// Reads each wanted record as it is now and journals what changed, with the polling
    /// `position` in the same transaction. Returns how many events it journaled.
    pub async fn capture(
        &self,
        wanted: Vec<Wanted>,
        position: Option<Vec<u8>>,
        parallelism: usize,
    ) -> Result<usize, CaptureError> {
        let held = self.journal.live_bytes();
        if held > self.journal_budget {
            return Err(CaptureError::OverBudget {
                held,
                budget: self.journal_budget,
            });
        }
        // One read per key, whatever number of notifications named it; the latest sequencer.
        let mut by_key: BTreeMap<RecordKey, Wanted> = BTreeMap::new();
        for w in wanted {
            let key = RecordKey {
                resource: w.resource.clone(),
                id: w.id.clone(),
            };
            match by_key.get_mut(&key) {
                Some(known) => {
                    if let Some(s) = &w.sequencer
                        && known
                            .sequencer
                            .as_ref()
                            .is_none_or(|k| crate::journal::observed::sequencer_after(s, k))
                    {
                        known.sequencer = Some(s.clone());
                        known.event_time = w.event_time.clone();
                    }
                }
                None => {
                    by_key.insert(key, w);
                }
            }
        }
        let keys: Vec<RecordKey> = by_key.keys().cloned().collect();
        // In key order, so two rounds sharing keys never wait on each other in a circle.
        let mut guards = Vec::with_capacity(keys.len());
        for k in &keys {
            guards.push(self.locks.get(k).lock_owned().await);
        }
        let result = self.capture_locked(by_key, position, parallelism).await;
        drop(guards);
        self.locks.release(&keys);
        self.report_requests(0);
        result
    }

    async fn capture_locked(
        &self,
        by_key: BTreeMap<RecordKey, Wanted>,
        position: Option<Vec<u8>>,
        parallelism: usize,
    ) -> Result<usize, CaptureError> {
        let with_sequencer: Vec<RecordKey> = by_key
            .iter()
            .filter(|(_, w)| w.sequencer.is_some())
            .map(|(k, _)| k.clone())
            .collect();
        let seen = if with_sequencer.is_empty() {
            Vec::new()
        } else {
            self.journal.seen(self.id(), with_sequencer.clone()).await?
        };
        let handled: HashMap<&RecordKey, &Seen> = with_sequencer
            .iter()
            .zip(&seen)
            .filter_map(|(k, s)| s.as_ref().map(|s| (k, s)))
            .collect();
        let mut to_read = Vec::new();
        for (key, w) in by_key {
            let stale = match (
                handled.get(&key).and_then(|s| s.sequencer.as_ref()),
                &w.sequencer,
            ) {
                (Some(done), Some(this)) => !crate::journal::observed::sequencer_after(this, done),
                _ => false,
            };
            if stale {
                self.counters.skipped(Skip::Stale);
            } else {
                to_read.push(w);
            }
        }
        let reads = bounded(to_read.into_iter().map(|w| self.observe(w)), parallelism).await;
        let mut observations = Vec::with_capacity(reads.len());
        let mut lags = Vec::with_capacity(reads.len());
        for read in reads {
            match read? {
                Some((observation, changed_at_ms)) => {
                    observations.push(observation);
                    lags.push(changed_at_ms);
                }
                None => self.counters.skipped(Skip::UnknownResource),
            }
        }
        if observations.is_empty() && position.is_none() {
            return Ok(0);
        }
        let outcomes = self
            .journal
            .observe(self.id(), observations, position)
            .await?;
        let now = chrono::Utc::now().timestamp_millis();
        let mut appended = 0;
        let mut newest = 0;
        for (outcome, changed_at_ms) in outcomes.into_iter().zip(lags) {
            match outcome {
                Outcome::Appended { action, sequence } => {
                    appended += 1;
                    newest = sequence;
                    self.counters
                        .captured(action, (now - changed_at_ms) as f64 / 1000.0);
                }
                Outcome::Unchanged => self.counters.skipped(Skip::Unchanged),
            }
        }
        // In cluster mode what was read is done once the intake queue has it: a host that
        // dies before leaves its notifications to the others.
        if let Some(forwarded) = &self.forwarded {
            let _ = forwarded.clone().wait_for(|f| *f >= newest).await;
        }
        Ok(appended)
    }

    /// The record's state now, and when it last changed (ms); `None` for a resource
    /// `s3db.json` does not define.
    async fn observe(&self, w: Wanted) -> Result<Option<(Observation, i64)>, CaptureError> {
        let now = chrono::Utc::now();
        let (state, changed_at_ms, timestamp) =
            match self.db.read_record(&w.resource, &w.id).await? {
                RecordRead::UnknownResource => return Ok(None),
                RecordRead::Found(record) => {
                    let lm = record.stamp.last_modified_ms;
                    let seen = Seen {
                        fingerprint: record.stamp.fingerprint,
                        etag: record.stamp.etag,
                        digest: record.digest,
                        last_modified_ms: lm,
                        unsettled: now.timestamp_millis() - lm < SETTLE.as_millis() as i64,
                        sequencer: w.sequencer,
                    };
                    let timestamp =
                        rfc3339(chrono::DateTime::from_timestamp_millis(lm).unwrap_or(now));
                    let state = Observed::Present {
                        seen,
                        data: record.data,
                    };
                    (state, lm, timestamp)
                }
                RecordRead::Missing => {
                    let at = w
                        .event_time
                        .as_deref()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.with_timezone(&chrono::Utc))
                        .unwrap_or(now);
                    let timestamp = rfc3339(at);
                    (Observed::Absent, at.timestamp_millis(), timestamp)
                }
            };
        Ok(Some((
            Observation {
                resource: w.resource,
                id: w.id,
                state,
                timestamp,
            },
            changed_at_ms,
        )))
    }
}
