//! The plugins a service runs, swappable while it runs: each transform and Wasm driver sits
//! in a [`Live`] cell that callers read once per batch, so a reload (the file changed on disk,
//! or `POST /v1/plugins/reload`) lets calls in flight finish on the old version while new
//! batches get the new one. A version that fails to compile, link or `init` is refused and
//! the old one keeps running.

use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

use super::driver::DriverPlugin;
use super::egress::{AllowedHost, DeniedRequests};
use super::{PluginError, PluginsConfig, Runtime, Transform, Version};

/// The current version of one plugin; replaced whole by a reload.
pub struct Live<T>(RwLock<Arc<T>>);

impl<T> Live<T> {
    pub fn new(value: Arc<T>) -> Arc<Live<T>> {
        Arc::new(Live(RwLock::new(value)))
    }

    /// The version to use for the next call or batch.
    pub fn get(&self) -> Arc<T> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Puts `value` in place; returns the version it replaced.
    fn replace(&self, value: Arc<T>) -> Arc<T> {
        std::mem::replace(
            &mut *self.0.write().unwrap_or_else(|p| p.into_inner()),
            value,
        )
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabel {
    pub plugin: String,
    /// `reloaded` or `refused`.
    pub result: &'static str,
}

/// `replicator_plugin_reloads_total`.
pub type Reloads = Family<ReloadLabel, Counter>;

/// Told of every reload, so the service can say it on its event stream.
pub type Notify = Arc<dyn Fn(&Reload) + Send + Sync>;

/// What became of the file's version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum ReloadResult {
    /// Swapped in.
    Reloaded,
    /// The file holds the version running.
    Unchanged,
    /// Did not load, or failed its check: the running version stays.
    Refused,
}

impl ReloadResult {
    fn label(self) -> &'static str {
        match self {
            ReloadResult::Reloaded => "reloaded",
            ReloadResult::Unchanged => "unchanged",
            ReloadResult::Refused => "refused",
        }
    }
}

/// What a reload of one plugin came to.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Reload {
    pub path: String,
    pub replicator: String,
    pub result: ReloadResult,
    /// The digest running after the reload.
    pub digest: String,
    /// Why the new version was refused.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// One plugin in the service's status.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PluginStatus {
    pub path: String,
    pub replicator: String,
    /// `transform` or `driver`.
    pub kind: &'static str,
    /// The WIT world the running version implements.
    pub world: &'static str,
    /// SHA-256 of the running version's file.
    pub digest: String,
    /// When the running version was loaded (RFC 3339).
    pub loaded_at: String,
    /// Versions swapped in since the service started.
    pub reloads: u64,
    /// Why the last new version was refused, while the running one is older than the file.
    pub last_error: Option<String>,
}

/// A plugin's slot and what a reload needs to load it again.
enum Slot {
    Transform {
        live: Arc<Live<Transform>>,
        config: Value,
    },
    Driver {
        live: Arc<Live<DriverPlugin>>,
        config: Value,
        allowed: Vec<AllowedHost>,
    },
}

impl Slot {
    fn version(&self) -> Version {
        match self {
            Slot::Transform { live, .. } => live.get().version.clone(),
            Slot::Driver { live, .. } => live.get().version.clone(),
        }
    }
}

/// Size and modification time: what the watcher compares between two looks at a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            len: m.len(),
            modified: m.modified().ok(),
        })
    }
}

struct Entry {
    path: PathBuf,
    replicator: String,
    slot: Slot,
    record: Mutex<Record>,
}

/// What the status tells of an entry's reloads.
#[derive(Default)]
struct Record {
    reloads: u64,
    last_error: Option<String>,
}

/// What the watcher knows of one file.
struct Watched {
    path: PathBuf,
    seen: Option<FileStamp>,
    /// A change seen on the last look; loaded once the file holds still for a look.
    settling: Option<FileStamp>,
}

