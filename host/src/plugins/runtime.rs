//! The Wasm engine: one per process, with epoch interruption (a ticker thread), the pooling
//! allocator, a memory cap per instance, and a cache of precompiled components keyed by the
//! component's hash and the engine's compatibility hash (an artifact loads only if it matches
//! the digest recorded with it; the cache directory is trusted like the binary).

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store,
    StoreLimits, StoreLimitsBuilder, UpdateDeadline,
};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::PluginError;
use super::PluginsConfig;
use super::bindings::Level;
use super::egress::{DeniedRequests, Egress};
use super::stderr::StderrTail;
use crate::redact::Secrets;

/// How often the epoch advances; deadlines are counted in these ticks.
const TICK: Duration = Duration::from_millis(10);

/// A component ready to link, and the SHA-256 of the file it came from.
pub struct Loaded {
    pub component: Component,
    pub digest: String,
}

/// The lowercase hex SHA-256 of a component file: its identity in the cache and the status.
pub fn digest(wasm: &[u8]) -> String {
    format!("{:x}", Sha256::digest(wasm))
}

/// What [`Runtime::compile`] made: the component, where its artifact is, and whether storing
/// the artifact (when it was compiled) worked.
struct Compiled {
    loaded: Loaded,
    artifact: PathBuf,
    stored: Result<(), String>,
}

/// A driver's key/value state (`state` in the WIT), kept across its instances and versions.
pub type DriverState = Arc<Mutex<HashMap<String, Vec<u8>>>>;

/// What one instance's store holds.
pub struct Host {
    pub plugin: Arc<str>,
    /// The secrets of the plugin's config, masked in its log lines.
    secrets: Secrets,
    /// The end of the guest's stderr, to explain a trap.
    stderr: StderrTail,
    wasi: WasiCtx,
    http: WasiHttpCtx,
    pub egress: Egress,
    table: ResourceTable,
    limits: Limits,
    /// The running call must end by then.
    pub deadline: Instant,
    /// The driver's key/value state (drivers only).
    pub state: DriverState,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.egress,
        }
    }
}

impl super::bindings::batch::replicator::plugin::log::Host for Host {
    fn log(&mut self, level: Level, message: String) -> wasmtime::Result<()> {
        let plugin = &*self.plugin;
        // Guests cannot write their config's secrets to the log, nor flood it with huge lines.
        let message = self.secrets.mask(&message);
        let message: String = message.chars().take(2000).collect();
        match level {
            Level::Trace => tracing::trace!(plugin, "{message}"),
            Level::Debug => tracing::debug!(plugin, "{message}"),
            Level::Info => tracing::info!(plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin, "{message}"),
            Level::Error => tracing::error!(plugin, "{message}"),
        }
        Ok(())
    }
}

/// Size limit of a driver's state.
const STATE_LIMIT: usize = 1 << 20;

impl super::bindings::driver::replicator::plugin::state::Host for Host {
    fn get(&mut self, key: String) -> wasmtime::Result<Option<Vec<u8>>> {
        Ok(self.state.lock().expect("state lock").get(&key).cloned())
    }

    fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        let mut state = self.state.lock().expect("state lock");
        let used: usize = state
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(k, v)| k.len() + v.len())
            .sum();
        if used + key.len() + value.len() > STATE_LIMIT {
            return Ok(Err(format!("state is limited to {STATE_LIMIT} bytes")));
        }
        state.insert(key, value);
        Ok(Ok(()))
    }

    fn delete(&mut self, key: String) -> wasmtime::Result<()> {
        self.state.lock().expect("state lock").remove(&key);
        Ok(())
    }
}

/// The engine and what every plugin shares.
pub struct Runtime {
    pub engine: Engine,
    config: PluginsConfig,
    /// Outbound requests refused by an allow-list, per plugin.
    pub denied: DeniedRequests,
}

