//! What a batch's answer means for each of its records: delivered, wait for the destination,
//! retry, or dead-letter. Pure functions of the answer and the policy, so every rule is tested
//! here rather than through a destination.

use std::time::Duration;

use crate::drivers::{BatchOutcome, DeliveryError, ErrorKind};

/// The longest `Retry-After` honoured, so a destination cannot park a key for days.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// A batch's answer, read.
#[derive(Debug, PartialEq)]
pub enum BatchVerdict {
    /// Refused as a whole for good: its halves are tried to find the record at fault.
    Split,
    /// One result per record, in batch order.
    PerRecord(Vec<Result<(), DeliveryError>>),
}

pub fn judge_batch(outcome: BatchOutcome, size: usize) -> BatchVerdict {
    BatchVerdict::PerRecord(match outcome {
        Err(e) if e.kind == ErrorKind::Permanent && size > 1 => return BatchVerdict::Split,
        Err(e) => vec![Err(e); size],
        Ok(results) if results.len() == size => results,
        Ok(results) => vec![
            Err(DeliveryError::permanent(format!(
                "driver answered {} results for a batch of {size}",
                results.len()
            )));
            size
        ],
    })
}

/// What becomes of one record after a failed attempt.
#[derive(Debug, PartialEq)]
pub enum Verdict {
    /// The destination is away: wait for it without spending the record's attempts.
    AwaitDestination,
    /// Try again; `after` is the destination's `Retry-After`, when it gave one.
    Retry {
        after: Option<Duration>,
    },
    DeadLetter,
}

impl Verdict {
    /// Whether this attempt counts against `maxRetries` (and enters the attempt history).
    pub fn spends_attempt(&self) -> bool {
        matches!(self, Verdict::Retry { .. } | Verdict::DeadLetter)
    }
}

/// `attempts_before`: attempts this record had already spent.
pub fn judge(err: &DeliveryError, attempts_before: u32, max_retries: u32) -> Verdict {
    match err.kind {
        ErrorKind::Unavailable => Verdict::AwaitDestination,
        ErrorKind::Permanent => Verdict::DeadLetter,
        ErrorKind::Transient if attempts_before + 1 > max_retries => Verdict::DeadLetter,
        ErrorKind::Transient => Verdict::Retry {
            after: err.retry_after.map(|d| d.min(MAX_RETRY_AFTER)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_permanent_batch_failure_splits_unless_one_record_is_left() {
        let refused = || Err(DeliveryError::permanent("bad"));
        assert_eq!(judge_batch(refused(), 4), BatchVerdict::Split);
        assert_eq!(
            judge_batch(refused(), 1),
            BatchVerdict::PerRecord(vec![Err(DeliveryError::permanent("bad"))])
        );
        let BatchVerdict::PerRecord(r) = judge_batch(Err(DeliveryError::transient("t")), 3) else {
            panic!("a transient failure is per record");
        };
        assert_eq!(r.len(), 3);
    }

    #[test]
    fn a_driver_answering_the_wrong_count_fails_every_record() {
        let BatchVerdict::PerRecord(r) = judge_batch(Ok(vec![Ok(())]), 2) else {
            panic!("per record");
        };
        assert!(
            r.iter()
                .all(|r| r.as_ref().is_err_and(|e| e.kind == ErrorKind::Permanent))
        );
    }

    #[test]
    fn attempts_are_spent_only_on_transient_and_permanent_errors() {
        let max = 3;
        let away = DeliveryError::unavailable("refused");
        assert_eq!(judge(&away, 100, max), Verdict::AwaitDestination);
        assert!(!Verdict::AwaitDestination.spends_attempt());
        let flaky = DeliveryError::transient("503");
        assert_eq!(judge(&flaky, 2, max), Verdict::Retry { after: None });
        assert_eq!(
            judge(&flaky, 3, max),
            Verdict::DeadLetter,
            "the 4th attempt is the last"
        );
        let refused = DeliveryError::permanent("400");
        assert_eq!(judge(&refused, 0, max), Verdict::DeadLetter);
    }

    #[test]
    fn retry_after_is_honoured_within_an_hour() {
        let mut e = DeliveryError::transient("429");
        e.retry_after = Some(Duration::from_secs(7));
        assert_eq!(
            judge(&e, 0, 3),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        e.retry_after = Some(Duration::from_secs(86_400));
        assert_eq!(
            judge(&e, 0, 3),
            Verdict::Retry {
                after: Some(MAX_RETRY_AFTER)
            }
        );
    }
}
