//! The vocabulary of delivering, shared by the pipeline, the drivers and the s3db store: a
//! delivery and its route, the policy it runs under, how a failure is classed, and the helpers
//! every destination uses (AWS error classes, cause chains, bounded concurrency).

pub mod aws;
mod policy;
mod route;
pub mod sqs;

use std::sync::Arc;
use std::time::Duration;

use crate::event::StoredEvent;
pub use policy::{
    Backoff, DeliveryPolicy, RetryStrategy, for_background_outage, for_outage, for_retries,
};
pub use route::{ANY_RESOURCE, ActionSet, Route, RouteIndex, TransformRef};

/// Where a driver's own background work (BigQuery's MERGE of staged changes) reports, so the
/// replicator's status, metrics and stream show its failures as they show a stalled delivery.
pub trait BackgroundReport: Send + Sync {
    /// The work failed and will be tried again.
    fn failed(&self, error: &DeliveryError);
    /// It works again.
    fn recovered(&self);
}

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
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
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
        if self.route.destination == ANY_RESOURCE {
            &self.event.event.resource
        } else {
            &self.route.destination
        }
    }
}

/// The outcome of one batch: either one result per delivery, in order, or a failure of the
/// batch as a whole (which the pipeline splits to find the record that caused it).
pub type BatchOutcome = Result<Vec<Result<(), DeliveryError>>, DeliveryError>;

/// An error and its sources, `: `-separated (what `{:#}` shows for `anyhow`), for errors whose
/// `Display` leaves the cause out (HTTP clients, SDKs, database drivers).
pub fn cause_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

/// Runs `tasks` with at most `limit` at once, their results in the tasks' order: the parts of
/// a batch go out together without opening thousands of connections.
pub async fn bounded<F: std::future::Future>(
    tasks: impl IntoIterator<Item = F>,
    limit: usize,
) -> Vec<F::Output> {
    use futures::StreamExt;
    futures::stream::iter(tasks)
        .buffered(limit.max(1))
        .collect()
        .await
}
