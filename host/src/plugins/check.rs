//! `replicator plugin check`: which world a component implements, what it imports, and
//! whether the sandbox grants all of it.

use std::path::Path;

use super::{PluginError, Runtime, World};

/// What the sandbox does with one import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    Granted,
    /// Linked, but every use is denied (sockets): why.
    Denied(String),
    /// Not granted: the component cannot be loaded; why.
    Refused(String),
}

#[derive(Debug)]
pub struct Import {
    pub name: String,
    pub grant: Grant,
}

#[derive(Debug)]
pub struct Report {
    pub world: Option<World>,
    pub imports: Vec<Import>,
    pub exports: Vec<String>,
    /// The linker refused the component for a reason that names none of its imports.
    pub link_error: Option<String>,
}

impl Report {
    /// Whether the service would load it.
    pub fn loads(&self) -> bool {
        self.world.is_some()
            && self.link_error.is_none()
            && !self
                .imports
                .iter()
                .any(|i| matches!(i.grant, Grant::Refused(_)))
    }
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
    let component = runtime.load(path)?.component;
    let ty = component.component_type();
    let import_names: Vec<String> = ty
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
    let grant = |i: &str| {
        if i.starts_with("wasi:sockets/") {
            Grant::Denied(
                "linked, but every connection is denied (drivers reach the network through wasi:http only)".into(),
            )
        } else if ALWAYS.iter().any(|p| i.starts_with(p))
            || (driver && DRIVERS_ONLY.iter().any(|p| i.starts_with(p)))
        {
            Grant::Granted
        } else if DRIVERS_ONLY.iter().any(|p| i.starts_with(p)) {
            Grant::Refused("only drivers get this; a transform has no network and no state".into())
        } else {
            Grant::Refused("not provided by the host".into())
        }
    };
    let mut imports: Vec<Import> = import_names
        .into_iter()
        .map(|name| Import {
            grant: grant(&name),
            name,
        })
        .collect();
    let mut link_error = None;
    // The names say which world; linking as the service would says whether it will load
    // (interface versions, function types).
    if !imports.iter().any(|i| matches!(i.grant, Grant::Refused(_))) {
        let linked = match world {
            Some(World::SinkDriver) => super::driver::prepare(runtime, &component, path).map(drop),
            Some(_) => super::transform::prepare(runtime, &component, path).map(drop),
            None => Ok(()),
        };
        if let Err(PluginError::Refused(_, reason)) = linked {
            // For the report only: the linker's reason names the import it could not satisfy.
            let mut named = false;
            for i in imports
                .iter_mut()
                .filter(|i| reason.contains(i.name.as_str()))
            {
                i.grant = Grant::Refused(format!("the host cannot link it: {reason}"));
                named = true;
            }
            if !named {
                link_error = Some(format!("the host cannot link it: {reason}"));
            }
        } else {
            linked?;
        }
    }
    Ok(Report {
        world,
        imports,
        exports,
        link_error,
    })
}
