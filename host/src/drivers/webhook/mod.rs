//! Webhook destination: one HTTP request per event, or one per batch (`batch: true`).

pub mod config;
mod signing;
mod sink;

pub use config::WebhookConfig;
pub use sink::WebhookSink;
