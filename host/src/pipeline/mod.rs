//! Delivery, written once for every driver: one worker per replicator reads the journal from
//! its own cursor, so one replicator's outage never slows another. Also prunes the journal
//! once every replicator is past an event (and its retention is over).

pub mod backfill;
mod log_shipper;
pub mod telemetry;
mod worker;

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::cluster::feed::Feed;
use crate::cluster::refresh::Refresh;
use crate::cluster::sequencer::{self, Destination};
use crate::cluster::state::HostWork;
use crate::cluster::{Cluster, forwarder};
use crate::config::{Config, DriverKind, JournalConfig};
use crate::delivery::RouteIndex;
use crate::journal::{DeadLetter, Journal, JournalError};
use crate::plugins::{PluginError, Plugins};
use backfill::Backfills;
use telemetry::{MonitorEvent, ReplicatorCounters, ReplicatorStats, State, Telemetry};
use worker::{Control, Worker, WorkerParts};

/// Messages a feed holds at most: each is extended every third of the visibility timeout.
const FEED_HELD_MAX: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error("no replicator named \"{0}\"")]
    UnknownReplicator(String),
    #[error("replicator \"{0}\" is paused (enabled: false)")]
    Paused(String),
    #[error(
        "sequence {requested} is no longer in the journal (oldest kept: {oldest}); raise journal.retention to replay further back"
    )]
    Pruned { requested: u64, oldest: u64 },
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("replicator \"{0}\": {1}")]
    Plugin(String, crate::plugins::PluginError),
    #[error(
        "replay is not available in cluster mode: SQS keeps no events once delivered (use backfill)"
    )]
    NoReplayInCluster,
}

/// What the rest of the host sees of a replicator.
pub struct ReplicatorHandle {
    pub id: String,
    pub driver: DriverKind,
    pub stats: Arc<ReplicatorStats>,
    control: Option<mpsc::Sender<Control>>,
    /// The running destination (none while the replicator is paused).
    destination: Option<Arc<dyn crate::drivers::Driver>>,
}

impl ReplicatorHandle {
    /// What the destination says when it is not healthy (drivers that tell: Wasm drivers'
    /// `health`); none when it is, does not say, or does not answer within 2 s.
    pub async fn destination_health(&self) -> Option<String> {
        let destination = self.destination.as_ref()?;
        tokio::time::timeout(Duration::from_secs(2), destination.health())
            .await
            .ok()
            .flatten()
    }
}

pub struct Pipeline {
    pub backfills: Arc<Backfills>,
    /// The Wasm plugins the replicators run (none when no replicator uses one).
    pub plugins: Option<Arc<Plugins>>,
    replicators: Vec<ReplicatorHandle>,
    journal: Arc<Journal>,
    /// Set in cluster mode.
    cluster: Option<Arc<Cluster>>,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
    background: Vec<JoinHandle<()>>,
}

