//! Host bindings of `wit/plugin.wit`, one module per world; the shared interfaces (`types`,
//! `log`, `digest`, `transform-types`) are generated once and reused by the others.

pub mod batch {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "batch-transformer",
        imports: { default: trappable },
        exports: { default: async },
    });
}

pub mod record {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "record-transformer",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "replicator:plugin/types": super::batch::replicator::plugin::types,
            "replicator:plugin/log": super::batch::replicator::plugin::log,
            "replicator:plugin/digest": super::batch::replicator::plugin::digest,
            "replicator:plugin/transform-types": super::batch::replicator::plugin::transform_types,
        },
    });
}

pub mod driver {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "sink-driver",
        imports: { default: trappable },
        exports: { default: async },
        with: {
            "replicator:plugin/types": super::batch::replicator::plugin::types,
            "replicator:plugin/log": super::batch::replicator::plugin::log,
            "replicator:plugin/digest": super::batch::replicator::plugin::digest,
        },
    });
}

pub use batch::replicator::plugin::digest::Algorithm;
pub use batch::replicator::plugin::log::Level;
pub use batch::replicator::plugin::transform_types::{Documents, Outcome, TransformError};
pub use batch::replicator::plugin::types::{Action, ErrorInfo, Event};

/// The WIT `event` as the host lowers it into a transform: the envelope's strings are borrowed
/// from the host's event instead of cloned, since lowering copies them into the guest anyway.
#[derive(wasmtime::component::ComponentType, wasmtime::component::Lower)]
#[component(record)]
pub struct EventRef<'a> {
    #[component(name = "resource")]
    pub resource: &'a str,
    pub action: Action,
    pub id: &'a str,
    pub data: Option<Vec<u8>>,
    pub before: Option<Vec<u8>>,
    pub timestamp: &'a str,
    pub source: Option<&'a str>,
    pub sequence: u64,
    pub metadata: Option<Vec<u8>>,
}
