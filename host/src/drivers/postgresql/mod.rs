//! PostgreSQL destination: one table per destination name, batched upserts guarded by
//! sequence so an older event never overwrites a newer one, and schema that follows the data.

mod config;
mod driver;
mod schema;

pub use config::PostgresConfig;
pub use driver::PostgresDriver;

use crate::redact::ExposeSecret;
use std::sync::Arc;

use super::{BuildContext, Driver, DriverSpec};
use crate::options::Section;
use crate::plugins::PluginError;

/// The postgresql driver's entry in the registry.
pub struct Postgresql;

#[async_trait::async_trait]
impl DriverSpec for Postgresql {
    type Config = PostgresConfig;
    const DESTINATION_KEYS: &'static [&'static str] = &["table", "resource"];

    fn parse(options: &mut Section) -> Option<PostgresConfig> {
        config::parse(options)
    }

    fn describe(config: &PostgresConfig) -> String {
        crate::redact::url(config.connection_string.expose_secret())
    }

    async fn build(
        config: &PostgresConfig,
        _context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Driver>, PluginError> {
        Ok(Arc::new(PostgresDriver::new(config.clone())))
    }
}
