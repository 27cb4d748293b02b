//! Change capture: the host reads the changes of s3db databases from their buckets, through
//! S3 event notifications on an SQS queue or by listing, so writes made by any process with no
//! plugin are replicated. Captured changes enter the journal like posted events.

mod notifications;
mod polling;
mod source;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use source::CaptureError;
use source::Source;
use stats::{Part, SourceCounters, SourceStats};

use crate::config::SourceConfig;
use crate::delivery::{Backoff, for_background_outage};
use crate::journal::Journal;
use crate::pipeline::telemetry::Telemetry;
use crate::s3db::Database;

/// What the rest of the host sees of a source.
pub struct SourceHandle {
    pub id: String,
    pub mode: &'static str,
    pub stats: Arc<SourceStats>,
}

/// The running sources.
pub struct Sources {
    handles: Vec<SourceHandle>,
    tasks: std::sync::Mutex<Vec<JoinHandle<()>>>,
    shutdown: CancellationToken,
}

impl Sources {
    /// Starts every source; each connects to its database in the background, retrying (and
    /// saying so in its status) while it cannot.
    pub fn start(
        configs: &[SourceConfig],
        journal: Arc<Journal>,
        telemetry: Arc<Telemetry>,
        journal_budget: u64,
        forwarded: Option<watch::Receiver<u64>>,
    ) -> Sources {
        let shutdown = CancellationToken::new();
        let mut handles = Vec::new();
        let mut tasks = Vec::new();
        for config in configs {
            let counters = SourceCounters::new(&config.id, telemetry.clone());
            handles.push(SourceHandle {
                id: config.id.clone(),
                mode: config.mode(),
                stats: counters.stats.clone(),
            });
            tasks.push(tokio::spawn(run(
                config.clone(),
                journal.clone(),
                counters,
                journal_budget,
                forwarded.clone(),
                shutdown.clone(),
            )));
        }
        Sources {
            handles,
            tasks: std::sync::Mutex::new(tasks),
            shutdown,
        }
    }

    pub fn handles(&self) -> &[SourceHandle] {
        &self.handles
    }

    /// Stops every source; what was read and not yet journaled is read again next start.
    pub async fn shutdown(&self) {
        self.shutdown.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("tasks lock"));
        for t in tasks {
            let _ = t.await;
        }
    }
}

async fn run(
    config: SourceConfig,
    journal: Arc<Journal>,
    counters: SourceCounters,
    journal_budget: u64,
    forwarded: Option<watch::Receiver<u64>>,
    shutdown: CancellationToken,
) {
    let mut outage = Outage::default();
    let db = loop {
        let connecting = tokio::select! {
            c = Database::connect(config.connection.clone()) => c,
            _ = shutdown.cancelled() => return,
        };
        match connecting {
            Ok(db) => {
                counters.running(Part::Connect);
                break db;
            }
            Err(e) => {
                counters.failed(Part::Connect, &e.to_string());
                if !outage.wait(&shutdown).await {
                    return;
                }
            }
        }
    };
    tracing::info!(source = %config.id, mode = config.mode(), database = %config.connection.shown, "capturing changes");
    let notifications = config.notifications.clone();
    let poll = config.poll.clone();
    let source = Arc::new(Source::new(
        config,
        db,
        journal,
        counters,
        journal_budget,
        forwarded,
    ));
    let mut modes = Vec::new();
    if let Some(n) = notifications {
        modes.push(tokio::spawn(notifications::run(
            source.clone(),
            n,
            shutdown.clone(),
        )));
    }
    if let Some(p) = poll {
        modes.push(tokio::spawn(polling::run(source, p, shutdown)));
    }
    for m in modes {
        let _ = m.await;
    }
}

/// Waits between failed rounds of a part of a source: the outage backoff replicators use,
/// from 200 ms, doubling to 30 s, with jitter.
#[derive(Default)]
struct Outage(Option<Backoff>);

impl Outage {
    /// A round went through: the next failure waits the shortest delay again.
    fn reset(&mut self) {
        self.0 = None;
    }

    /// Waits the next delay; `false` when the host stops meanwhile.
    async fn wait(&mut self, shutdown: &CancellationToken) -> bool {
        let delay = self
            .0
            .get_or_insert_with(for_background_outage)
            .next()
            .unwrap_or(Duration::from_secs(30));
        pause(delay, shutdown).await
    }
}

/// Sleeps `delay`; `false` when the host stops meanwhile.
async fn pause(delay: Duration, shutdown: &CancellationToken) -> bool {
    tokio::select! {
        _ = tokio::time::sleep(delay) => true,
        _ = shutdown.cancelled() => false,
    }
}
