//! How a replicator delivers: batching, retries, parallelism, and the delays between attempts
//! (exponential or fixed, with jitter, through `backon` like every retry loop of the host).

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryStrategy {
    Exponential,
    Fixed,
}

impl RetryStrategy {
    /// The names `retryStrategy` takes.
    pub const NAMES: [&str; 2] = ["exponential", "fixed"];

    pub fn parse(name: &str) -> Option<RetryStrategy> {
        match name {
            "exponential" => Some(RetryStrategy::Exponential),
            "fixed" => Some(RetryStrategy::Fixed),
            _ => None,
        }
    }
}

/// How the pipeline delivers for one replicator: batching, retries, parallelism.
#[derive(Debug, Clone, PartialEq)]
pub struct DeliveryPolicy {
    pub batch_size: usize,
    /// Retries after the first attempt (so `3` means up to 4 attempts).
    pub max_retries: u32,
    /// Limit of one delivery attempt.
    pub timeout: Duration,
    pub retry_delay: Duration,
    pub max_retry_delay: Duration,
    pub retry_strategy: RetryStrategy,
    /// Batches in flight at once (different keys only).
    pub concurrency: usize,
    /// How long a partly filled batch may wait for more events.
    pub linger: Duration,
    /// Events held in memory per replicator; the rest of the backlog stays on disk.
    pub buffer_events: usize,
    pub log_successes: bool,
}

impl Default for DeliveryPolicy {
    fn default() -> Self {
        DeliveryPolicy {
            batch_size: 100,
            max_retries: 3,
            timeout: Duration::from_secs(30),
            retry_delay: Duration::from_secs(1),
            max_retry_delay: Duration::from_secs(60),
            retry_strategy: RetryStrategy::Exponential,
            concurrency: 4,
            linger: Duration::from_millis(5),
            buffer_events: 10_000,
            log_successes: false,
        }
    }
}

pub type Backoff = Box<dyn Iterator<Item = Duration> + Send + Sync>;

/// Delays for a record's retries (`retryDelay`, doubling when exponential, up to `maxRetryDelay`).
pub fn for_retries(policy: &DeliveryPolicy) -> Backoff {
    match policy.retry_strategy {
        RetryStrategy::Exponential => Box::new(
            ExponentialBuilder::default()
                .with_min_delay(policy.retry_delay)
                .with_max_delay(policy.max_retry_delay)
                .with_factor(2.0)
                .with_jitter()
                .without_max_times()
                .build(),
        ),
        RetryStrategy::Fixed => Box::new(
            ConstantBuilder::default()
                .with_delay(policy.retry_delay)
                .with_jitter()
                .without_max_times()
                .build(),
        ),
    }
}

/// Delays between failed rounds of the host's own background work (capture, the cluster's
/// sequencer): an outage, from 200 ms doubling to 30 s, with jitter.
pub fn for_background_outage() -> Backoff {
    for_outage(&DeliveryPolicy {
        retry_delay: Duration::from_millis(200),
        max_retry_delay: Duration::from_secs(30),
        ..DeliveryPolicy::default()
    })
}

/// Delays while a destination is unreachable: they do not spend attempts, so they grow to the cap.
pub fn for_outage(policy: &DeliveryPolicy) -> Backoff {
    Box::new(
        ExponentialBuilder::default()
            .with_min_delay(
                policy
                    .retry_delay
                    .clamp(Duration::from_millis(100), Duration::from_secs(1)),
            )
            .with_max_delay(policy.max_retry_delay.min(Duration::from_secs(30)))
            .with_factor(2.0)
            .with_jitter()
            .without_max_times()
            .build(),
    )
}
