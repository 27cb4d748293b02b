//! {{name}}: a replicator driver that POSTs each batch to a URL, as a JSON array of events.
//!
//! Config: `{"url": "https://hooks.example.com/in", "headers": {"authorization": "Bearer ..."}}`
//! (`url` required, http or https; `headers` optional). Each element of the body is an event:
//! `resource`, `action`, `id`, `data`, `before`, `timestamp`, `source`, `sequence`, `metadata`,
//! its documents as JSON values. The answer decides:
//! - 2xx: every event was written;
//! - 401, 403: `unauthorized`;
//! - 408, 429, 5xx, or no answer (network): `retryable`, not before `Retry-After` seconds;
//! - any other 4xx: `rejected`, the whole batch.
//!
//! An event whose document is not valid JSON is rejected alone and not sent. Writes are
//! idempotent when the receiver drops an event whose `resource`, `id` and `sequence` it has seen.

use replicator_plugin::{
    Driver, DriverError, DriverInfo, Error, Event, EventFailure, Json, export_driver, log,
};
use serde_json::{Map, Value, json};
use wstd::http::{Body, Client, HeaderMap, HeaderName, HeaderValue, Request, Uri};

struct HttpPost {
    url: String,
    headers: Vec<(HeaderName, HeaderValue)>,
}

fn config_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "{{name}} driver config",
        "type": "object",
        "additionalProperties": false,
        "required": ["url"],
        "properties": {
            "url": {"type": "string", "pattern": "^https?://", "description": "Where each batch is POSTed."},
            "headers": {
                "type": "object",
                "additionalProperties": {"type": "string"},
                "description": "Sent with every request (e.g. authorization)."
            }
        }
    })
}

fn parse_config(config: &Json) -> Result<HttpPost, DriverError> {
    let config: Map<String, Value> = config.parse().map_err(|e| {
        DriverError::invalid_config(format!("the config must be a JSON object: {e}"))
    })?;
    let (mut url, mut headers) = (None, Vec::new());
    for (key, value) in config {
        match (key.as_str(), value) {
            ("url", Value::String(s)) => url = Some(s),
            ("url", _) => return Err(DriverError::invalid_config("`url` must be a string")),
            ("headers", Value::Object(pairs)) => {
                for (name, value) in pairs {
                    let header = match &value {
                        Value::String(v) => HeaderName::from_bytes(name.as_bytes())
                            .ok()
                            .zip(HeaderValue::from_str(v).ok()),
                        _ => None,
                    };
                    let message =
                        format!("`headers.{name}`: a header needs a valid name and a string value");
                    headers.push(header.ok_or_else(|| DriverError::invalid_config(message))?);
                }
            }
            ("headers", _) => {
                return Err(DriverError::invalid_config("`headers` must be an object"));
            }
            _ => {
                return Err(DriverError::invalid_config(format!(
                    "unknown config key `{key}`"
                )));
            }
        }
    }
    let url = url.ok_or_else(|| DriverError::invalid_config("`url` is required"))?;
    let uri: Uri = url
        .parse()
        .map_err(|e| DriverError::invalid_config(format!("`url` is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(DriverError::invalid_config(
            "`url` must be an http:// or https:// URL",
        ));
    }
    Ok(HttpPost { url, headers })
}

/// One event as the body carries it.
fn envelope(e: &Event) -> Result<Value, Error> {
    let doc = |d: &Option<Json>| d.as_ref().map(Json::value).transpose();
    Ok(json!({
        "resource": e.resource,
        "action": e.action.as_str(),
        "id": e.id,
        "data": doc(&e.data)?,
        "before": doc(&e.before)?,
        "timestamp": e.timestamp,
        "source": e.source,
        "sequence": e.sequence,
        "metadata": doc(&e.metadata)?,
    }))
}

/// `Retry-After` in seconds (the HTTP-date form is not honoured), in milliseconds.
fn retry_after_ms(headers: &HeaderMap) -> Option<u32> {
    let secs: u32 = headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(secs.saturating_mul(1000))
}

/// The start of an answer, for error messages.
fn snippet(body: &[u8]) -> String {
    String::from_utf8_lossy(body)
        .trim()
        .chars()
        .take(200)
        .collect()
}

/// What an answer with `status` means for the batch.
fn verdict(status: u16, headers: &HeaderMap, message: String) -> Result<(), DriverError> {
    let code = format!("http-{status}");
    match status {
        200..=299 => Ok(()),
        401 | 403 => Err(DriverError::unauthorized(code, message)),
        408 | 429 | 500..=599 => Err(DriverError::retryable(
            code,
            message,
            retry_after_ms(headers),
        )),
        400..=499 => Err(DriverError::rejected(code, message)),
        // 1xx, 3xx: not an answer about the events; try again.
        _ => Err(DriverError::retryable(code, message, None)),
    }
}

