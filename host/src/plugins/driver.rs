//! A driver component: instances kept per sink (one per batch in flight), outbound HTTP only
//! to the hosts its config allows, a deadline per call; a trapped or `fatal` instance is
//! replaced by a fresh one.

use serde_json::Value;
use std::collections::HashMap;
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
use super::runtime::{Host, Runtime};
use super::transform::trap_reason;

pub struct DriverPlugin {
    pub name: Arc<str>,
    runtime: Arc<Runtime>,
    pre: SinkDriverPre<Host>,
    config: Vec<u8>,
    allowed: Arc<Vec<AllowedHost>>,
    state: Arc<Mutex<HashMap<String, Vec<u8>>>>,
    idle: Mutex<Vec<(Store<Host>, SinkDriver)>>,
    pub info: DriverInfo,
}

/// A call that did not return normally: the instance is gone.
#[derive(Debug)]
pub struct Trapped(pub String);

impl DriverPlugin {
    /// Compiles (or loads from the cache), checks the world and asks the driver to describe itself.
    pub async fn load(
        runtime: Arc<Runtime>,
        path: &Path,
        config: &Value,
        allowed: Vec<AllowedHost>,
    ) -> Result<Arc<DriverPlugin>, PluginError> {
        let component = runtime.load(path)?;
        let linker = runtime.linker(true)?;
        let refused =
            |e: wasmtime::Error| PluginError::Refused(path.to_path_buf(), format!("{e:#}"));
        let pre = SinkDriverPre::new(linker.instantiate_pre(&component).map_err(refused)?)
            .map_err(|e| {
                PluginError::Refused(
                    path.to_path_buf(),
                    format!(
                        "does not export the driver interface of replicator:plugin@0.1.0: {e:#}"
                    ),
                )
            })?;
        let name: Arc<str> = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
            .into();
        let state: Arc<Mutex<HashMap<String, Vec<u8>>>> = Default::default();
        let mut store = runtime.store(
            name.clone(),
            Egress::new(
                name.clone(),
                Arc::new(allowed.clone()),
                runtime.denied.clone(),
            ),
            state.clone(),
        );
        runtime.arm(&mut store, runtime.config().timeout);
        let trap = |e: wasmtime::Error| PluginError::Trap(name.to_string(), format!("{e:#}"));
        let instance = pre.instantiate_async(&mut store).await.map_err(trap)?;
        let info = instance
            .replicator_plugin_driver()
            .call_describe(&mut store)
            .await
            .map_err(trap)?;
        Ok(Arc::new(DriverPlugin {
            name,
            runtime,
            pre,
            config: serde_json::to_vec(config).expect("JSON serializes"),
            allowed: Arc::new(allowed),
            state,
            idle: Mutex::new(Vec::new()),
            info,
        }))
    }

    /// A ready instance: a kept one, or a new one that accepted its config.
    async fn take(&self) -> Result<Result<(Store<Host>, SinkDriver), DriverError>, Trapped> {
        if let Some(i) = self.idle.lock().expect("idle lock").pop() {
            return Ok(Ok(i));
        }
        let egress = Egress::new(
            self.name.clone(),
            self.allowed.clone(),
            self.runtime.denied.clone(),
        );
        let mut store = self
            .runtime
            .store(self.name.clone(), egress, self.state.clone());
        let budget = self.runtime.config().timeout;
        self.runtime.arm(&mut store, budget);
        let trap = |e: wasmtime::Error| Trapped(trap_reason(&e, budget));
        let instance = self.pre.instantiate_async(&mut store).await.map_err(trap)?;
        match instance
            .replicator_plugin_driver()
            .call_init(&mut store, &self.config)
            .await
            .map_err(trap)?
        {
            Ok(()) => Ok(Ok((store, instance))),
            Err(e) => Ok(Err(e)),
        }
    }

    /// Opens an instance now (the pipeline retries while the destination is away).
    pub async fn init(&self) -> Result<Result<(), DriverError>, Trapped> {
        Ok(self
            .take()
            .await?
            .map(|i| self.idle.lock().expect("idle lock").push(i)))
    }

    /// Delivers a batch through one instance; a trap drops that instance.
    pub async fn replicate(
        &self,
        events: &[Event],
        timeout: Duration,
    ) -> Result<Result<ReplicateResult, DriverError>, Trapped> {
        let (mut store, instance) = match self.take().await? {
            Ok(i) => i,
            Err(e) => return Ok(Err(e)),
        };
        self.runtime.arm(&mut store, timeout);
        let call = instance
            .replicator_plugin_driver()
            .call_replicate(&mut store, events);
        // The epoch deadline stops a guest that computes; this one stops a guest waiting on I/O.
        let result = match tokio::time::timeout(timeout, call).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => return Err(Trapped(trap_reason(&e, timeout))),
            Err(_) => {
                return Err(Trapped(format!(
                    "deadline of {timeout:?} exceeded while waiting on I/O"
                )));
            }
        };
        if !matches!(result, Err(DriverError::Fatal(_))) {
            self.idle.lock().expect("idle lock").push((store, instance));
        }
        Ok(result)
    }

    pub async fn health(&self) -> Option<HealthStatus> {
        let (mut store, instance) = self.take().await.ok()?.ok()?;
        self.runtime.arm(&mut store, Duration::from_secs(5));
        let status = instance
            .replicator_plugin_driver()
            .call_health(&mut store)
            .await
            .ok()?;
        self.idle.lock().expect("idle lock").push((store, instance));
        Some(status)
    }

    pub async fn close(&self) {
        let idle = std::mem::take(&mut *self.idle.lock().expect("idle lock"));
        for (mut store, instance) in idle {
            self.runtime.arm(&mut store, Duration::from_secs(5));
            let _ = instance
                .replicator_plugin_driver()
                .call_close(&mut store)
                .await;
        }
    }
}