impl Runtime {
    pub fn new(config: PluginsConfig, denied: DeniedRequests) -> Result<Arc<Runtime>, PluginError> {
        let mut cfg = Config::new();
        cfg.wasm_component_model(true)
            .epoch_interruption(true)
            // Only needed for WASIp3 async exports; it makes every call several times slower.
            .concurrency_support(false)
            .cranelift_opt_level(wasmtime::OptLevel::Speed);
        if config.pooling {
            let mut pool = PoolingAllocationConfig::default();
            let n = config.max_instances;
            pool.total_component_instances(n)
                .total_core_instances(n * 4)
                .total_memories(n * 2)
                .total_tables(n * 8)
                .total_stacks(n)
                .max_memory_size(config.memory_limit)
                .max_component_instance_size(16 << 20)
                .max_core_instance_size(16 << 20)
                .max_tables_per_component(64)
                .max_memories_per_component(8)
                .max_core_instances_per_component(64)
                .table_elements(200_000);
            cfg.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        }
        let engine = Engine::new(&cfg).map_err(PluginError::Engine)?;
        let ticker = engine.weak();
        std::thread::Builder::new()
            .name("wasm-epoch".into())
            .spawn(move || {
                while let Some(engine) = ticker.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })
            .map_err(PluginError::EpochThread)?;
        Ok(Arc::new(Runtime {
            engine,
            config,
            denied,
        }))
    }

    pub fn config(&self) -> &PluginsConfig {
        &self.config
    }

    /// Loads a component, from the cache of precompiled artifacts when this host made one.
    pub fn load(&self, path: &Path) -> Result<Loaded, PluginError> {
        let compiled = self.compile(path)?;
        if let Err(e) = compiled.stored {
            tracing::warn!(path = %compiled.artifact.display(), error = %e, "cannot cache the compiled plugin; it will be compiled again next time");
        }
        Ok(compiled.loaded)
    }

    /// [`Runtime::load`] on a blocking thread: compiling a large component takes seconds of
    /// CPU, which must not hold up the tasks of a running service (a reload happens there).
    pub async fn load_off_thread(self: &Arc<Self>, path: &Path) -> Result<Loaded, PluginError> {
        let (runtime, owned) = (self.clone(), path.to_path_buf());
        tokio::task::spawn_blocking(move || runtime.load(&owned))
            .await
            .map_err(|e| PluginError::Compiling(path.to_path_buf(), e.to_string()))?
    }

    /// Compiles into the cache and returns where the artifact is; failing to store it is an error.
    pub fn precompile(&self, path: &Path) -> Result<PathBuf, PluginError> {
        let compiled = self.compile(path)?;
        compiled
            .stored
            .map_err(|e| PluginError::Cache(compiled.artifact.clone(), e))?;
        Ok(compiled.artifact)
    }

    /// The component from the cache, or compiled and stored there.
    fn compile(&self, path: &Path) -> Result<Compiled, PluginError> {
        let wasm = std::fs::read(path).map_err(|e| PluginError::Read(path.to_path_buf(), e))?;
        let digest = digest(&wasm);
        let artifact = self.artifact_path(&digest);
        let loaded = |component| Loaded {
            component,
            digest: digest.clone(),
        };
        if let Some(component) = self.load_cached(&artifact) {
            return Ok(Compiled {
                loaded: loaded(component),
                artifact,
                stored: Ok(()),
            });
        }
        let component = Component::new(&self.engine, &wasm)
            .map_err(|e| PluginError::Invalid(path.to_path_buf(), e))?;
        let stored = self.store_cached(&artifact, &component);
        Ok(Compiled {
            loaded: loaded(component),
            artifact,
            stored,
        })
    }

    fn artifact_path(&self, digest: &str) -> PathBuf {
        let mut compat = std::collections::hash_map::DefaultHasher::new();
        self.engine
            .precompile_compatibility_hash()
            .hash(&mut compat);
        let name = format!("{digest}-{:016x}.cwasm", compat.finish());
        self.config.cache_dir.join(name)
    }

