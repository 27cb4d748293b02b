//! Maps the pipeline's batches onto the component's `replicate`, and its typed errors onto
//! the pipeline's error classes.

use std::sync::Arc;
use std::time::Duration;

use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver};
use crate::plugins::Live;
use crate::plugins::driver::{Answer, DriverPlugin, Failure};
use crate::plugins::driver_types::{DriverError, ErrorInfo, HealthStatus};
use crate::plugins::runtime::CallError;

/// The component's calls go to the version running when each starts: a reload swaps it
/// between batches.
pub struct WasmDriver {
    plugin: Arc<Live<DriverPlugin>>,
    timeout: Duration,
}

impl WasmDriver {
    /// One `replicate` call with these records.
    async fn call(&self, plugin: &DriverPlugin, batch: &[Delivery]) -> BatchOutcome {
        let events: Vec<_> = batch
            .iter()
            .map(|d| crate::plugins::to_wit(&d.event, d.destination()))
            .collect();
        let replicated = plugin.replicate(&events, self.timeout).await;
        let outcome = self.outcome(plugin, replicated.result, batch.len());
        // The host's own reason goes with the driver's, which may not name the allow-list.
        let refused = match replicated.refused.as_slice() {
            [] => String::new(),
            hosts => format!(
                "; the host refused its requests to {} (not in allowHosts)",
                hosts.join(", ")
            ),
        };
        let why = |e: DeliveryError| {
            self.masked(
                plugin,
                DeliveryError {
                    message: format!("{}{refused}", e.message),
                    ..e
                },
            )
        };
        match outcome {
            Ok(results) => Ok(results.into_iter().map(|r| r.map_err(why)).collect()),
            Err(e) => Err(why(e)),
        }
    }

    pub fn new(plugin: Arc<Live<DriverPlugin>>, timeout: Duration) -> Self {
        WasmDriver { plugin, timeout }
    }

    fn error(&self, plugin: &DriverPlugin, e: DriverError) -> DeliveryError {
        let text = |what: &str, i: &ErrorInfo| {
            format!("driver {} {what} ({}): {}", plugin.name, i.code, i.message)
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

    /// The pipeline's view of a `replicate` call: one result per record, or the batch's error.
    fn outcome(&self, plugin: &DriverPlugin, result: Answer, records: usize) -> BatchOutcome {
        match result {
            Err(f) => Err(self.failed(plugin, f)),
            Ok(Err(e)) => Err(self.error(plugin, e)),
            Ok(Ok(result)) => {
                let mut results = vec![Ok(()); records];
                for failure in result.failed {
                    // A failure the driver cannot place must not let its record pass as written.
                    let Some(slot) = results.get_mut(failure.index as usize) else {
                        return Err(DeliveryError::permanent(format!(
                            "driver {} reported a failure for record {} of a batch of {}",
                            plugin.name, failure.index, records
                        )));
                    };
                    *slot = Err(self.error(plugin, failure.error));
                }
                Ok(results)
            }
        }
    }

    /// The driver's words can carry its config (a URL with a password, a token).
    fn masked(&self, plugin: &DriverPlugin, e: DeliveryError) -> DeliveryError {
        DeliveryError {
            message: plugin.secrets.mask(&e.message),
            ..e
        }
    }

    fn failed(&self, plugin: &DriverPlugin, f: Failure) -> DeliveryError {
        let name = &plugin.name;
        match f {
            // A trap is the record's fault until proven otherwise: as a batch-level permanent
            // error, the pipeline splits the batch down to the record and dead-letters it.
            Failure::Call(CallError::Trap(m)) => {
                DeliveryError::permanent(format!("driver {name} trapped: {m}"))
            }
            // A destination that is slow to answer looks the same from here: an attempt spent.
            Failure::Call(CallError::Deadline(m)) => {
                DeliveryError::transient(format!("driver {name}: {m} (instance replaced)"))
            }
            Failure::NoInstance(m) => DeliveryError::unavailable(format!(
                "driver {name} could not start an instance: {m}"
            )),
        }
    }
}

#[async_trait::async_trait]
impl Driver for WasmDriver {
    async fn init(&self) -> Result<(), DeliveryError> {
        let plugin = self.plugin.get();
        match plugin.init().await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(self.masked(&plugin, self.error(&plugin, e))),
            Err(f) => Err(self.masked(&plugin, self.failed(&plugin, f))),
        }
    }

    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
        let plugin = self.plugin.get();
        // A reloaded version may take smaller batches than the one the replicator started
        // with: the batch goes in several calls then. Once a later call fails as a whole, its
        // records and the rest fail with it; the earlier ones were written.
        let max = match plugin.info.max_batch_size {
            0 => batch.len().max(1),
            n => n as usize,
        };
        let mut calls = batch.chunks(max);
        let first = calls.next().unwrap_or_default();
        let mut results = self.call(&plugin, first).await?;
        for (i, chunk) in calls.enumerate() {
            match self.call(&plugin, chunk).await {
                Ok(r) => results.extend(r),
                Err(e) => {
                    let sent = first.len() + i * max;
                    results.extend(std::iter::repeat_n(Err(e), batch.len() - sent));
                    break;
                }
            }
        }
        Ok(results)
    }

    async fn close(&self) {
        self.plugin.get().close().await;
    }

    async fn health(&self) -> Option<String> {
        let plugin = self.plugin.get();
        let said = match plugin.health().await? {
            HealthStatus::Ok => return None,
            HealthStatus::Degraded(m) => format!("degraded: {m}"),
            HealthStatus::Unhealthy(m) => format!("unhealthy: {m}"),
        };
        Some(plugin.secrets.mask(&said))
    }

    fn max_batch_size(&self) -> Option<usize> {
        // 0: the driver sets no limit of its own.
        let max = self.plugin.get().info.max_batch_size;
        (max > 0).then_some(max as usize)
    }
}