impl Driver for HttpPost {
    fn describe() -> DriverInfo {
        DriverInfo {
            name: "{{name}}".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            config_schema: Some(Json::from(config_schema())),
            max_batch_size: 100,
            idempotent: true,
        }
    }

    fn init(config: Json) -> Result<Self, DriverError> {
        parse_config(&config)
    }

    fn replicate(&mut self, events: Vec<Event>) -> Result<Vec<EventFailure>, DriverError> {
        let mut body = Vec::with_capacity(events.len());
        let mut failed = Vec::new();
        for (index, event) in events.iter().enumerate() {
            match envelope(event) {
                Ok(value) => body.push(value),
                Err(e) => failed.push(EventFailure {
                    index: index as u32,
                    error: DriverError::rejected(e.code, e.message),
                }),
            }
        }
        if body.is_empty() {
            return Ok(failed);
        }

        let url = &self.url;
        let bytes = serde_json::to_vec(&body).expect("JSON values encode");
        let mut request = Request::post(url)
            .body(Body::from(bytes))
            .map_err(|e| DriverError::fatal("bad-request", format!("POST {url}: {e}")))?;
        let headers = request.headers_mut();
        headers.insert(
            HeaderName::from_static("content-type"),
            HeaderValue::from_static("application/json"),
        );
        for (name, value) in &self.headers {
            headers.insert(name.clone(), value.clone());
        }
        let answer = wstd::runtime::block_on(async {
            let response = Client::new().send(request).await?;
            let (parts, mut body) = response.into_parts();
            let text = body.contents().await?.to_vec();
            Ok::<_, wstd::http::Error>((parts.status.as_u16(), parts.headers, text))
        });
        let (status, headers, text) = answer
            .map_err(|e| DriverError::retryable("network", format!("POST {url}: {e:#}"), None))?;
        log::debug(&format!(
            "{{name}}: POST {url}: {} events, HTTP {status}",
            body.len()
        ));
        let message = format!("POST {url}: HTTP {status}: {}", snippet(&text));
        verdict(status, &headers, message).map(|()| failed)
    }
}

export_driver!(HttpPost);

// `cargo test` runs these natively (HTTP itself needs the replicator: `replicator plugin test`).
#[cfg(test)]
mod tests {
    use super::*;
    use replicator_plugin::Action;

    fn kind(r: Result<(), DriverError>) -> &'static str {
        r.map_or_else(|e| e.kind(), |()| "ok")
    }

    #[test]
    fn config() {
        let c = parse_config(&Json::from(
            r#"{"url":"https://h.example/in","headers":{"Authorization":"Bearer t"}}"#,
        ))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.url, "https://h.example/in");
        assert_eq!(c.headers[0].0.as_str(), "authorization");
        for (config, key) in [
            ("{}", "url"),
            (r#"{"url":"ftp://h/"}"#, "url"),
            (r#"{"url":"h:1"}"#, "url"),
            (r#"{"url":"http://h","headers":{"x":1}}"#, "headers.x"),
            (r#"{"url":"http://h","headers":{"a b":"c"}}"#, "headers.a b"),
            (r#"{"url":"http://h","bogus":1}"#, "bogus"),
        ] {
            match parse_config(&Json::from(config)) {
                Err(DriverError::InvalidConfig(e)) => assert!(e.message.contains(key), "{e}"),
                _ => panic!("{config} should be refused"),
            }
        }
    }

    #[test]
    fn envelope_carries_parsed_documents() {
        let e = Event {
            resource: "users".into(),
            action: Action::Update,
            id: "u1".into(),
            data: Some(Json::from(r#"{"b":1,"a":2}"#)),
            sequence: 7,
            ..Event::default()
        };
        let v = envelope(&e).unwrap();
        assert_eq!(v["action"], "update");
        assert_eq!(v["data"], json!({"b": 1, "a": 2}));
        assert_eq!(v["before"], Value::Null);
        assert_eq!(v["sequence"], 7);
        let bad = Event {
            data: Some(Json::from("{nope")),
            ..e
        };
        assert_eq!(envelope(&bad).unwrap_err().code, "invalid-json");
    }

    #[test]
    fn answers() {
        let mut h = HeaderMap::new();
        let m = || "m".to_string();
        assert_eq!(kind(verdict(204, &h, m())), "ok");
        assert_eq!(kind(verdict(403, &h, m())), "unauthorized");
        assert_eq!(kind(verdict(404, &h, m())), "rejected");
        assert_eq!(kind(verdict(408, &h, m())), "retryable");
        h.insert("retry-after", HeaderValue::from_static("3"));
        match verdict(503, &h, m()) {
            Err(DriverError::Retryable { retry_after_ms, .. }) => {
                assert_eq!(retry_after_ms, Some(3000))
            }
            _ => panic!("expected retryable"),
        }
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after_ms(&h), None);
    }
}
