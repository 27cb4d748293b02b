//! Webhook options: those of s3db.js's webhook replicator plus Standard Webhooks signing.

use std::time::Duration;

use crate::delivery::{DeliveryPolicy, RetryStrategy};
use crate::drivers::util::http::default_retryable_statuses;
use crate::options::{Section, index};
use crate::redact::Secret;

#[derive(Debug, Clone)]
pub enum Auth {
    Bearer { token: Secret },
    Basic { username: String, password: Secret },
    ApiKey { header: String, value: Secret },
}

#[derive(Debug, Clone)]
pub struct WebhookConfig {
    pub url: url::Url,
    pub method: http::Method,
    pub headers: Vec<(String, String)>,
    pub auth: Option<Auth>,
    pub timeout: Duration,
    pub retries: Option<u32>,
    pub retry_delay: Option<Duration>,
    pub retry_strategy: Option<RetryStrategy>,
    /// Statuses worth another attempt; anything else that is not 2xx is permanent.
    pub retry_on_status: Vec<u16>,
    /// One request per batch with body `{"batch": [...]}`.
    pub batch: bool,
    pub batch_size: Option<usize>,
    /// Standard Webhooks secrets; several sign at once during a rotation.
    pub signing_secrets: Vec<Secret>,
    /// Requests in flight at once for one batch (one request per event).
    pub parallelism: usize,
}

impl WebhookConfig {
    /// The webhook's own retry and batch options take precedence over the replicator's.
    pub fn adjust_delivery(&self, policy: &mut DeliveryPolicy) {
        if let Some(r) = self.retries {
            policy.max_retries = r;
        }
        if let Some(d) = self.retry_delay {
            policy.retry_delay = d;
        }
        if let Some(s) = self.retry_strategy {
            policy.retry_strategy = s;
        }
        if let (true, Some(n)) = (self.batch, self.batch_size) {
            policy.batch_size = n;
        }
        // The pipeline's attempt limit must leave room for the HTTP timeout.
        policy.timeout = policy.timeout.max(self.timeout + Duration::from_secs(1));
    }
}

pub fn parse(s: &mut Section) -> Option<WebhookConfig> {
    let url = s
        .required_string("url")
        .and_then(|u| match url::Url::parse(&u) {
            Ok(parsed) if matches!(parsed.scheme(), "http" | "https") => Some(parsed),
            _ => {
                s.problem(
                    "url",
                    format!(
                        "must be an http:// or https:// URL, found \"{}\"",
                        crate::redact::url(&u)
                    ),
                );
                None
            }
        });
    let method = s
        .choice("method", &["POST", "PUT", "PATCH"])
        .map(|m| m.parse().expect("listed methods parse"))
        .unwrap_or(http::Method::POST);
    let headers = s.string_map("headers").unwrap_or_default();
    for (name, value) in &headers {
        if http::HeaderName::try_from(name.as_str()).is_err()
            || http::HeaderValue::try_from(value.as_str()).is_err()
        {
            s.problem(
                "headers",
                format!("header \"{name}\" is not a valid HTTP header"),
            );
        }
    }
    let auth = s.section("auth").and_then(|mut a| {
        let kind = a.choice("type", &["bearer", "basic", "apikey"]);
        let auth = match kind {
            Some("bearer") => a.required_string("token").map(|t| Auth::Bearer {
                token: Secret::from(t),
            }),
            Some("basic") => {
                let user = a.required_string("username");
                let pass = a.required_string("password");
                Some(Auth::Basic {
                    username: user?,
                    password: Secret::from(pass?),
                })
            }
            Some("apikey") => {
                let header = a.string("header").unwrap_or_else(|| "X-API-Key".into());
                a.required_string("value").map(|v| Auth::ApiKey {
                    header,
                    value: Secret::from(v),
                })
            }
            _ => {
                if !a.has("type") {
                    a.problem("type", "is required (bearer, basic or apikey)");
                }
                None
            }
        };
        a.finish();
        auth
    });
    let timeout = s.duration("timeout").unwrap_or(Duration::from_millis(5000));
    let retries = s.u64_in("retries", 0, 1000).map(|n| n as u32);
    let retry_delay = s.duration("retryDelay");
    let retry_strategy = s
        .choice("retryStrategy", &RetryStrategy::NAMES)
        .and_then(RetryStrategy::parse);
    let retry_on_status = match s.value("retryOnStatus") {
        None => default_retryable_statuses(),
        Some(serde_json::Value::Array(items)) => {
            let path = s.path_of("retryOnStatus");
            items
                .iter()
                .enumerate()
                .filter_map(|(i, v)| match v.as_u64() {
                    Some(code @ 100..=599) => Some(code as u16),
                    _ => {
                        s.problems().add(
                            index(&path, i),
                            format!("must be an HTTP status code, found {v}"),
                        );
                        None
                    }
                })
                .collect()
        }
        Some(_) => {
            s.problem("retryOnStatus", "must be a list of HTTP status codes");
            default_retryable_statuses()
        }
    };
    let batch = s.bool("batch").unwrap_or(false);
    let parallelism = s.u64_in("parallelism", 1, 1024).unwrap_or(32) as usize;
    let batch_size = s.u64_in("batchSize", 1, 10_000).map(|n| n as usize);
    let mut signing_secrets = Vec::new();
    if let Some(secret) = s.string("signingSecret") {
        signing_secrets.push(secret);
    }
    if let Some(serde_json::Value::Array(list)) = s.value("signingSecrets") {
        signing_secrets.extend(list.iter().filter_map(|v| v.as_str().map(str::to_string)));
    }
    let signing_secrets = signing_secrets
        .into_iter()
        .filter_map(|raw| match super::signing::decode_secret(&raw) {
            Ok(_) => Some(Secret::from(raw)),
            Err(e) => {
                s.problem("signingSecret", e);
                None
            }
        })
        .collect();
    Some(WebhookConfig {
        url: url?,
        method,
        headers,
        auth,
        timeout,
        retries,
        retry_delay,
        retry_strategy,
        retry_on_status,
        batch,
        batch_size,
        signing_secrets,
        parallelism,
    })
}
