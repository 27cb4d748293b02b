//! Example driver: a search index's bulk API (the Elasticsearch/OpenSearch `_bulk` NDJSON
//! format) over wasi:http.
//!
//! Config: `{"url": "http://host:port", "index": "prefix", "token": "optional bearer"}`.
//! Each `replicate` is one `POST {url}/_bulk`; document `<id>` goes to index
//! `<index>-<resource>` with `version = sequence` and `version_type = external`, so a replayed or
//! older event gets a 409 version conflict, which counts as written (the driver is idempotent).

use replicator_plugin::{
    Action, Driver, DriverError, DriverInfo, Event, EventFailure, Health, Json, export_driver, log,
    state,
};
use serde_json::{Value, json};
use wstd::http::{Body, Client, Request, Uri};

const NAME: &str = "search-bulk";
const MAX_BATCH: u32 = 500;
/// The state key of the last failed bulk request's message.
const LAST_FAILURE: &str = "last-failure";

struct Config {
    /// Without a trailing slash.
    url: String,
    index: String,
    token: Option<String>,
}

fn bad_config(message: impl Into<String>) -> DriverError {
    DriverError::invalid_config(message)
}

fn retryable(code: &str, message: impl Into<String>, retry_after_ms: Option<u32>) -> DriverError {
    DriverError::retryable(code, message, retry_after_ms)
}

fn config_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "search-bulk driver config",
        "type": "object",
        "additionalProperties": false,
        "required": ["url", "index"],
        "properties": {
            "url": {
                "type": "string",
                "pattern": "^https?://[^/?#]+(/[^?#]*)?$",
                "description": "Base URL of the search cluster; `/_bulk` is appended."
            },
            "index": {
                "type": "string",
                "minLength": 1,
                "pattern": "^[^\\s/\\\\*?\"<>|,#:]+$",
                "description": "Index prefix: documents go to `<index>-<resource>`."
            },
            "token": {
                "type": "string",
                "minLength": 1,
                "description": "Bearer token sent as `Authorization: Bearer <token>`."
            }
        }
    })
}