    fn load_cached(&self, path: &Path) -> Option<Component> {
        let bytes = std::fs::read(path).ok()?;
        let expected = std::fs::read_to_string(path.with_extension("sha256")).ok()?;
        // Deserialising runs code: only an artifact whose digest this host recorded is loaded.
        if format!("{:x}", Sha256::digest(&bytes)) != expected.trim() {
            tracing::warn!(path = %path.display(), "cached plugin artifact does not match its digest; recompiling");
            return None;
        }
        // SAFETY: the cache directory is trusted like the binary (docs/plugins.md); artifacts
        // there are written by the host for this engine configuration (the file name carries
        // the compatibility hash), and the digest check above rules out a torn or damaged file.
        unsafe { Component::deserialize(&self.engine, &bytes) }.ok()
    }

    fn store_cached(&self, path: &Path, component: &Component) -> Result<(), String> {
        let bytes = component.serialize().map_err(|e| e.to_string())?;
        std::fs::create_dir_all(&self.config.cache_dir).map_err(|e| e.to_string())?;
        let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
        std::fs::write(&tmp, &bytes).map_err(|e| e.to_string())?;
        std::fs::write(
            path.with_extension("sha256"),
            format!("{:x}", Sha256::digest(&bytes)),
        )
        .map_err(|e| e.to_string())?;
        std::fs::rename(&tmp, path).map_err(|e| e.to_string())
    }

    /// A linker with deny-by-default WASI (no files, no sockets, no environment) and the log
    /// and digest imports; drivers also get `wasi:http` (through the allow-list) and `state`.
    pub fn linker(&self, driver: bool) -> Result<Linker<Host>, PluginError> {
        let mut linker = Linker::new(&self.engine);
        let err = PluginError::Engine;
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(err)?;
        super::bindings::batch::replicator::plugin::log::add_to_linker::<
            Host,
            wasmtime::component::HasSelf<Host>,
        >(&mut linker, |h| h)
        .map_err(err)?;
        super::bindings::batch::replicator::plugin::digest::add_to_linker::<
            Host,
            wasmtime::component::HasSelf<Host>,
        >(&mut linker, |h| h)
        .map_err(err)?;
        if driver {
            wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(err)?;
            super::bindings::driver::replicator::plugin::state::add_to_linker::<
                Host,
                wasmtime::component::HasSelf<Host>,
            >(&mut linker, |h| h)
            .map_err(err)?;
        }
        Ok(linker)
    }

    /// A fresh store with the memory cap and the per-call deadline check.
    pub fn store(
        &self,
        plugin: Arc<str>,
        secrets: Secrets,
        egress: Egress,
        state: DriverState,
    ) -> Store<Host> {
        let stderr = StderrTail::default();
        let wasi = WasiCtxBuilder::new()
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        let limits = Limits {
            counts: StoreLimitsBuilder::new()
                .instances(64)
                .tables(64)
                .memories(8)
                .trap_on_grow_failure(true)
                .build(),
            memory_limit: self.config.memory_limit,
            memory_used: 0,
            memory_peak: 0,
        };
        let host = Host {
            plugin,
            secrets,
            stderr,
            wasi,
            http: WasiHttpCtx::new(),
            egress,
            table: ResourceTable::new(),
            limits,
            deadline: Instant::now() + self.config.timeout,
            state,
        };
        let mut store = Store::new(&self.engine, host);
        store.limiter(|h| &mut h.limits);
        store.set_epoch_deadline(1);
        // Yield to the executor every tick; past the call's deadline, interrupt (a trap).
        store.epoch_deadline_callback(|ctx| {
            if Instant::now() > ctx.data().deadline {
                Ok(UpdateDeadline::Interrupt)
            } else {
                Ok(UpdateDeadline::Yield(1))
            }
        });
        store
    }

    /// Starts the clock of one call.
    pub fn arm(&self, store: &mut Store<Host>, budget: Duration) {
        store.data_mut().deadline = Instant::now() + budget;
        store.data().stderr.clear();
        store.set_epoch_deadline(1);
    }
}

/// Runs one call into a plugin, its clock started with [`Runtime::arm`], under a deadline of
/// `budget`. Epoch interruption stops a guest that computes; the timer here stops one that
/// waits in a host call (a clock's pollable, an HTTP response), where no epoch check runs.
/// After an error the instance's store must be dropped.
pub async fn within<T>(
    budget: Duration,
    call: impl std::future::Future<Output = wasmtime::Result<T>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(budget, call).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => {
                CallError::Deadline(format!("deadline of {budget:?} exceeded"))
            }
            _ => CallError::Trap(trap_reason(&e)),
        }),
        Err(_) => Err(CallError::Deadline(format!(
            "deadline of {budget:?} exceeded while waiting in a host call"
        ))),
    }
}

