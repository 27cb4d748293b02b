//! The `plugins` section: where compiled components are cached and the sandbox's limits.

use std::path::PathBuf;
use std::time::Duration;

use crate::options::Section;

/// The Wasm plugin runtime: where compiled components are cached and the sandbox's limits.
#[derive(Debug, Clone)]
pub struct PluginsConfig {
    pub cache_dir: PathBuf,
    /// Deadline of one call into a plugin.
    pub timeout: Duration,
    /// Linear memory one instance may grow to.
    pub memory_limit: usize,
    /// Instances alive at once (the pooling allocator reserves room for them).
    pub max_instances: u32,
    pub pooling: bool,
    /// Events one input record may become (a transform's `many`); more fails the record.
    pub max_fan_out: usize,
    /// How often plugin files are looked at for a new version (none: only on
    /// `POST /v1/plugins/reload`).
    pub watch_interval: Option<Duration>,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            cache_dir: PathBuf::from("./replicator-data/plugin-cache"),
            timeout: Duration::from_secs(2),
            memory_limit: 128 << 20,
            max_instances: 64,
            pooling: true,
            max_fan_out: 100,
            watch_interval: Some(Duration::from_secs(1)),
        }
    }
}

impl PluginsConfig {
    /// Reads the `plugins` section over these values.
    pub fn read(&mut self, s: &mut Section) {
        if let Some(p) = s.string("cacheDir") {
            self.cache_dir = p.into();
        }
        if let Some(d) = s.duration("timeout") {
            self.timeout = d;
        }
        if let Some(n) = s.bytes("memoryLimit") {
            self.memory_limit = n as usize;
        }
        if let Some(n) = s.u64_in("maxInstances", 1, 10_000) {
            self.max_instances = n as u32;
        }
        if let Some(b) = s.bool("pooling") {
            self.pooling = b;
        }
        if let Some(n) = s.u64_in("maxFanOut", 1, 100_000) {
            self.max_fan_out = n as usize;
        }
        // "0s" turns the watch off.
        if let Some(d) = s.duration("watchInterval") {
            self.watch_interval = (!d.is_zero()).then_some(d);
        }
    }
}