fn parse_config(raw: &[u8]) -> Result<Config, DriverError> {
    let value: Value =
        serde_json::from_slice(raw).map_err(|e| bad_config(format!("config is not JSON: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(bad_config("config must be a JSON object"));
    };
    let (mut url, mut index, mut token) = (None, None, None);
    for (key, v) in obj {
        let s = match v {
            Value::String(s) => s,
            Value::Null if key == "token" => continue,
            _ => return Err(bad_config(format!("`{key}` must be a string"))),
        };
        match key.as_str() {
            "url" => url = Some(s),
            "index" => index = Some(s),
            "token" => token = Some(s),
            _ => return Err(bad_config(format!("unknown config key `{key}`"))),
        }
    }
    let url = url.ok_or_else(|| bad_config("`url` is required"))?;
    let url = url.trim_end_matches('/').to_string();
    let uri: Uri = url
        .parse()
        .map_err(|e| bad_config(format!("`url` is not a URL: {e}")))?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) || uri.authority().is_none() {
        return Err(bad_config(
            "`url` must be an absolute http:// or https:// URL",
        ));
    }
    if uri.query().is_some() {
        return Err(bad_config("`url` must not have a query"));
    }
    let index = index.ok_or_else(|| bad_config("`index` is required"))?;
    if index.is_empty()
        || index
            .chars()
            .any(|c| c.is_whitespace() || "/\\*?\"<>|,#:".contains(c))
    {
        return Err(bad_config(format!(
            "`index` {index:?} is not a valid index name prefix"
        )));
    }
    if token.as_deref() == Some("") {
        return Err(bad_config("`token` must not be empty"));
    }
    Ok(Config { url, index, token })
}

/// `Retry-After` in seconds (the HTTP-date form is ignored) → milliseconds.
fn retry_after_ms(headers: &wstd::http::HeaderMap) -> Option<u32> {
    let secs: u64 = headers
        .get("retry-after")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(secs.saturating_mul(1000).min(u32::MAX as u64) as u32)
}

fn snippet(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    match text.char_indices().nth(300) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The error of one bulk item (`{"type": ..., "reason": ...}` or a string) as text.
fn item_error(item: &Value) -> String {
    match item.get("error") {
        Some(Value::Object(e)) => {
            let t = e.get("type").and_then(Value::as_str).unwrap_or("error");
            let r = e.get("reason").and_then(Value::as_str).unwrap_or("");
            format!("{t}: {r}")
        }
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "no error given".into(),
    }
}

/// Maps a 2xx bulk response onto the events that were sent (`sent[i]` is the batch index of
/// the i-th bulk action).
fn item_failures(body: &[u8], sent: &[u32]) -> Result<Vec<EventFailure>, DriverError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| {
        retryable(
            "bad-response",
            format!("bulk response is not JSON ({e}): {}", snippet(body)),
            None,
        )
    })?;
    if v.get("errors") == Some(&Value::Bool(false)) {
        return Ok(Vec::new());
    }
    let items = v.get("items").and_then(Value::as_array).ok_or_else(|| {
        retryable(
            "bad-response",
            format!("bulk response has no `items`: {}", snippet(body)),
            None,
        )
    })?;
    if items.len() != sent.len() {
        return Err(retryable(
            "bad-response",
            format!(
                "bulk response has {} items for {} actions",
                items.len(),
                sent.len()
            ),
            None,
        ));
    }
    let mut failed = Vec::new();
    for (item, &index) in items.iter().zip(sent) {
        // Each item is `{"<action>": {"status": N, ...}}`.
        let Some((action, result)) = item.as_object().and_then(|o| o.iter().next()) else {
            continue;
        };
        let status = result.get("status").and_then(Value::as_u64).unwrap_or(0);
        let error = match status {
            // 409: a version conflict, i.e. the index already has this event or a newer one.
            200..=299 | 409 => continue,
            // Deleting a document that is not there: already done.
            404 if action == "delete" => continue,
            429 | 500..=599 => retryable(&format!("http-{status}"), item_error(result), None),
            400..=499 => DriverError::rejected(format!("http-{status}"), item_error(result)),
            _ => retryable(
                "bad-response",
                format!("bulk item status {status}: {}", item_error(result)),
                None,
            ),
        };
        failed.push(EventFailure { index, error });
    }
    Ok(failed)
}

/// The NDJSON body for `events`, the batch index of each bulk action in it, and the events
/// that could not be sent (insert/update whose data is not a JSON object).
fn bulk_body(c: &Config, events: &[Event]) -> (Vec<u8>, Vec<u32>, Vec<EventFailure>) {
    let mut body = Vec::with_capacity(events.len() * 256);
    let mut sent = Vec::with_capacity(events.len());
    let mut failed = Vec::new();
    for (i, e) in events.iter().enumerate() {
        let i = i as u32;
        let meta = json!({
            "_index": format!("{}-{}", c.index, e.resource),
            "_id": e.id,
            "version": e.sequence,
            "version_type": "external",
        });
        match e.action {
            Action::Delete => {
                serde_json::to_writer(&mut body, &json!({ "delete": meta })).expect("JSON");
                body.push(b'\n');
            }
            Action::Insert | Action::Update => {
                // Re-serialized so the document is one line, as NDJSON needs.
                let problem = match e.data.as_deref().map(serde_json::from_slice::<Value>) {
                    Some(Ok(doc @ Value::Object(_))) => {
                        serde_json::to_writer(&mut body, &json!({ "index": meta })).expect("JSON");
                        body.push(b'\n');
                        serde_json::to_writer(&mut body, &doc).expect("JSON");
                        body.push(b'\n');
                        None
                    }
                    Some(Ok(_)) => Some("data is not a JSON object".to_string()),
                    Some(Err(err)) => Some(format!("data is not valid JSON: {err}")),
                    None => Some("insert/update without data".to_string()),
                };
                if let Some(message) = problem {
                    let error = DriverError::rejected("invalid-record", message);
                    failed.push(EventFailure { index: i, error });
                    continue;
                }
            }
        }
        sent.push(i);
    }
    (body, sent, failed)
}

