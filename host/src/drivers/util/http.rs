//! HTTP answers and transport failures as delivery errors: the status decides retry or not,
//! `Retry-After` (seconds or an HTTP date) is kept, and no message carries the request URL as
//! the client would print it (it may hold a token).

use std::time::Duration;

use crate::delivery::{DeliveryError, ErrorKind};

/// Statuses worth another attempt by default: request timeout, rate limit, server errors.
pub fn default_retryable_statuses() -> Vec<u16> {
    let mut v = vec![408, 429];
    v.extend(500..600);
    v
}

/// A non-success answer: retried when `retryable` lists its status, final otherwise.
/// `what`: the request as it may be shown; `body`: the start of the answer.
pub fn status_error(
    what: &str,
    status: http::StatusCode,
    headers: &http::HeaderMap,
    body: &str,
    retryable: &[u16],
) -> DeliveryError {
    let snippet: String = body.chars().take(300).collect();
    let kind = if retryable.contains(&status.as_u16()) {
        ErrorKind::Transient
    } else {
        ErrorKind::Permanent
    };
    let mut err = DeliveryError::new(
        kind,
        format!("{what} answered HTTP {status}: {}", snippet.trim()),
    );
    err.retry_after = headers
        .get(http::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_retry_after);
    err
}

/// A request that got no answer: no connection waits for the destination, the rest retries.
pub fn transport_error(what: &str, e: &reqwest::Error, timeout: Duration) -> DeliveryError {
    if e.is_timeout() {
        DeliveryError::transient(format!("{what} timed out after {timeout:?}"))
    } else if e.is_connect() {
        DeliveryError::unavailable(format!("{what}: cannot connect: {}", causes(e)))
    } else {
        DeliveryError::transient(format!("{what}: {}", causes(e)))
    }
}

/// The causes of a client error without the error itself (whose text names the URL).
fn causes(e: &reqwest::Error) -> String {
    match std::error::Error::source(e) {
        Some(source) => crate::delivery::cause_chain(source),
        None => "request failed".into(),
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let wait = when.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(90)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(80) && d <= Duration::from_secs(90),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }

    #[test]
    fn the_status_decides_and_retry_after_is_kept() {
        let mut headers = http::HeaderMap::new();
        headers.insert(http::header::RETRY_AFTER, "7".parse().unwrap());
        let e = status_error(
            "POST x",
            http::StatusCode::TOO_MANY_REQUESTS,
            &headers,
            " slow down ",
            &default_retryable_statuses(),
        );
        assert_eq!(e.kind, ErrorKind::Transient);
        assert_eq!(e.retry_after, Some(Duration::from_secs(7)));
        assert_eq!(
            e.message,
            "POST x answered HTTP 429 Too Many Requests: slow down"
        );
        let e = status_error(
            "POST x",
            http::StatusCode::BAD_REQUEST,
            &headers,
            "",
            &default_retryable_statuses(),
        );
        assert_eq!(e.kind, ErrorKind::Permanent);
    }
}
