//! A transform component: kept instances (never one per event), a deadline per call, and
//! isolation of the record that makes an instance trap (the batch is re-run one record at a
//! time in fresh instances; only that record fails).

use backon::{ExponentialBuilder, Retryable};
use serde_json::Value;
use std::borrow::Borrow;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::Store;
use wasmtime::component::{self, Func};

use super::bindings::batch::{BatchTransformer, BatchTransformerPre};
use super::bindings::record::{RecordTransformer, RecordTransformerPre};
use super::bindings::{ErrorInfo, EventRef, Outcome, TransformError};
use super::egress::Egress;
use super::runtime::{CallError, Host, Runtime, within};
use super::version::{Version, World};
use super::{PluginError, convert};
use crate::event::StoredEvent;
use crate::redact::Secrets;

/// What became of one input event.
#[derive(Debug, Clone, PartialEq)]
pub enum TransformOutcome {
    /// The events to deliver instead (none: skipped).
    Emit(Vec<StoredEvent>),
    /// This record failed (dead-lettered with the reason).
    Failed(TransformFailure),
}

/// Why a record failed in a transform.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct TransformFailure {
    /// The transform's own error code (`failed(invalid-record {code})`); none when the host
    /// failed the record (a trap, an invalid output).
    pub code: Option<String>,
    pub reason: String,
}

impl From<String> for TransformFailure {
    fn from(reason: String) -> Self {
        TransformFailure { code: None, reason }
    }
}

/// The exported interfaces, as the WIT names them.
const BATCH_INTERFACE: &str = "replicator:plugin/batch-transform@0.1.0";
const RECORD_INTERFACE: &str = "replicator:plugin/record-transform@0.1.0";

pub(super) enum Pre {
    Batch(BatchTransformerPre<Host>),
    Record(RecordTransformerPre<Host>),
}

/// The parameters and results of `transform-batch` and `transform`, with borrowed events.
type BatchCall<'a> = (&'a [EventRef<'a>],);
type RecordCall<'a> = (EventRef<'a>,);

/// A live instance and its transform export (`transform-batch` or `transform`), called
/// directly with borrowed events ([`EventRef`]) rather than through the bindings.
enum Instance {
    Batch(Store<Host>, Func),
    Record(Store<Host>, Func),
}

/// The export `name` of `interface` in `instance`.
fn export(
    store: &mut Store<Host>,
    instance: &component::Instance,
    interface: &str,
    name: &str,
) -> Option<Func> {
    let interface = instance.get_export_index(&mut *store, None, interface)?;
    let func = instance.get_export_index(&mut *store, Some(&interface), name)?;
    instance.get_func(&mut *store, func)
}

pub struct Transform {
    pub name: Arc<str>,
    pub version: Version,
    /// The secrets of its config, masked in its failures and log lines.
    secrets: Secrets,
    runtime: Arc<Runtime>,
    pre: Pre,
    config: Vec<u8>,
    idle: Mutex<Vec<Instance>>,
}

fn error_info(e: &TransformError) -> &ErrorInfo {
    match e {
        TransformError::InvalidRecord(i)
        | TransformError::InvalidConfig(i)
        | TransformError::Other(i) => i,
    }
}

fn error_text(e: &TransformError) -> String {
    let kind = match e {
        TransformError::InvalidRecord(_) => "invalid record",
        TransformError::InvalidConfig(_) => "invalid config",
        TransformError::Other(_) => "error",
    };
    let info = error_info(e);
    format!("transform {kind} ({}): {}", info.code, info.message)
}

/// Links a transform component with the sandbox and type-checks its export (`plugin check`
/// does the same).
pub(super) fn prepare(
    runtime: &Runtime,
    component: &component::Component,
    path: &Path,
) -> Result<Pre, PluginError> {
    let instance_pre = runtime
        .linker(false)?
        .instantiate_pre(component)
        .map_err(|e| PluginError::Refused(path.to_path_buf(), format!("{e:#}")))?;
    Ok(match BatchTransformerPre::new(instance_pre.clone()) {
        Ok(p) => Pre::Batch(p),
        Err(_) => Pre::Record(RecordTransformerPre::new(instance_pre).map_err(|e| {
            PluginError::Refused(path.to_path_buf(), format!("exports neither record-transform nor batch-transform of replicator:plugin@0.1.0: {e:#}"))
        })?),
    })
}

