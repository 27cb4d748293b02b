//! Destinations. Each driver lives in its own folder with the same shape
//! (`config.rs`: options; `sink.rs`: how a batch is written) and implements [`Driver`].
//!
//! Drivers only write; batching, ordering, retries and dead-lettering live in the pipeline.

pub mod payload;
pub mod postgresql;
pub mod s3db;
pub mod wasm;
pub mod webhook;

use std::sync::Arc;
use std::time::Duration;

use crate::config::{DriverConfig, Route};
use crate::event::StoredEvent;

/// How the pipeline should treat a failed delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The destination cannot be reached at all (connection refused, DNS, pool down).
    /// Retried for as long as it lasts without spending the record's attempts.
    Unavailable,
    /// Worth another attempt (timeouts, 429, 5xx, deadlocks); spends one attempt.
    Transient,
    /// Will fail again whatever we do (4xx, a value that does not fit); dead-lettered at once.
    Permanent,
}

/// A failed delivery, with what the destination said.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DeliveryError {
    pub kind: ErrorKind,
    pub message: String,
    /// The destination asked us to wait this long (HTTP `Retry-After`).
    pub retry_after: Option<Duration>,
}

impl DeliveryError {
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }
    pub fn transient(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Transient, message)
    }
    pub fn permanent(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Permanent, message)
    }
    fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        DeliveryError {
            kind,
            message: message.into(),
            retry_after: None,
        }
    }
}

/// One event on its way to one destination of a replicator.
#[derive(Debug, Clone)]
pub struct Delivery {
    pub event: Arc<StoredEvent>,
    pub route: Arc<Route>,
}

impl Delivery {
    /// The destination name: the route's, or the event's resource for a `*` route.
    pub fn destination(&self) -> &str {
        if self.route.destination == crate::config::ANY_RESOURCE {
            &self.event.event.resource
        } else {
            &self.route.destination
        }
    }
}

/// The outcome of one batch: either one result per delivery, in order, or a failure of the
/// batch as a whole (which the pipeline splits to find the record that caused it).
pub type BatchOutcome = Result<Vec<Result<(), DeliveryError>>, DeliveryError>;

/// A destination.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// Connects and checks the destination; retried by the pipeline until it succeeds.
    async fn init(&self) -> Result<(), DeliveryError>;

    /// Writes a batch. Deliveries of one key never appear twice in a batch.
    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome;

    /// Releases connections.
    async fn close(&self) {}

    /// What the destination says of itself when it is not healthy (a Wasm driver's `health`:
    /// "degraded: ..." or "unhealthy: ..."); `None` when it is healthy or does not say.
    async fn health(&self) -> Option<String> {
        None
    }

    /// The largest batch the destination takes, when it says (a Wasm driver's `describe`); the
    /// replicator's `batchSize` is lowered to it.
    fn max_batch_size(&self) -> Option<usize> {
        None
    }

    /// Requests sent to the destination so far (for cost figures), when the driver counts them.
    fn requests_made(&self) -> u64 {
        0
    }
}

/// Builds the driver a replicator's config describes (a Wasm driver is compiled and checked
/// here, so a broken component stops the start with its reason). `attempt_timeout`: the
/// replicator's `timeout`, a Wasm driver's deadline per `replicate` call.
pub async fn build(
    config: &DriverConfig,
    plugins: Option<&Arc<crate::plugins::Runtime>>,
    attempt_timeout: Duration,
) -> Result<Arc<dyn Driver>, crate::plugins::PluginError> {
    Ok(match config {
        DriverConfig::Webhook(c) => Arc::new(webhook::WebhookSink::new(c.clone())),
        DriverConfig::Postgresql(c) => Arc::new(postgresql::PostgresSink::new(c.clone())),
        DriverConfig::S3db(c) => Arc::new(s3db::S3dbSink::new(c.clone())),
        DriverConfig::Wasm(c) => {
            let runtime = plugins.expect("a runtime exists when a wasm driver is configured");
            let plugin = crate::plugins::driver::DriverPlugin::load(
                runtime.clone(),
                &c.component,
                &c.config,
                c.allow_hosts.clone(),
            )
            .await?;
            Arc::new(wasm::WasmSink::new(plugin, attempt_timeout))
        }
    })
}