impl Pipeline {
    /// Starts a worker per enabled replicator and the pruning task; in cluster mode also
    /// this host's sequencers, the forwarder of captured events, and a feed per replicator.
    pub async fn start(
        config: &Config,
        journal: Arc<Journal>,
        telemetry: Arc<Telemetry>,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Pipeline, PipelineError> {
        let backfills = Backfills::load(journal.clone(), cluster.clone()).await?;
        let wants_plugins = config.replicators.iter().any(|r| {
            r.driver_config.needs_plugins() || r.routes.iter().any(|x| x.transform.is_some())
        });
        let plugins = if wants_plugins {
            Some(plugins(config, &telemetry).map_err(|e| PipelineError::Plugin("*".into(), e))?)
        } else {
            None
        };
        // Tasks that run until shutdown: pruning, shipping the replication log, watching
        // plugin files.
        let mut background = Vec::new();
        let mut replicators = Vec::new();
        let mut workers = Vec::new();
        let mut feeds = Vec::new();
        for r in &config.replicators {
            // A new replicator starts at the current head; history comes through backfill or replay.
            let cursor = match journal.cursor(&r.id).await? {
                Some(c) => c,
                None => {
                    let head = journal.head();
                    journal.commit_cursor(&r.id, head).await?;
                    head
                }
            };
            let running = config.enabled && r.enabled;
            let stats = Arc::new(ReplicatorStats::new(
                cursor,
                if running {
                    State::Starting
                } else {
                    State::Paused
                },
            ));
            let (control, destination) = if running {
                let (tx, rx) = mpsc::channel(64);
                let plugin_error = |e| PipelineError::Plugin(r.id.clone(), e);
                let mut transforms = Vec::with_capacity(r.routes.len());
                for route in &r.routes {
                    transforms.push(match (&route.transform, &plugins) {
                        (Some(t), Some(plugins)) => Some(
                            plugins
                                .transform(&r.id, &t.component, &t.config)
                                .await
                                .map_err(plugin_error)?,
                        ),
                        _ => None,
                    });
                }
                let context = crate::drivers::BuildContext {
                    replicator: &r.id,
                    plugins: plugins.as_ref(),
                    policy: &r.delivery,
                    routes: &r.routes,
                    report: Arc::new(ReplicatorCounters::new(
                        &r.id,
                        stats.clone(),
                        telemetry.clone(),
                    )),
                };
                let driver = r
                    .driver_config
                    .build(&context)
                    .await
                    .map_err(plugin_error)?;
                let mut policy = r.delivery.clone();
                if let Some(max) = driver.max_batch_size()
                    && max < policy.batch_size
                {
                    tracing::info!(replicator = %r.id, batch_size = max, "batchSize lowered to the largest batch the driver takes");
                    policy.batch_size = max;
                }
                let feed = cluster
                    .as_ref()
                    .map(|c| Feed::new(c.clone(), &r.id, policy.buffer_events.min(FEED_HELD_MAX)));
                let worker = Worker::new(WorkerParts {
                    id: r.id.clone(),
                    routes: r.routes.clone(),
                    transforms,
                    driver: driver.clone(),
                    policy,
                    journal: journal.clone(),
                    counters: ReplicatorCounters::new(&r.id, stats.clone(), telemetry.clone()),
                    log_errors: config.log_errors,
                    control: rx,
                    backfills: backfills.clone(),
                    max_fan_out: config.plugins.max_fan_out,
                    feed: feed.clone(),
                });
                let counters = ReplicatorCounters::new(&r.id, stats.clone(), telemetry.clone());
                workers.push(tokio::spawn(supervise(worker, counters, feed.clone())));
                if let Some(feed) = feed {
                    feeds.push((r.id.clone(), feed.clone(), stats.clone()));
                    background.push(tokio::spawn(feed.run()));
                }
                (Some(tx), Some(driver))
            } else {
                stats
                    .initialised
                    .store(true, std::sync::atomic::Ordering::Relaxed);
                (None, None)
            };
            replicators.push(ReplicatorHandle {
                id: r.id.clone(),
                driver: r.driver_config.kind(),
                stats,
                control,
                destination,
            });
        }
        let floors: Vec<Arc<ReplicatorStats>> =
            replicators.iter().map(|r| r.stats.clone()).collect();
        let ships_log = config.persist_replicator_log && config.replicator_log_database.is_some();
        if let (true, Some(conn)) = (ships_log, &config.replicator_log_database) {
            background.push(tokio::spawn(log_shipper::run(
                journal.clone(),
                telemetry.clone(),
                conn.clone(),
                config.replicator_log_resource.clone(),
                config.cluster.as_ref().map(|c| c.host_id.clone()),
            )));
        } else if config.persist_replicator_log {
            tracing::warn!(
                "persistReplicatorLog is on but replicatorLogDatabase names no s3db database: the log stays in the journal (GET /v1/log)"
            );
        }
        if let (Some(plugins), Some(every)) = (&plugins, config.plugins.watch_interval) {
            background.push(tokio::spawn(plugins.clone().watch(every)));
        }
        if let Some(cluster) = &cluster {
            let destinations: Vec<Destination> = config
                .replicators
                .iter()
                .map(|r| Destination {
                    replicator: r.id.clone(),
                    queue: cluster.queues.replicators[&r.id].clone(),
                    routes: RouteIndex::new(&r.routes),
                })
                .collect();
            let destinations = Arc::new(destinations);
            let refresh = Arc::new(Refresh::new(&config.sources));
            background.push(tokio::spawn(cluster.clone().keep_watch(move || {
                feeds
                    .iter()
                    .map(|(id, f, stats)| {
                        let work = HostWork {
                            held: f.held() as u64,
                            oldest_pending_ms: stats
                                .oldest_pending_ms
                                .load(std::sync::atomic::Ordering::Relaxed)
                                as i64,
                        };
                        (id.clone(), work)
                    })
                    .collect()
            })));
            for _ in 0..cluster.config.sequencers {
                background.push(tokio::spawn(sequencer::run(
                    cluster.clone(),
                    destinations.clone(),
                    refresh.clone(),
                )));
            }
            background.push(tokio::spawn(forwarder::run(
                cluster.clone(),
                journal.clone(),
            )));
        }
        background.push(tokio::spawn(prune(
            journal.clone(),
            floors,
            backfills.clone(),
            config.journal.clone(),
            ships_log,
            cluster.is_some(),
        )));
        Ok(Pipeline {
            backfills,
            plugins,
            replicators,
            journal,
            cluster,
            workers: std::sync::Mutex::new(workers),
            background,
        })
    }

    pub fn replicators(&self) -> &[ReplicatorHandle] {
        &self.replicators
    }

    /// True once every running replicator has initialised its destination.
    pub fn ready(&self) -> bool {
        self.replicators.iter().all(|r| {
            r.stats
                .initialised
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    fn control(&self, id: &str) -> Result<&mpsc::Sender<Control>, PipelineError> {
        let r = self
            .replicators
            .iter()
            .find(|r| r.id == id)
            .ok_or_else(|| PipelineError::UnknownReplicator(id.into()))?;
        r.control
            .as_ref()
            .ok_or_else(|| PipelineError::Paused(id.into()))
    }

    /// Rewinds a replicator so it delivers again from `from`.
    pub async fn replay(&self, id: &str, from: u64) -> Result<(), PipelineError> {
        let control = self.control(id)?;
        if self.cluster.is_some() {
            return Err(PipelineError::NoReplayInCluster);
        }
        let oldest = self.journal.first_retained().await?;
        if from < oldest && from <= self.journal.head() {
            return Err(PipelineError::Pruned {
                requested: from,
                oldest,
            });
        }
        let (done, wait) = oneshot::channel();
        control
            .send(Control::Rewind { from, done })
            .await
            .map_err(|_| PipelineError::UnknownReplicator(id.into()))?;
        let _ = wait.await;
        Ok(())
    }

    /// Hands redriven dead letters to their replicators.
    pub async fn redrive(&self, entries: Vec<DeadLetter>) {
        let mut by_replicator: std::collections::HashMap<String, Vec<DeadLetter>> =
            Default::default();
        for e in entries {
            by_replicator
                .entry(e.replicator.clone())
                .or_default()
                .push(e);
        }
        for (id, list) in by_replicator {
            // A paused or removed replicator finds them in the journal when it runs again.
            if let Ok(control) = self.control(&id) {
                let _ = control.send(Control::Redrive(list)).await;
            }
        }
    }

    /// Stops the workers; each saves its progress first.
    pub async fn shutdown(&self) {
        for task in &self.background {
            task.abort();
        }
        for r in &self.replicators {
            if let Some(c) = &r.control {
                let _ = c.send(Control::Stop).await;
            }
        }
        let workers = std::mem::take(&mut *self.workers.lock().expect("workers lock"));
        for t in workers {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
    }
}

/// The plugin runtime, its reloads counted and told on the event stream.
fn plugins(config: &Config, telemetry: &Arc<Telemetry>) -> Result<Arc<Plugins>, PluginError> {
    let stream = telemetry.clone();
    Plugins::new(
        config.plugins.clone(),
        telemetry.metrics.plugin_requests_denied.clone(),
        telemetry.metrics.plugin_reloads.clone(),
        Arc::new(move |reload| {
            let name = match reload.error {
                None => "plugin_reloaded",
                Some(_) => "plugin_refused",
            };
            stream.emit(MonitorEvent {
                error: reload.error.clone(),
                plugin: Some(reload.path.clone()),
                ..MonitorEvent::replicator_wide(name, &reload.replicator, String::new())
            });
        }),
    )
}

/// Runs a worker; if it ever ends by a panic, the replicator says so everywhere (its records
/// stay in the journal, and a restart delivers them). In cluster mode, once the worker ended
/// (stopped or panicked) its feed hands what it held back to the other hosts.
async fn supervise(worker: Worker, counters: ReplicatorCounters, feed: Option<Arc<Feed>>) {
    let ended = tokio::spawn(worker.run()).await;
    if let Some(feed) = feed {
        feed.close(true).await;
    }
    let Err(e) = ended else {
        return;
    };
    let reason = format!("the delivery worker stopped: {e}; restart the host to resume");
    tracing::error!(replicator = %counters.replicator(), error = %reason, "replicator stopped");
    counters.stalled(&reason, None);
}

/// Deletes events every replicator is done with, keeping `retention` worth of history, and
/// trims the replication log (never past what the log shipper has not written, when it runs).
async fn prune(
    journal: Arc<Journal>,
    replicators: Vec<Arc<ReplicatorStats>>,
    backfills: Arc<Backfills>,
    config: JournalConfig,
    ships_log: bool,
    forwards: bool,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        // In cluster mode the journal holds only captured events, kept until forwarded.
        let passed = if forwards {
            match journal.cursor(forwarder::POSITION).await {
                Ok(position) => position.unwrap_or(0),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the forwarder's position");
                    continue;
                }
            }
        } else {
            replicators
                .iter()
                .map(|r| r.cursor())
                .min()
                .unwrap_or_else(|| journal.head())
        };
        if let Err(e) = backfills.forget_passed(passed).await {
            tracing::error!(error = %e, "cannot update backfills");
        }
        // Events after a running backfill's start stay: a restarted worker re-reads them.
        let floor = backfills
            .prune_floor()
            .map_or(passed, |since| since.min(passed));
        let keep_after =
            chrono::Utc::now().timestamp_millis() - config.retention.as_millis() as i64;
        let shipped_to = if ships_log {
            match journal.cursor(log_shipper::POSITION).await {
                Ok(position) => Some(position.unwrap_or(0)),
                Err(e) => {
                    tracing::error!(error = %e, "cannot read the log shipper's position");
                    continue;
                }
            }
        } else {
            None
        };
        let log = crate::journal::LogRetention {
            keep: config.log_retention,
            shipped_to,
        };
        loop {
            match journal.prune(floor, keep_after, 10_000, log).await {
                Ok(10_000) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::error!(error = %e, "journal pruning failed");
                    break;
                }
            }
        }
    }
}