impl Transform {
    /// Compiles (or loads from the cache) and checks the config with a first instance.
    pub async fn load(
        runtime: Arc<Runtime>,
        path: &Path,
        config: &Value,
    ) -> Result<Arc<Transform>, PluginError> {
        let loaded = runtime.load_off_thread(path).await?;
        let pre = prepare(&runtime, &loaded.component, path)?;
        let version = Version {
            digest: loaded.digest,
            world: match pre {
                Pre::Batch(_) => World::BatchTransformer,
                Pre::Record(_) => World::RecordTransformer,
            },
            loaded_at: std::time::SystemTime::now(),
        };
        let secrets = Secrets::in_config(config);
        let config = if config.is_null() {
            b"{}".to_vec()
        } else {
            serde_json::to_vec(config).expect("JSON serializes")
        };
        let t = Arc::new(Transform {
            name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
                .into(),
            version,
            secrets,
            runtime,
            pre,
            config,
            idle: Mutex::new(Vec::new()),
        });
        let first = t.instantiate().await?;
        t.idle.lock().expect("idle lock").push(first);
        Ok(t)
    }

    async fn instantiate(&self) -> Result<Instance, PluginError> {
        let state = Default::default();
        let mut store = self.runtime.store(
            self.name.clone(),
            self.secrets.clone(),
            Egress::none(self.name.clone(), &self.runtime.denied),
            state,
        );
        let budget = self.runtime.config().timeout;
        self.runtime.arm(&mut store, budget);
        // What the guest says can carry its config.
        let trap = |e: CallError| {
            PluginError::Trap(self.name.to_string(), self.secrets.mask(&e.to_string()))
        };
        let fail = |e: wasmtime::Error| {
            PluginError::Trap(self.name.to_string(), self.secrets.mask(&format!("{e:#}")))
        };
        let init = |r: Result<(), TransformError>| {
            r.map_err(|e| {
                PluginError::Config(self.name.to_string(), self.secrets.mask(&error_text(&e)))
            })
        };
        let instance_pre = match &self.pre {
            Pre::Batch(pre) => pre.instance_pre(),
            Pre::Record(pre) => pre.instance_pre(),
        };
        let instance = within(budget, instance_pre.instantiate_async(&mut store))
            .await
            .map_err(trap)?;
        Ok(match &self.pre {
            Pre::Batch(_) => {
                let b = BatchTransformer::new(&mut store, &instance).map_err(fail)?;
                let exports = b.replicator_plugin_batch_transform();
                init(
                    within(budget, exports.call_init(&mut store, &self.config))
                        .await
                        .map_err(trap)?,
                )?;
                let f = export(&mut store, &instance, BATCH_INTERFACE, "transform-batch");
                Instance::Batch(store, f.expect("the bindings found transform-batch"))
            }
            Pre::Record(_) => {
                let r = RecordTransformer::new(&mut store, &instance).map_err(fail)?;
                let exports = r.replicator_plugin_record_transform();
                init(
                    within(budget, exports.call_init(&mut store, &self.config))
                        .await
                        .map_err(trap)?,
                )?;
                let f = export(&mut store, &instance, RECORD_INTERFACE, "transform");
                Instance::Record(store, f.expect("the bindings found transform"))
            }
        })
    }

    /// The most linear memory any of its kept instances has held.
    pub fn memory_peak(&self) -> usize {
        let idle = self.idle.lock().expect("idle lock");
        idle.iter()
            .map(|i| match i {
                Instance::Batch(store, _) | Instance::Record(store, _) => {
                    store.data().memory_peak()
                }
            })
            .max()
            .unwrap_or(0)
    }

    /// Transforms a batch: one outcome per input, in order.
    pub async fn apply<E: Borrow<StoredEvent> + Sync>(
        &self,
        events: &[E],
    ) -> Vec<TransformOutcome> {
        let pooled = self.idle.lock().expect("idle lock").pop();
        let mut instance = match pooled {
            Some(i) => i,
            None => match self.fresh_instance().await {
                Ok(i) => i,
                Err(e) => {
                    let reason = format!("no instance of the transform could be started: {e}");
                    return vec![TransformOutcome::Failed(reason.into()); events.len()];
                }
            },
        };
        match self.call(&mut instance, events).await {
            Ok(outcomes) => {
                self.idle.lock().expect("idle lock").push(instance);
                outcomes
            }
            // The instance is dead; a fresh one per record finds the one at fault.
            Err(trap) if events.len() == 1 => vec![TransformOutcome::Failed(trap.into())],
            Err(_) => {
                let mut out = Vec::with_capacity(events.len());
                for e in events {
                    out.extend(Box::pin(self.apply(std::slice::from_ref(e))).await);
                }
                out
            }
        }
    }