/// The runtime and every plugin loaded through it.
pub struct Plugins {
    pub runtime: Arc<Runtime>,
    entries: Mutex<Vec<Arc<Entry>>>,
    /// One reload at a time (the watcher and the API may ask at once).
    reloading: tokio::sync::Mutex<()>,
    watched: Mutex<Vec<Watched>>,
    reloads: Reloads,
    notify: Notify,
}

impl Plugins {
    pub fn new(
        config: PluginsConfig,
        denied: DeniedRequests,
        reloads: Reloads,
        notify: Notify,
    ) -> Result<Arc<Plugins>, PluginError> {
        Ok(Arc::new(Plugins {
            runtime: Runtime::new(config, denied)?,
            entries: Default::default(),
            reloading: Default::default(),
            watched: Default::default(),
            reloads,
            notify,
        }))
    }

    /// Loads a route's transform and keeps it for reloads.
    pub async fn transform(
        &self,
        replicator: &str,
        path: &Path,
        config: &Value,
    ) -> Result<Arc<Live<Transform>>, PluginError> {
        let live = Live::new(Transform::load(self.runtime.clone(), path, config).await?);
        let slot = Slot::Transform {
            live: live.clone(),
            config: config.clone(),
        };
        self.register(replicator, path, slot);
        Ok(live)
    }

    /// Loads a replicator's Wasm driver and keeps it for reloads.
    pub async fn driver(
        &self,
        replicator: &str,
        path: &Path,
        config: &Value,
        allowed: Vec<AllowedHost>,
    ) -> Result<Arc<Live<DriverPlugin>>, PluginError> {
        let plugin = DriverPlugin::load(
            self.runtime.clone(),
            path,
            config,
            allowed.clone(),
            Default::default(),
        )
        .await?;
        let live = Live::new(plugin);
        let slot = Slot::Driver {
            live: live.clone(),
            config: config.clone(),
            allowed,
        };
        self.register(replicator, path, slot);
        Ok(live)
    }

    fn register(&self, replicator: &str, path: &Path, slot: Slot) {
        self.entries
            .lock()
            .expect("entries lock")
            .push(Arc::new(Entry {
                path: path.to_path_buf(),
                replicator: replicator.to_string(),
                slot,
                record: Default::default(),
            }));
        let mut watched = self.watched.lock().expect("watch lock");
        if !watched.iter().any(|w| w.path == path) {
            watched.push(Watched {
                path: path.to_path_buf(),
                seen: FileStamp::of(path),
                settling: None,
            });
        }
    }

    pub fn status(&self) -> Vec<PluginStatus> {
        let entries = self.entries.lock().expect("entries lock");
        entries
            .iter()
            .map(|e| {
                let v = e.slot.version();
                let record = e.record.lock().expect("record lock");
                PluginStatus {
                    path: e.path.display().to_string(),
                    replicator: e.replicator.clone(),
                    kind: match e.slot {
                        Slot::Transform { .. } => "transform",
                        Slot::Driver { .. } => "driver",
                    },
                    world: v.world.name(),
                    digest: v.digest,
                    loaded_at: chrono::DateTime::<chrono::Utc>::from(v.loaded_at)
                        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                    reloads: record.reloads,
                    last_error: record.last_error.clone(),
                }
            })
            .collect()
    }

    /// Loads again every plugin whose file (all of them, or those at `only`) no longer holds
    /// the version running. Plugins are reloaded one at a time.
    pub async fn reload(&self, only: Option<&Path>) -> Vec<Reload> {
        let _one = self.reloading.lock().await;
        let entries: Vec<Arc<Entry>> = self
            .entries
            .lock()
            .expect("entries lock")
            .iter()
            .filter(|e| only.is_none_or(|p| p == e.path))
            .cloned()
            .collect();
        // Each file is read and hashed once, however many replicators use it.
        let mut on_disk: HashMap<PathBuf, Result<String, String>> = HashMap::new();
        for entry in &entries {
            if !on_disk.contains_key(&entry.path) {
                let digest = file_digest(entry.path.clone()).await;
                on_disk.insert(entry.path.clone(), digest);
            }
        }
        let mut reports = Vec::new();
        for entry in &entries {
            let report = self.reload_one(entry, &on_disk[&entry.path]).await;
            if report.result != ReloadResult::Unchanged {
                self.reloads
                    .get_or_create(&ReloadLabel {
                        plugin: file_name(&entry.path),
                        result: report.result.label(),
                    })
                    .inc();
                (self.notify)(&report);
            }
            reports.push(report);
        }
        reports
    }

