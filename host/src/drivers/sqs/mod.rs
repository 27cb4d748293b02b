//! SQS destination: FIFO queues get one message group per record key (keys in parallel, each
//! in order) and a deduplication id that includes the sequence (every change delivered, a
//! redelivery dropped); SendMessageBatch sized by bytes; bodies over the limit through S3.

mod config;
mod driver;
mod message;

pub use config::SqsConfig;
pub use driver::SqsDriver;

use std::sync::Arc;

use super::{BuildContext, Driver, DriverSpec};
use crate::delivery::Route;
use crate::options::{Problems, Section};
use crate::plugins::PluginError;

/// The sqs driver's entry in the registry.
pub struct Sqs;

#[async_trait::async_trait]
impl DriverSpec for Sqs {
    type Config = SqsConfig;
    const DESTINATION_KEYS: &'static [&'static str] = &["queueUrl", "queue", "queueName"];

    fn parse(options: &mut Section) -> Option<SqsConfig> {
        config::parse(options)
    }

    fn check_routes(config: &SqsConfig, routes: &[Route], path: &str, problems: &Problems) {
        config.check_routes(routes, path, problems);
    }

    fn describe(config: &SqsConfig) -> String {
        let mut queues: Vec<String> = config
            .queue
            .iter()
            .chain(config.queues.values())
            .chain(config.default_queue.iter())
            .map(ToString::to_string)
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        if queues.is_empty() {
            queues.push("queues named per resource".into());
        }
        format!("{} ({})", queues.join(", "), config.access.region)
    }

    async fn build(
        config: &SqsConfig,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Driver>, PluginError> {
        Ok(Arc::new(
            SqsDriver::new(config.clone(), context.routes).await,
        ))
    }
}