fn replicate(c: &Config, events: &[Event]) -> Result<Vec<EventFailure>, DriverError> {
    let (body, sent, mut failed) = bulk_body(c, events);
    if sent.is_empty() {
        return Ok(failed);
    }

    let url = format!("{}/_bulk", c.url);
    let mut request = Request::post(&url).header("content-type", "application/x-ndjson");
    if let Some(token) = &c.token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let request = request
        .body(Body::from(body))
        .map_err(|e| DriverError::fatal("bad-request", format!("building the request: {e}")))?;

    let (status, headers, response) = wstd::runtime::block_on(async {
        let response = Client::new().send(request).await?;
        let (parts, mut body) = response.into_parts();
        let bytes = body.contents().await?.to_vec();
        Ok::<_, wstd::http::Error>((parts.status.as_u16(), parts.headers, bytes))
    })
    .map_err(|e| retryable("connection", format!("POST {url}: {e:#}"), None))?;

    let outcome = match status {
        200..=299 => item_failures(&response, &sent).map(|mut f| {
            failed.append(&mut f);
            failed.sort_by_key(|f| f.index);
            failed
        }),
        401 | 403 => Err(DriverError::unauthorized(
            format!("http-{status}"),
            format!("POST {url}: {status}: {}", snippet(&response)),
        )),
        429 | 503 => Err(retryable(
            &format!("http-{status}"),
            format!("POST {url}: {status}: {}", snippet(&response)),
            retry_after_ms(&headers),
        )),
        400..=499 => Err(DriverError::rejected(
            format!("http-{status}"),
            format!("POST {url}: {status}: {}", snippet(&response)),
        )),
        _ => Err(retryable(
            &format!("http-{status}"),
            format!("POST {url}: {status}: {}", snippet(&response)),
            retry_after_ms(&headers),
        )),
    };
    let summary = match &outcome {
        Ok(failed) => format!("{} failed", failed.len()),
        Err(e) => format!("error {e}"),
    };
    log::debug(&format!(
        "{NAME}: POST {url}: {} events, {} actions, HTTP {status}, {summary}",
        events.len(),
        sent.len()
    ));
    outcome
}

struct SearchBulk {
    config: Config,
}

impl Driver for SearchBulk {
    fn describe() -> DriverInfo {
        DriverInfo {
            name: NAME.into(),
            version: "0.1.0".into(),
            config_schema: Some(Json::from(config_schema())),
            max_batch_size: MAX_BATCH,
            idempotent: true,
        }
    }

    fn init(config: Json) -> Result<Self, DriverError> {
        parse_config(&config).map(|config| SearchBulk { config })
    }

    fn replicate(&mut self, events: Vec<Event>) -> Result<Vec<EventFailure>, DriverError> {
        let outcome = replicate(&self.config, &events);
        // Kept by the host, so every instance of this driver (and `health`) sees it.
        match &outcome {
            Err(DriverError::Retryable { error, .. }) => {
                let _ = state::set(LAST_FAILURE, error.message.as_bytes());
            }
            _ => state::delete(LAST_FAILURE),
        }
        outcome
    }

    /// Degraded while the index's last answer was a failure worth retrying (unreachable, 5xx,
    /// 429): the host shows it in the replicator's status.
    fn health(&mut self) -> Health {
        match state::get(LAST_FAILURE) {
            Some(message) => Health::Degraded(String::from_utf8_lossy(&message).into_owned()),
            None => Health::Ok,
        }
    }
}

export_driver!(SearchBulk);