/// An instance's limits: `memory_limit` caps its linear memory summed over all its memories
/// (a component may have several), on top of wasmtime's counts of instances, tables, memories.
struct Limits {
    counts: StoreLimits,
    memory_limit: usize,
    memory_used: usize,
    /// The most `memory_used` has been.
    memory_peak: usize,
}

impl ResourceLimiter for Limits {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let used = self.memory_used.saturating_sub(current) + desired;
        if used > self.memory_limit {
            return Err(MemoryLimitExceeded(format!(
                "the instance asked for {used} bytes of linear memory, {} allowed",
                self.memory_limit
            ))
            .into());
        }
        let allowed = self.counts.memory_growing(current, desired, maximum)?;
        if allowed {
            self.memory_used = used;
            self.memory_peak = self.memory_peak.max(used);
        }
        Ok(allowed)
    }

    /// A growth the engine could not make (the pooling allocator's cap) traps, as the limit's
    /// own refusal does, with the same typed cause.
    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.counts
            .memory_grow_failed(error)
            .map_err(|e| MemoryLimitExceeded(format!("{e:#}")).into())
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.counts.table_growing(current, desired, maximum)
    }

    fn table_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.counts.table_grow_failed(error)
    }

    fn instances(&self) -> usize {
        self.counts.instances()
    }

    fn tables(&self) -> usize {
        self.counts.tables()
    }

    fn memories(&self) -> usize {
        self.counts.memories()
    }
}

impl Host {
    /// The most linear memory the instance has held (a wasm memory never shrinks, so also
    /// what it holds now).
    pub fn memory_peak(&self) -> usize {
        self.limits.memory_peak
    }

    /// A trap with what the guest wrote to stderr during the call (a panic's message).
    pub fn explain(&self, e: CallError) -> CallError {
        match (e, self.stderr.text()) {
            (CallError::Trap(m), Some(said)) => {
                CallError::Trap(format!("{m} (guest stderr: {said})"))
            }
            (e, _) => e,
        }
    }
}

/// Why a call into a plugin did not return; either way its instance is gone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    /// The guest trapped: a panic, its memory limit, a bad instruction.
    #[error("{0}")]
    Trap(String),
    /// The call ran past its deadline, computing or waiting.
    #[error("{0}")]
    Deadline(String),
}

/// A memory growth the sandbox refused.
#[derive(Debug, thiserror::Error)]
#[error("memory limit exceeded: {0}")]
struct MemoryLimitExceeded(String);

/// A trap in words: its cause without the (symbol-less) wasm backtrace; a memory that could
/// not grow says so.
fn trap_reason(e: &wasmtime::Error) -> String {
    if let Some(limit) = e
        .chain()
        .find_map(|c| c.downcast_ref::<MemoryLimitExceeded>())
    {
        return limit.to_string();
    }
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("wasm trap: {trap}"),
        None => e.root_cause().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_memory_limit_counts_every_memory_of_an_instance() {
        const MIB: usize = 1 << 20;
        let mut limits = Limits {
            counts: StoreLimitsBuilder::new().build(),
            memory_limit: 32 * MIB,
            memory_used: 0,
            memory_peak: 0,
        };
        assert!(limits.memory_growing(0, 20 * MIB, None).unwrap());
        assert!(limits.memory_growing(20 * MIB, 24 * MIB, None).unwrap());
        // A second memory of 10 MiB would bring the instance to 34 MiB.
        let e = limits.memory_growing(0, 10 * MIB, None).unwrap_err();
        assert!(e.to_string().contains("memory limit exceeded"), "{e}");
        assert!(limits.memory_growing(0, 8 * MIB, None).unwrap());
        assert_eq!(limits.memory_used, 32 * MIB);
        assert_eq!(limits.memory_peak, 32 * MIB);
    }
}
