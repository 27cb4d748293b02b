//! BigQuery destination: a changelog (`append-only`, `immutable`) with a `<table>_current` view
//! that folds duplicates, or an exact current-state table (`mutable`) merged from a staging
//! table under a `_sequence` guard, so no replay ever shows; never DML on streamed rows.

mod client;
mod config;
mod driver;
mod schema;

pub use config::BigQueryConfig;
pub use driver::BigQueryDriver;

use std::sync::Arc;

use super::{BuildContext, Driver, DriverSpec};
use crate::delivery::Route;
use crate::options::{Problems, Section};
use crate::plugins::PluginError;

/// The bigquery driver's entry in the registry.
pub struct BigQuery;

#[async_trait::async_trait]
impl DriverSpec for BigQuery {
    type Config = BigQueryConfig;
    const DESTINATION_KEYS: &'static [&'static str] = &["table", "resource"];
    const ROUTE_OPTIONS: &'static [&'static str] = &["mutability", "tableOptions"];

    fn parse(options: &mut Section) -> Option<BigQueryConfig> {
        config::parse(options)
    }

    fn check_routes(config: &BigQueryConfig, routes: &[Route], path: &str, problems: &Problems) {
        config.check_routes(routes, path, problems);
    }

    fn describe(config: &BigQueryConfig) -> String {
        let at = config
            .endpoint
            .as_deref()
            .map(crate::redact::url)
            .unwrap_or_else(|| "bigquery.googleapis.com".into());
        format!("{}.{} on {at}", config.project_id, config.dataset_id)
    }

    async fn build(
        config: &BigQueryConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Driver>, PluginError> {
        let driver = BigQueryDriver::new(config.clone(), context.routes, context.report.clone());
        driver.start_merger(context.policy);
        Ok(Arc::new(driver))
    }
}