// Native unit tests of the request body, config and response mapping (`cargo test -p
// rust-driver` on the build machine; HTTP itself needs a wasi:http host).
#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        parse_config(br#"{"url":"http://127.0.0.1:9200/","index":"app"}"#)
            .unwrap_or_else(|_| panic!())
    }

    fn event(action: Action, id: &str, data: Option<&str>, sequence: u64) -> Event {
        Event {
            resource: "users".into(),
            action,
            id: id.into(),
            data: data.map(Json::from),
            timestamp: "2024-01-01T00:00:00Z".into(),
            sequence,
            ..Event::default()
        }
    }

    #[test]
    fn config_validation() {
        let c = config();
        assert_eq!(
            (c.url.as_str(), c.index.as_str(), c.token.is_none()),
            ("http://127.0.0.1:9200", "app", true)
        );
        for bad in [
            r#"{"index":"app"}"#,
            r#"{"url":"http://h:1"}"#,
            r#"{"url":"ftp://h","index":"app"}"#,
            r#"{"url":"h:1","index":"app"}"#,
            r#"{"url":"http://h:1","index":"a b"}"#,
            r#"{"url":"http://h:1","index":"app","token":""}"#,
            r#"{"url":"http://h:1","index":"app","bogus":1}"#,
            r#"{"url":1,"index":"app"}"#,
            "nope",
        ] {
            assert!(
                matches!(
                    parse_config(bad.as_bytes()),
                    Err(DriverError::InvalidConfig(_))
                ),
                "{bad}"
            );
        }
        assert!(parse_config(br#"{"url":"https://h/es","index":"app","token":"t"}"#).is_ok());
    }

    #[test]
    fn ndjson_body() {
        let events = [
            event(Action::Insert, "u1", Some("{\n  \"name\": \"Ada\"\n}"), 5),
            event(Action::Update, "u2", Some("[1]"), 6),
            event(Action::Delete, "u\"3", None, 7),
        ];
        let (body, sent, failed) = bulk_body(&config(), &events);
        let text = String::from_utf8(body).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert!(text.ends_with('\n'));
        assert_eq!(lines.len(), 3, "{text}");
        let l0: Value = serde_json::from_str(lines[0]).unwrap();
        assert_eq!(
            l0,
            json!({"index":{"_index":"app-users","_id":"u1","version":5,"version_type":"external"}})
        );
        assert_eq!(lines[1], r#"{"name":"Ada"}"#);
        let l2: Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(
            l2,
            json!({"delete":{"_index":"app-users","_id":"u\"3","version":7,"version_type":"external"}})
        );
        assert_eq!(sent, [0, 2]);
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].index, 1);
        assert!(matches!(failed[0].error, DriverError::Rejected(_)));
    }

    #[test]
    fn bulk_items() {
        assert!(
            item_failures(br#"{"errors":false,"items":[]}"#, &[0, 1])
                .unwrap()
                .is_empty()
        );
        let body = br#"{"errors":true,"items":[
            {"index":{"status":201}},
            {"index":{"status":409,"error":{"type":"version_conflict_engine_exception","reason":"old"}}},
            {"delete":{"status":404,"result":"not_found"}},
            {"index":{"status":429,"error":{"type":"es_rejected_execution_exception","reason":"busy"}}},
            {"index":{"status":503,"error":"unavailable"}},
            {"index":{"status":400,"error":{"type":"mapper_parsing_exception","reason":"bad field"}}}
        ]}"#;
        let failed = item_failures(body, &[0, 2, 3, 5, 6, 9]).unwrap();
        let got: Vec<(u32, &str)> = failed
            .iter()
            .map(|f| match &f.error {
                DriverError::Retryable { retry_after_ms, .. } => (
                    f.index,
                    if retry_after_ms.is_none() {
                        "retryable"
                    } else {
                        "?"
                    },
                ),
                DriverError::Rejected(e) => {
                    assert!(e.message.contains("mapper_parsing_exception: bad field"));
                    (f.index, "rejected")
                }
                _ => (f.index, "other"),
            })
            .collect();
        assert_eq!(got, [(5, "retryable"), (6, "retryable"), (9, "rejected")]);
        assert!(matches!(
            item_failures(b"<html>", &[0]),
            Err(DriverError::Retryable { .. })
        ));
        assert!(matches!(
            item_failures(br#"{"errors":true,"items":[]}"#, &[0]),
            Err(DriverError::Retryable { .. })
        ));
    }

    #[test]
    fn retry_after() {
        let mut h = wstd::http::HeaderMap::new();
        assert_eq!(retry_after_ms(&h), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after_ms(&h), Some(3000));
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after_ms(&h), None);
    }
}
