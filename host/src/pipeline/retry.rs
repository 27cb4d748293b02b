//! Delays between attempts: exponential or fixed, with jitter, from the delivery policy.

use backon::{BackoffBuilder, ConstantBuilder, ExponentialBuilder};
use std::time::Duration;

use crate::config::{DeliveryPolicy, RetryStrategy};

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
