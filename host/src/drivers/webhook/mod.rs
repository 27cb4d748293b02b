//! Webhook destination: one HTTP request per event, or one per batch (`batch: true`).

mod config;
mod driver;
mod signing;

pub use config::WebhookConfig;
pub use driver::WebhookDriver;

use std::sync::Arc;

use super::{BuildContext, Driver, DriverSpec};
use crate::delivery::DeliveryPolicy;
use crate::options::Section;
use crate::plugins::PluginError;

/// The webhook driver's entry in the registry.
pub struct Webhook;

#[async_trait::async_trait]
impl DriverSpec for Webhook {
    type Config = WebhookConfig;

    fn parse(options: &mut Section) -> Option<WebhookConfig> {
        config::parse(options)
    }

    fn adjust_delivery(config: &WebhookConfig, policy: &mut DeliveryPolicy) {
        config.adjust_delivery(policy);
    }

    fn describe(config: &WebhookConfig) -> String {
        crate::redact::url(config.url.as_str())
    }

    async fn build(
        config: &WebhookConfig,
        _context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Driver>, PluginError> {
        Ok(Arc::new(WebhookDriver::new(config.clone())))
    }
}
