//! Sends deliveries as HTTP requests and classifies the answers.

use base64::Engine;
use futures::future::join_all;
use sha2::{Digest, Sha256};
use std::time::Duration;

use super::config::{Auth, WebhookConfig};
use super::signing;
use crate::drivers::payload::{Payload, idempotency_key};
use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver};

pub struct WebhookSink {
    config: WebhookConfig,
    client: reqwest::Client,
    secrets: Vec<Vec<u8>>,
    /// The URL as it may appear in messages.
    shown_url: String,
}

impl WebhookSink {
    pub fn new(config: WebhookConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("replicator/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with a timeout and user agent builds");
        let secrets = config
            .signing_secrets
            .iter()
            .map(|s| signing::decode_secret(s.expose()).expect("validated with the config"))
            .collect();
        let shown_url = crate::redact::url(config.url.as_str());
        WebhookSink {
            config,
            client,
            secrets,
            shown_url,
        }
    }

    async fn send(&self, webhook_id: &str, body: Vec<u8>) -> Result<(), DeliveryError> {
        let c = &self.config;
        let mut req = self.client.request(c.method.clone(), c.url.clone());
        req = req.header(http::header::CONTENT_TYPE, "application/json");
        for (name, value) in &c.headers {
            req = req.header(name, value);
        }
        req = match &c.auth {
            Some(Auth::Bearer { token }) => req.bearer_auth(token.expose()),
            Some(Auth::Basic { username, password }) => {
                req.basic_auth(username, Some(password.expose()))
            }
            Some(Auth::ApiKey { header, value }) => req.header(header, value.expose()),
            None => req,
        };
        let timestamp = chrono::Utc::now().timestamp();
        req = req
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp);
        if !self.secrets.is_empty() {
            req = req.header(
                "webhook-signature",
                signing::signature(&self.secrets, webhook_id, timestamp, &body),
            );
        }
        let response = req
            .body(body)
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let text = response.text().await.unwrap_or_default();
        let snippet: String = text.chars().take(300).collect();
        let message = format!(
            "{} {} answered HTTP {status}: {}",
            c.method,
            self.shown_url,
            snippet.trim()
        );
        let mut err = if c.retry_on_status.contains(&status.as_u16()) {
            DeliveryError::transient(message)
        } else {
            DeliveryError::permanent(message)
        };
        err.retry_after = retry_after;
        Err(err)
    }

    fn transport_error(&self, e: reqwest::Error) -> DeliveryError {
        let what = format!("{} {}", self.config.method, self.shown_url);
        if e.is_timeout() {
            DeliveryError::transient(format!("{what} timed out after {:?}", self.config.timeout))
        } else if e.is_connect() {
            DeliveryError::unavailable(format!("{what}: cannot connect: {}", source_chain(&e)))
        } else {
            DeliveryError::transient(format!("{what}: {}", source_chain(&e)))
        }
    }
}

/// The error and its causes, without the URL reqwest would print (it may hold a token).
fn source_chain(e: &reqwest::Error) -> String {
    let mut parts = Vec::new();
    let mut cur: Option<&dyn std::error::Error> = std::error::Error::source(e);
    while let Some(err) = cur {
        parts.push(err.to_string());
        cur = err.source();
    }
    if parts.is_empty() {
        "request failed".into()
    } else {
        parts.join(": ")
    }
}

/// `Retry-After` as seconds or as an HTTP date.
fn parse_retry_after(value: &str) -> Option<Duration> {
    if let Ok(secs) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = chrono::DateTime::parse_from_rfc2822(value.trim()).ok()?;
    let wait = when.signed_duration_since(chrono::Utc::now());
    Some(wait.to_std().unwrap_or(Duration::ZERO))
}

#[async_trait::async_trait]
impl Driver for WebhookSink {
    async fn init(&self) -> Result<(), DeliveryError> {
        Ok(())
    }

    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
        if self.config.batch {
            let payloads: Vec<Payload> = batch.iter().map(Payload::of).collect();
            let body = serde_json::to_vec(&serde_json::json!({ "batch": payloads }))
                .expect("payloads serialize");
            // Stable across retries of the same records, different for every other batch.
            let mut hash = Sha256::new();
            for d in batch {
                hash.update(idempotency_key(d).as_bytes());
                hash.update(b"\n");
            }
            let id = format!(
                "batch_{}",
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&hash.finalize()[..18])
            );
            self.send(&id, body).await?;
            return Ok(vec![Ok(()); batch.len()]);
        }
        let sends = batch.iter().map(|d| {
            let body = serde_json::to_vec(&Payload::of(d)).expect("payload serializes");
            let id = idempotency_key(d);
            async move { self.send(&id, body).await }
        });
        Ok(join_all(sends).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_in_seconds_and_as_a_date() {
        assert_eq!(parse_retry_after("3"), Some(Duration::from_secs(3)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(30)).to_rfc2822();
        let d = parse_retry_after(&later).unwrap();
        assert!(
            d > Duration::from_secs(25) && d <= Duration::from_secs(30),
            "{d:?}"
        );
        assert_eq!(parse_retry_after("soon"), None);
    }
}
