//! A driver component: instances kept per sink (one per batch in flight), outbound HTTP only
//! to the hosts its config allows, a deadline per call; a trapped or `fatal` instance is
//! replaced by a fresh one.

use serde_json::Value;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::Store;

use super::PluginError;
use super::bindings::Event;
use super::bindings::driver::exports::replicator::plugin::driver::{
    DriverError, DriverInfo, HealthStatus, ReplicateResult,
};
use super::bindings::driver::{SinkDriver, SinkDriverPre};
use super::egress::{AllowedHost, Egress};
use super::runtime::{CallError, DriverState, Host, Runtime, within};
use super::version::{Version, World};
use crate::redact::Secrets;
use std::sync::atomic::{AtomicBool, Ordering};

pub struct DriverPlugin {
    pub name: Arc<str>,
    pub version: Version,
    /// The secrets of its config, masked in what it says.
    pub secrets: Secrets,
    runtime: Arc<Runtime>,
    pre: SinkDriverPre<Host>,
    config: Vec<u8>,
    allowed: Arc<Vec<AllowedHost>>,
    pub state: DriverState,
    idle: Mutex<Vec<(Store<Host>, SinkDriver)>>,
    /// A newer version took its place: instances are closed as calls end.
    retired: AtomicBool,
    pub info: DriverInfo,
}

/// Why a driver gave no answer; the instance it ran in is gone.
#[derive(Debug)]
pub enum Failure {
    /// The call trapped or ran past its deadline.
    Call(CallError),
    /// No instance could be started or take its config (the host's instances or memory used
    /// up, a trap in `init`): the driver is unavailable, no record is at fault.
    NoInstance(String),
}

/// A `replicate` call's answer: the driver's own result, or no answer at all.
pub type Answer = Result<Result<ReplicateResult, DriverError>, Failure>;

/// What a `replicate` call came to.
pub struct Replicated {
    pub result: Answer,
    /// `host:port` of the requests the allow-list refused during the call.
    pub refused: Vec<String>,
}

impl From<Answer> for Replicated {
    fn from(result: Answer) -> Self {
        Replicated {
            result,
            refused: Vec::new(),
        }
    }
}

/// Links a driver component with the sandbox and type-checks its export (`plugin check` does
/// the same).
pub(super) fn prepare(
    runtime: &Runtime,
    component: &wasmtime::component::Component,
    path: &Path,
) -> Result<SinkDriverPre<Host>, PluginError> {
    let refused = |e: wasmtime::Error| PluginError::Refused(path.to_path_buf(), format!("{e:#}"));
    SinkDriverPre::new(
        runtime
            .linker(true)?
            .instantiate_pre(component)
            .map_err(refused)?,
    )
    .map_err(|e| {
        PluginError::Refused(
            path.to_path_buf(),
            format!("does not export the driver interface of replicator:plugin@0.1.0: {e:#}"),
        )
    })
}

impl DriverPlugin {
    /// Compiles (or loads from the cache), checks the world and asks the driver to describe itself.
    pub async fn load(
        runtime: Arc<Runtime>,
        path: &Path,
        config: &Value,
        allowed: Vec<AllowedHost>,
        state: DriverState,
    ) -> Result<Arc<DriverPlugin>, PluginError> {
        let loaded = runtime.load_off_thread(path).await?;
        let pre = prepare(&runtime, &loaded.component, path)?;
        let version = Version {
            digest: loaded.digest,
            world: World::SinkDriver,
            loaded_at: std::time::SystemTime::now(),
        };
        let name: Arc<str> = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .into();
        let secrets = Secrets::in_config(config);
        let mut store = runtime.store(
            name.clone(),
            secrets.clone(),
            Egress::new(name.clone(), Arc::new(allowed.clone()), &runtime.denied),
            state.clone(),
        );
        let budget = runtime.config().timeout;
        runtime.arm(&mut store, budget);
        let trap = |e: CallError| PluginError::Trap(name.to_string(), e.to_string());
        let instance = within(budget, pre.instantiate_async(&mut store))
            .await
            .map_err(trap)?;
        let exports = instance.replicator_plugin_driver();
        let info = within(budget, exports.call_describe(&mut store))
            .await
            .map_err(trap)?;
        Ok(Arc::new(DriverPlugin {
            name,
            version,
            secrets,
            runtime,
            pre,
            config: serde_json::to_vec(config).expect("JSON serializes"),
            allowed: Arc::new(allowed),
            state,
            idle: Mutex::new(Vec::new()),
            retired: AtomicBool::new(false),
            info,
        }))
    }

