//! Sends deliveries as HTTP requests and classifies the answers.

use crate::redact::ExposeSecret;
use base64::Engine;
use sha2::{Digest, Sha256};

use super::config::{Auth, WebhookConfig};
use super::signing;
use crate::delivery::bounded;
use crate::drivers::util::http as http_errors;
use crate::drivers::util::payload::{Payload, idempotency_key};
use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver};

pub struct WebhookDriver {
    config: WebhookConfig,
    client: reqwest::Client,
    secrets: Vec<Vec<u8>>,
    /// The URL as it may appear in messages.
    shown_url: String,
}

impl WebhookDriver {
    pub fn new(config: WebhookConfig) -> Self {
        let client = reqwest::Client::builder()
            .timeout(config.timeout)
            .user_agent(concat!("replicator/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with a timeout and user agent builds");
        let secrets = config
            .signing_secrets
            .iter()
            .map(|s| signing::decode_secret(s.expose_secret()).expect("validated with the config"))
            .collect();
        let shown_url = crate::redact::url(config.url.as_str());
        WebhookDriver {
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
            Some(Auth::Bearer { token }) => req.bearer_auth(token.expose_secret()),
            Some(Auth::Basic { username, password }) => {
                req.basic_auth(username, Some(password.expose_secret()))
            }
            Some(Auth::ApiKey { header, value }) => req.header(header, value.expose_secret()),
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
        let what = format!("{} {}", c.method, self.shown_url);
        let response = req
            .body(body)
            .send()
            .await
            .map_err(|e| http_errors::transport_error(&what, &e, c.timeout))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let headers = response.headers().clone();
        let text = response.text().await.unwrap_or_default();
        Err(http_errors::status_error(
            &what,
            status,
            &headers,
            &text,
            &c.retry_on_status,
        ))
    }
}

#[async_trait::async_trait]
impl Driver for WebhookDriver {
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
        // Collected first: a lazy iterator of futures is not `Send` across the await.
        let sends: Vec<_> = batch
            .iter()
            .map(|d| {
                let body = serde_json::to_vec(&Payload::of(d)).expect("payload serializes");
                let id = idempotency_key(d);
                async move { self.send(&id, body).await }
            })
            .collect();
        Ok(bounded(sends, self.config.parallelism).await)
    }
}
