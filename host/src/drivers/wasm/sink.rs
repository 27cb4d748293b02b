//! Maps the pipeline's batches onto the component's `replicate`, and its typed errors onto
//! the pipeline's error classes.

use std::sync::Arc;
use std::time::Duration;

use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver};
use crate::plugins::driver::{DriverPlugin, Trapped};
use crate::plugins::driver_types::{DriverError, ErrorInfo};

pub struct WasmSink {
    plugin: Arc<DriverPlugin>,
    timeout: Duration,
}

impl WasmSink {
    pub fn new(plugin: Arc<DriverPlugin>, timeout: Duration) -> Self {
        WasmSink { plugin, timeout }
    }

    fn error(&self, e: DriverError) -> DeliveryError {
        let text = |what: &str, i: &ErrorInfo| {
            format!(
                "driver {} {what} ({}): {}",
                self.plugin.name, i.code, i.message
            )
        };
        match e {
            // Nothing gets better by retrying a record; the replicator waits (failing) instead.
            DriverError::InvalidConfig(i) => {
                DeliveryError::unavailable(text("refused its config", &i))
            }
            DriverError::Unauthorized(i) => {
                DeliveryError::unavailable(text("was refused access", &i))
            }
            DriverError::Retryable(h) => {
                let mut e = DeliveryError::transient(text("failed", &h.info));
                e.retry_after = h.retry_after_ms.map(|ms| Duration::from_millis(ms.into()));
                e
            }
            DriverError::Rejected(i) => DeliveryError::permanent(text("rejected the record", &i)),
            DriverError::Fatal(i) => {
                DeliveryError::transient(text("broke (instance replaced)", &i))
            }
        }
    }

    /// A trap is the record's fault until proven otherwise: as a batch-level permanent error,
    /// the pipeline splits the batch down to the record and dead-letters it.
    fn trapped(&self, t: Trapped) -> DeliveryError {
        DeliveryError::permanent(format!("driver {} trapped: {}", self.plugin.name, t.0))
    }
}

#[async_trait::async_trait]
impl Driver for WasmSink {
    async fn init(&self) -> Result<(), DeliveryError> {
        match self.plugin.init().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.error(e)),
            Err(t) => Err(DeliveryError::unavailable(format!(
                "driver {} trapped in init: {}",
                self.plugin.name, t.0
            ))),
        }
    }

    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
        let events: Vec<_> = batch
            .iter()
            .map(|d| crate::plugins::to_wit(&d.event, d.destination()))
            .collect();
        match self.plugin.replicate(&events, self.timeout).await {
            Err(t) => Err(self.trapped(t)),
            Ok(Err(e)) => Err(self.error(e)),
            Ok(Ok(result)) => {
                let mut results = vec![Ok(()); batch.len()];
                for failure in result.failed {
                    if let Some(slot) = results.get_mut(failure.index as usize) {
                        *slot = Err(self.error(failure.error));
                    }
                }
                Ok(results)
            }
        }
    }

    async fn close(&self) {
        self.plugin.close().await;
    }
}