    /// A ready instance: a kept one, or a new one that accepted its config.
    async fn take(&self) -> Result<Result<(Store<Host>, SinkDriver), DriverError>, Failure> {
        if let Some(i) = self.idle.lock().expect("idle lock").pop() {
            return Ok(Ok(i));
        }
        let egress = Egress::new(
            self.name.clone(),
            self.allowed.clone(),
            &self.runtime.denied,
        );
        let mut store = self.runtime.store(
            self.name.clone(),
            self.secrets.clone(),
            egress,
            self.state.clone(),
        );
        let budget = self.runtime.config().timeout;
        self.runtime.arm(&mut store, budget);
        let failed = |e: CallError| Failure::NoInstance(e.to_string());
        let instance = within(budget, self.pre.instantiate_async(&mut store))
            .await
            .map_err(failed)?;
        let exports = instance.replicator_plugin_driver();
        match within(budget, exports.call_init(&mut store, &self.config))
            .await
            .map_err(failed)?
        {
            Ok(()) => Ok(Ok((store, instance))),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Opens an instance now (the pipeline retries while the destination is away).
    pub async fn init(&self) -> Result<Result<(), DriverError>, Failure> {
        match self.take().await? {
            Ok((store, instance)) => {
                self.put_back(store, instance).await;
                Ok(Ok(()))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// Delivers a batch through one instance. An instance that failed, or said `fatal` for
    /// the batch or any record, is dropped; the next call gets a fresh one.
    pub async fn replicate(&self, events: &[Event], timeout: Duration) -> Replicated {
        let (mut store, instance) = match self.take().await {
            Ok(Ok(i)) => i,
            Ok(Err(e)) => return Replicated::from(Ok(Err(e))),
            Err(f) => return Replicated::from(Err(f)),
        };
        self.runtime.arm(&mut store, timeout);
        let exports = instance.replicator_plugin_driver();
        let result = within(timeout, exports.call_replicate(&mut store, events))
            .await
            .map_err(|e| store.data().explain(e));
        let refused = store.data_mut().egress.take_refused();
        let fatal = |e: &DriverError| matches!(e, DriverError::Fatal(_));
        let broken = match &result {
            Ok(Ok(r)) => r.failed.iter().any(|f| fatal(&f.error)),
            Ok(Err(e)) => fatal(e),
            Err(_) => true,
        };
        if !broken {
            self.put_back(store, instance).await;
        }
        Replicated {
            result: result.map_err(Failure::Call),
            refused,
        }
    }

    /// Asks an idle instance; none is started for it (a status request must not open
    /// connections, nor outlive `close`). `None` when none is idle or it did not answer.
    pub async fn health(&self) -> Option<HealthStatus> {
        let (mut store, instance) = self.idle.lock().expect("idle lock").pop()?;
        let budget = Duration::from_secs(2);
        self.runtime.arm(&mut store, budget);
        let exports = instance.replicator_plugin_driver();
        let status = within(budget, exports.call_health(&mut store)).await.ok()?;
        self.put_back(store, instance).await;
        Some(status)
    }

    /// Keeps an instance for the next call, or closes it when a newer version took over.
    async fn put_back(&self, store: Store<Host>, instance: SinkDriver) {
        if self.retired.load(Ordering::Acquire) {
            self.close_instance(store, instance).await;
        } else {
            self.idle.lock().expect("idle lock").push((store, instance));
        }
    }

    async fn close_instance(&self, mut store: Store<Host>, instance: SinkDriver) {
        let budget = Duration::from_secs(5);
        self.runtime.arm(&mut store, budget);
        let exports = instance.replicator_plugin_driver();
        let _ = within(budget, exports.call_close(&mut store)).await;
    }

    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().expect("idle lock"));
        for (store, instance) in idle {
            self.close_instance(store, instance).await;
        }
    }

    /// A newer version took its place: its idle instances are closed now, the busy ones when
    /// their calls end.
    pub async fn retire(&self) {
        self.retired.store(true, Ordering::Release);
        self.close().await;
    }
}
