//! Wasm plugins: transforms and custom drivers as sandboxed WebAssembly components behind
//! `wit/plugin.wit`. One engine per process; instances are kept and reused; every call has a
//! deadline and every instance a memory cap; a trap ends the instance, never the host.

mod bindings;
pub mod check;
mod config;
mod convert;
mod digest;
pub mod driver;
pub mod egress;
pub mod live;
pub mod runtime;
mod stderr;
pub mod transform;
mod version;

use std::path::PathBuf;

pub use config::PluginsConfig;
pub use convert::to_wit;
pub use runtime::Runtime;

/// The driver interface's types, for the wasm driver.
pub mod driver_types {
    pub use super::bindings::ErrorInfo;
    pub use super::bindings::driver::exports::replicator::plugin::driver::{
        DriverError, HealthStatus,
    };
}
pub use live::{Live, Plugins};
pub use transform::{Transform, TransformFailure, TransformOutcome};
pub use version::{Version, World};

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error("cannot read plugin {path}: {source}", path = .0.display(), source = .1)]
    Read(PathBuf, #[source] std::io::Error),
    #[error("{path} is not a valid WebAssembly component: {reason:#}", path = .0.display(), reason = .1)]
    Invalid(PathBuf, #[source] wasmtime::Error),
    #[error("{path} cannot run here: {reason}", path = .0.display(), reason = .1)]
    Refused(PathBuf, String),
    #[error("plugin {0} refused its config: {1}")]
    Config(String, String),
    #[error("plugin {0} trapped: {1}")]
    Trap(String, String),
    #[error("cannot write the compiled plugin to {path}: {reason}", path = .0.display(), reason = .1)]
    Cache(PathBuf, String),
    #[error("compiling {path} stopped: {reason}", path = .0.display(), reason = .1)]
    Compiling(PathBuf, String),
    #[error("Wasm engine: {0:#}")]
    Engine(#[source] wasmtime::Error),
    #[error("cannot start the Wasm engine's epoch thread: {0}")]
    EpochThread(#[source] std::io::Error),
    #[error("{path}: no Wasm runtime was started for this replicator", path = .0.display())]
    NoRuntime(PathBuf),
}
