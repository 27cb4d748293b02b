//! `replicator plugin check`: which world a component implements, what it imports, and
//! whether the sandbox grants all of it.

use std::path::Path;

use super::{PluginError, Runtime};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum World {
    RecordTransformer,
    BatchTransformer,
    SinkDriver,
}

impl World {
    pub fn name(self) -> &'static str {
        match self {
            World::RecordTransformer => "record-transformer",
            World::BatchTransformer => "batch-transformer",
            World::SinkDriver => "sink-driver",
        }
    }
}

#[derive(Debug)]
pub struct Report {
    pub world: Option<World>,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
    /// Imports the sandbox will not grant, with the reason: the component cannot be loaded.
    pub refused: Vec<String>,
    /// Imports that are linked but deny everything (sockets).
    pub denied: Vec<String>,
}

/// Interfaces every plugin may import. WASI is linked deny-by-default: no preopened
/// directories, no sockets, no environment; toolchains import these even when unused.
const ALWAYS: [&str; 9] = [
    "replicator:plugin/log",
    "replicator:plugin/digest",
    "replicator:plugin/types",
    "replicator:plugin/transform-types",
    "wasi:cli/",
    "wasi:io/",
    "wasi:clocks/",
    "wasi:random/",
    "wasi:filesystem/",
];
const DRIVERS_ONLY: [&str; 2] = ["replicator:plugin/state", "wasi:http/"];

pub fn inspect(runtime: &Runtime, path: &Path) -> Result<Report, PluginError> {
    let component = runtime.load(path)?;
    let ty = component.component_type();
    let imports: Vec<String> = ty
        .imports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let exports: Vec<String> = ty
        .exports(&runtime.engine)
        .map(|(name, _)| name.to_string())
        .collect();
    let has = |iface: &str| {
        exports
            .iter()
            .any(|e| e.starts_with(&format!("replicator:plugin/{iface}@0.1")))
    };
    let world = if has("driver") {
        Some(World::SinkDriver)
    } else if has("batch-transform") {
        Some(World::BatchTransformer)
    } else if has("record-transform") {
        Some(World::RecordTransformer)
    } else {
        None
    };
    let driver = world == Some(World::SinkDriver);
    let denied = imports
        .iter()
        .filter(|i| i.starts_with("wasi:sockets/"))
        .map(|i| format!("{i}: linked, but every connection is denied (drivers reach the network through wasi:http only)"))
        .collect();
    let mut refused: Vec<String> = imports
        .iter()
        .filter_map(|i| {
            if ALWAYS.iter().any(|p| i.starts_with(p))
                || i.starts_with("wasi:sockets/")
                || (driver && DRIVERS_ONLY.iter().any(|p| i.starts_with(p)))
            {
                None
            } else if DRIVERS_ONLY.iter().any(|p| i.starts_with(p)) {
                Some(format!(
                    "{i}: only drivers get this; a transform has no network and no state"
                ))
            } else {
                Some(format!("{i}: not provided by the host"))
            }
        })
        .collect();
    // The names say which world; linking as the service would says whether it will load
    // (interface versions, function types).
    if refused.is_empty() {
        let linked = match world {
            Some(World::SinkDriver) => super::driver::prepare(runtime, &component, path).map(drop),
            Some(_) => super::transform::prepare(runtime, &component, path).map(drop),
            None => Ok(()),
        };
        if let Err(PluginError::Refused(_, reason)) = linked {
            let named: Vec<&String> = imports
                .iter()
                .filter(|i| reason.contains(i.as_str()))
                .collect();
            if named.is_empty() {
                refused.push(format!("the host cannot link it: {reason}"));
            }
            for i in named {
                refused.push(format!("{i}: the host cannot link it: {reason}"));
            }
        } else {
            linked?;
        }
    }
    Ok(Report {
        world,
        imports,
        exports,
        refused,
        denied,
    })
}
