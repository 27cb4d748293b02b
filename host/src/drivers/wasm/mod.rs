//! A custom destination written as a Wasm component (`driver: wasm`): the same pipeline as the
//! built-in drivers (batching, order, retries, dead letters) around the component's `replicate`.

mod config;
mod driver;

pub use config::WasmConfig;
pub use driver::WasmDriver;

use std::sync::Arc;

use super::{BuildContext, Driver, DriverSpec};
use crate::options::Section;
use crate::plugins::PluginError;

/// The wasm driver's entry in the registry.
pub struct Wasm;

#[async_trait::async_trait]
impl DriverSpec for Wasm {
    type Config = WasmConfig;

    fn parse(options: &mut Section) -> Option<WasmConfig> {
        config::parse(options)
    }

    fn needs_plugins(_config: &WasmConfig) -> bool {
        true
    }

    fn describe(config: &WasmConfig) -> String {
        config.component.display().to_string()
    }

    async fn build(
        config: &WasmConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Driver>, PluginError> {
        let plugins = context
            .plugins
            .ok_or_else(|| PluginError::NoRuntime(config.component.clone()))?;
        let plugin = plugins
            .driver(
                context.replicator,
                &config.component,
                &config.config,
                config.allow_hosts.clone(),
            )
            .await?;
        Ok(Arc::new(WasmDriver::new(plugin, context.policy.timeout)))
    }
}
