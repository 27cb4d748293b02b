//! s3db destination: writes records into another s3db database (S3, any S3-compatible server,
//! or a directory) so that s3db.js reads them exactly as if it had written them.

mod config;
mod driver;

pub use config::S3dbConfig;
pub use driver::S3dbDriver;

use std::sync::Arc;

use super::{BuildContext, Driver, DriverSpec};
use crate::options::Section;
use crate::plugins::PluginError;

/// The s3db driver's entry in the registry.
pub struct S3db;

#[async_trait::async_trait]
impl DriverSpec for S3db {
    type Config = S3dbConfig;

    fn parse(options: &mut Section) -> Option<S3dbConfig> {
        config::parse(options)
    }

    fn describe(config: &S3dbConfig) -> String {
        config.connection.shown.clone()
    }

    async fn build(
        config: &S3dbConfig,
        _context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Driver>, PluginError> {
        Ok(Arc::new(S3dbDriver::new(config.clone())))
    }
}
