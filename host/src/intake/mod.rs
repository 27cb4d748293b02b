//! `POST /v1/events`: parses one event, a JSON array or NDJSON, validates every item, and
//! answers 202 with the sequences only once the whole batch is durable in the journal.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::sync::Arc;
use std::time::Instant;

use crate::event::{Event, now_rfc3339, parse_event};
use crate::server::AppState;

/// Why one item of a batch was refused.
#[derive(Debug, Serialize, PartialEq)]
pub struct ItemError {
    pub index: usize,
    /// 1-based line in an NDJSON body.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    pub errors: Vec<String>,
}

/// Splits a body into events, or says what is wrong with each bad item.
pub fn parse_body(body: &[u8], ndjson_hint: bool) -> Result<Vec<Event>, (String, Vec<ItemError>)> {
    let now = now_rfc3339();
    let text =
        std::str::from_utf8(body).map_err(|e| (format!("body is not UTF-8: {e}"), Vec::new()))?;
    let items: Vec<(Option<usize>, Result<Value, String>)> = if ndjson_hint {
        ndjson(text)
    } else {
        match serde_json::from_str::<Value>(text) {
            Ok(Value::Array(list)) => list.into_iter().map(|v| (None, Ok(v))).collect(),
            Ok(single) => vec![(None, Ok(single))],
            Err(_) if text.trim().lines().filter(|l| !l.trim().is_empty()).count() > 1 => {
                ndjson(text)
            }
            Err(e) => return Err((format!("body is not valid JSON: {e}"), Vec::new())),
        }
    };
    if items.is_empty() {
        return Err(("no events in the body".into(), Vec::new()));
    }
    let mut events = Vec::with_capacity(items.len());
    let mut errors = Vec::new();
    for (index, (line, item)) in items.into_iter().enumerate() {
        match item.map_err(|e| vec![e]).and_then(|v| parse_event(v, &now)) {
            Ok(e) => events.push(e),
            Err(errs) => errors.push(ItemError {
                index,
                line,
                errors: errs,
            }),
        }
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err((
            format!(
                "{} of {} events are invalid; none were accepted",
                errors.len(),
                events.len() + errors.len()
            ),
            errors,
        ))
    }
}

fn ndjson(text: &str) -> Vec<(Option<usize>, Result<Value, String>)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            (
                Some(i + 1),
                serde_json::from_str(l).map_err(|e| format!("invalid JSON: {e}")),
            )
        })
        .collect()
}

/// `?backfill=ID`: the events are copies sent by `replicator backfill`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IntakeQuery {
    backfill: Option<u64>,
}

pub async fn post_events(
    State(app): State<Arc<AppState>>,
    Query(query): Query<IntakeQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let metrics = &app.telemetry.metrics;
    let backfill = match query
        .backfill
        .map(|id| app.pipeline.backfills.tag(id))
        .transpose()
    {
        Ok(tag) => tag,
        Err(e) => return (StatusCode::CONFLICT, Json(json!({"error": e}))).into_response(),
    };
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl") || ct.contains("json-seq"));
    let events = match parse_body(&body, ndjson) {
        Ok(e) => e,
        Err((error, items)) => {
            metrics.rejected.inc_by(items.len().max(1) as u64);
            return (
                StatusCode::BAD_REQUEST,
                Json(json!({"error": error, "items": items})),
            )
                .into_response();
        }
    };
    let budget = app.config.journal.max_bytes;
    if app.journal.live_bytes() + body.len() as u64 > budget {
        metrics.rejected.inc_by(events.len() as u64);
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Json(json!({"error": format!(
                "the journal holds {} bytes of undelivered events, over its budget of {budget} (journal.maxBytes); retry later",
                app.journal.live_bytes()
            )})),
        )
            .into_response();
    }
    let n = events.len();
    let received_at = chrono::Utc::now().timestamp_millis();
    match app.journal.append(events, received_at, backfill).await {
        Ok(range) => {
            metrics.accepted.inc_by(n as u64);
            metrics
                .intake_to_journal
                .observe(started.elapsed().as_secs_f64());
            let sequences: Vec<u64> = range.collect();
            (
                StatusCode::ACCEPTED,
                Json(json!({"accepted": n, "sequences": sequences})),
            )
                .into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, "cannot make events durable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                Json(json!({"error": e.to_string()})),
            )
                .into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_array_and_ndjson() {
        let one = br#"{"resource":"u","action":"insert","id":"1","data":{}}"#;
        assert_eq!(parse_body(one, false).unwrap().len(), 1);
        let arr = br#"[{"resource":"u","action":"insert","id":"1","data":{}},{"resource":"u","action":"delete","id":"1"}]"#;
        assert_eq!(parse_body(arr, false).unwrap().len(), 2);
        let nd = b"{\"resource\":\"u\",\"action\":\"insert\",\"id\":\"1\",\"data\":{}}\n\n{\"resource\":\"u\",\"action\":\"delete\",\"id\":\"1\"}\n";
        assert_eq!(
            parse_body(nd, false).unwrap().len(),
            2,
            "detected without a content type"
        );
    }

    #[test]
    fn a_bad_item_rejects_the_batch_and_is_named() {
        let nd = b"{\"resource\":\"u\",\"action\":\"insert\",\"id\":\"1\",\"data\":{}}\n{\"resource\":\"u\",\"action\":\"upsert\",\"id\":\"2\"}\nnot json\n";
        let (msg, items) = parse_body(nd, true).unwrap_err();
        assert_eq!(msg, "2 of 3 events are invalid; none were accepted");
        assert_eq!(items[0].index, 1);
        assert_eq!(items[0].line, Some(2));
        assert!(items[0].errors[0].contains("unknown action \"upsert\""));
        assert_eq!(items[1].line, Some(3));
    }
}