    /// A new instance, retried for about a minute. The config was accepted when the transform
    /// was loaded, so failing to start is the host's condition (its instances or memory used
    /// up): the records wait for it, but not forever (the replicator would stop with them), so
    /// after that they fail with the reason and can be redriven.
    async fn fresh_instance(&self) -> Result<Instance, PluginError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(100))
            .with_max_delay(Duration::from_secs(10))
            .with_jitter()
            .with_max_times(10);
        (|| self.instantiate())
            .retry(backoff)
            .notify(|e, wait| {
                tracing::warn!(plugin = %self.name, error = %e, retry_in = ?wait, "cannot start a transform instance; its records wait");
            })
            .await
    }

    /// Calls the component; `Err` when it trapped (deadline, memory, panic).
    async fn call<E: Borrow<StoredEvent> + Sync>(
        &self,
        instance: &mut Instance,
        events: &[E],
    ) -> Result<Vec<TransformOutcome>, String> {
        let budget = self.runtime.config().timeout;
        let trap = |e: CallError| {
            self.secrets
                .mask(&format!("plugin {} trapped: {e}", self.name))
        };
        let bad_export = |e: wasmtime::Error| format!("plugin {}: {e:#}", self.name);
        match instance {
            Instance::Batch(store, batch) => {
                let input: Vec<_> = events
                    .iter()
                    .map(|e| convert::to_wit_ref(e.borrow()))
                    .collect();
                let typed = batch
                    .typed::<BatchCall, (Vec<Outcome>,)>(&*store)
                    .map_err(bad_export)?;
                self.runtime.arm(store, budget);
                let (outcomes,) = within(budget, typed.call_async(&mut *store, (&input,)))
                    .await
                    .map_err(|e| trap(store.data().explain(e)))?;
                if outcomes.len() != events.len() {
                    return Err(format!(
                        "plugin {} returned {} outcomes for {} events",
                        self.name,
                        outcomes.len(),
                        events.len()
                    ));
                }
                Ok(outcomes
                    .into_iter()
                    .zip(events)
                    .map(|(o, e)| self.outcome(o, e.borrow()))
                    .collect())
            }
            Instance::Record(store, transform) => {
                let mut out = Vec::with_capacity(events.len());
                for e in events {
                    let e = e.borrow();
                    let typed = transform
                        .typed::<RecordCall, (Outcome,)>(&*store)
                        .map_err(bad_export)?;
                    self.runtime.arm(store, budget);
                    let call = typed.call_async(&mut *store, (convert::to_wit_ref(e),));
                    let (outcome,) = within(budget, call)
                        .await
                        .map_err(|e| trap(store.data().explain(e)))?;
                    out.push(self.outcome(outcome, e));
                }
                Ok(out)
            }
        }
    }

    fn outcome(&self, o: Outcome, input: &StoredEvent) -> TransformOutcome {
        let events = match o {
            Outcome::Keep => Ok(vec![input.clone()]),
            Outcome::Update(documents) => {
                convert::with_documents(input, documents).map(|e| vec![e])
            }
            Outcome::Skip => Ok(vec![]),
            Outcome::Many(list) if list.len() > self.runtime.config().max_fan_out => {
                return TransformOutcome::Failed(
                    format!(
                        "plugin {} made {} events of one record, over plugins.maxFanOut ({})",
                        self.name,
                        list.len(),
                        self.runtime.config().max_fan_out
                    )
                    .into(),
                );
            }
            Outcome::Many(list) => list
                .into_iter()
                .map(|e| convert::from_wit(e, input))
                .collect::<Result<Vec<_>, _>>(),
            Outcome::Failed(err) => {
                return TransformOutcome::Failed(TransformFailure {
                    code: Some(error_info(&err).code.clone()),
                    reason: self.secrets.mask(&error_text(&err)),
                });
            }
        };
        // What a plugin makes is held to the rules intake holds senders to.
        let events = events.and_then(|list| {
            for (i, e) in list.iter().enumerate() {
                e.event.check().map_err(|problems| {
                    format!("an invalid event (#{i}): {}", problems.join("; "))
                })?;
            }
            Ok(list)
        });
        match events {
            Ok(list) => TransformOutcome::Emit(list),
            Err(e) => TransformOutcome::Failed(
                self.secrets
                    .mask(&format!("plugin {} returned {e}", self.name))
                    .into(),
            ),
        }
    }
}