    async fn reload_one(&self, entry: &Entry, on_disk: &Result<String, String>) -> Reload {
        let running = entry.slot.version().digest;
        let report = |result, digest: &str, error: Option<String>| Reload {
            path: entry.path.display().to_string(),
            replicator: entry.replicator.clone(),
            result,
            digest: digest.to_string(),
            error,
        };
        let refused = |e: String| {
            tracing::error!(path = %entry.path.display(), replicator = %entry.replicator, error = %e, "new plugin version refused; the running one stays");
            e
        };
        let on_disk = match on_disk {
            Ok(digest) => digest,
            Err(e) => {
                let e = refused(e.clone());
                entry.record.lock().expect("record lock").last_error = Some(e.clone());
                return report(ReloadResult::Refused, &running, Some(e));
            }
        };
        if *on_disk == running {
            return report(ReloadResult::Unchanged, &running, None);
        }
        let swapped = match &entry.slot {
            Slot::Transform { live, config } => {
                Transform::load(self.runtime.clone(), &entry.path, config)
                    .await
                    .map(|new| {
                        let digest = new.version.digest.clone();
                        live.replace(new);
                        digest
                    })
            }
            Slot::Driver {
                live,
                config,
                allowed,
            } => {
                let old = live.get();
                match DriverPlugin::load(
                    self.runtime.clone(),
                    &entry.path,
                    config,
                    allowed.clone(),
                    old.state.clone(),
                )
                .await
                {
                    Ok(new) => {
                        let digest = new.version.digest.clone();
                        live.replace(new);
                        // Calls in flight finish on the old version; it closes its instances
                        // as they come back.
                        old.retire().await;
                        Ok(digest)
                    }
                    Err(e) => Err(e),
                }
            }
        };
        match swapped {
            Ok(digest) => {
                tracing::info!(path = %entry.path.display(), replicator = %entry.replicator, digest = %digest, "plugin reloaded");
                let mut record = entry.record.lock().expect("record lock");
                record.reloads += 1;
                record.last_error = None;
                report(ReloadResult::Reloaded, &digest, None)
            }
            Err(e) => {
                let e = refused(e.to_string());
                entry.record.lock().expect("record lock").last_error = Some(e.clone());
                report(ReloadResult::Refused, &running, Some(e))
            }
        }
    }

    /// Looks at every plugin file each `interval`; a file that changed and then held still
    /// for one look is reloaded.
    pub async fn watch(self: Arc<Self>, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            for path in self.settled() {
                self.reload(Some(&path)).await;
            }
        }
    }

    /// The files that changed since the last reload and held still since the last look.
    fn settled(&self) -> Vec<PathBuf> {
        let mut ready = Vec::new();
        for w in self.watched.lock().expect("watch lock").iter_mut() {
            let now = FileStamp::of(&w.path);
            if now == w.seen {
                w.settling = None;
            } else if w.settling.is_some() && w.settling == now {
                w.seen = now;
                w.settling = None;
                ready.push(w.path.clone());
            } else {
                w.settling = now;
            }
        }
        ready
    }
}

/// The SHA-256 of a plugin file, read on a blocking thread (components weigh megabytes).
async fn file_digest(path: PathBuf) -> Result<String, String> {
    tokio::task::spawn_blocking(move || {
        std::fs::read(&path)
            .map(|bytes| crate::plugins::runtime::digest(&bytes))
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    })
    .await
    .unwrap_or_else(|e| Err(format!("reading the plugin file stopped: {e}")))
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
