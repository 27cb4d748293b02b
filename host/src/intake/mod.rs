//! `POST /v1/events`: parses one event, a JSON array or NDJSON, validates every item, and
//! answers 202 with the sequences only once the whole batch is durable in the journal.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::routing::post;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;

use crate::event::{Event, ItemError, now_rfc3339, parse_event};
use crate::http::{ApiError, AppState, FeatureRouter};

pub fn router() -> FeatureRouter {
    FeatureRouter::new().route("/v1/events", post(post_events))
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize)]
pub struct Accepted {
    pub accepted: usize,
    pub sequences: Vec<u64>,
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
) -> Result<(StatusCode, Json<Accepted>), ApiError> {
    let started = Instant::now();
    let metrics = &app.telemetry.metrics;
    let backfill = query
        .backfill
        .map(|id| app.pipeline.backfills.tag(id))
        .transpose()
        .map_err(ApiError::Conflict)?;
    let ndjson = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.contains("ndjson") || ct.contains("jsonl") || ct.contains("json-seq"));
    let events = parse_body(&body, ndjson).map_err(|(message, items)| {
        metrics.rejected.inc_by(items.len().max(1) as u64);
        ApiError::InvalidEvents { message, items }
    })?;
    let budget = app.config.journal.max_bytes;
    if app.journal.live_bytes() + body.len() as u64 > budget {
        metrics.rejected.inc_by(events.len() as u64);
        return Err(ApiError::OverBudget(format!(
            "the journal holds {} bytes of undelivered events, over its budget of {budget} (journal.maxBytes); retry later",
            app.journal.live_bytes()
        )));
    }
    let n = events.len();
    let received_at = chrono::Utc::now().timestamp_millis();
    let range = app
        .journal
        .append(events, received_at, backfill)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot make events durable");
            ApiError::NotDurable(e)
        })?;
    metrics.accepted.inc_by(n as u64);
    metrics
        .intake_to_journal
        .observe(started.elapsed().as_secs_f64());
    Ok((
        StatusCode::ACCEPTED,
        Json(Accepted {
            accepted: n,
            sequences: range.collect(),
        }),
    ))
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
