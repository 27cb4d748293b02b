//! Misbehaving driver: each `replicate` makes an HTTP GET to the config's `forbiddenUrl`
//! (which the host's allow-list should refuse) and returns `err(retryable)` with the error
//! message if the request fails, `ok` (everything written) otherwise. A batch holding an event
//! whose `data.panic` is `true` panics instead (the host must isolate that record).

wit_bindgen::generate!({
    path: "../../../wit",
    world: "sink-driver",
});

use exports::replicator::plugin::driver::{
    DriverError, DriverInfo, Guest, HealthStatus, ReplicateResult, RetryHint,
};
use replicator::plugin::types::{ErrorInfo, Event};
use std::sync::Mutex;
use wstd::http::{Body, Client, Request};

static URL: Mutex<Option<String>> = Mutex::new(None);

fn info(code: &str, message: impl Into<String>) -> ErrorInfo {
    ErrorInfo {
        code: code.into(),
        message: message.into(),
    }
}

struct Driver;

impl Guest for Driver {
    fn describe() -> DriverInfo {
        DriverInfo {
            name: "driver-forbidden-host".into(),
            version: "0.1.0".into(),
            config_schema: Some(
                br#"{"type":"object","required":["forbiddenUrl"],"properties":{"forbiddenUrl":{"type":"string"}}}"#
                    .to_vec(),
            ),
            max_batch_size: 100,
            idempotent: true,
        }
    }

    fn init(config: Vec<u8>) -> Result<(), DriverError> {
        let config: serde_json::Value = serde_json::from_slice(&config)
            .map_err(|e| DriverError::InvalidConfig(info("invalid-config", e.to_string())))?;
        let url = config
            .get("forbiddenUrl")
            .and_then(|u| u.as_str())
            .ok_or_else(|| {
                DriverError::InvalidConfig(info(
                    "invalid-config",
                    "`forbiddenUrl` (a string) is required",
                ))
            })?;
        *URL.lock().unwrap_or_else(|p| p.into_inner()) = Some(url.to_string());
        Ok(())
    }

    fn replicate(events: Vec<Event>) -> Result<ReplicateResult, DriverError> {
        let asks_to_panic = |e: &Event| {
            e.data
                .as_deref()
                .and_then(|d| serde_json::from_slice::<serde_json::Value>(d).ok())
                .is_some_and(|d| d["panic"] == true)
        };
        if events.iter().any(asks_to_panic) {
            panic!("a record asked the driver to panic");
        }
        let url = URL
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| {
                DriverError::InvalidConfig(info(
                    "invalid-config",
                    "`replicate` called before `init`",
                ))
            })?;
        let result = wstd::runtime::block_on(async {
            let request = Request::get(&url).body(Body::empty())?;
            let mut response = Client::new().send(request).await?;
            response.body_mut().contents().await?;
            Ok::<_, wstd::http::Error>(())
        });
        match result {
            Ok(()) => Ok(ReplicateResult { failed: Vec::new() }),
            Err(e) => Err(DriverError::Retryable(RetryHint {
                info: info("forbidden-request-failed", format!("GET {url}: {e:#}")),
                retry_after_ms: None,
            })),
        }
    }

    fn health() -> HealthStatus {
        HealthStatus::Ok
    }

    fn close() -> Result<(), DriverError> {
        Ok(())
    }
}

export!(Driver);
