//! What a loaded component is: the WIT world it implements, and which version of its file.

use std::time::SystemTime;

/// The worlds of `replicator:plugin@0.1.0` a component can implement.
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

/// The version of a component a plugin runs.
#[derive(Debug, Clone)]
pub struct Version {
    /// SHA-256 of the component file.
    pub digest: String,
    pub world: World,
    pub loaded_at: SystemTime,
}
