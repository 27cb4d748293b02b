//! `POST /v1/events`: parses one event, a JSON array or NDJSON, validates every item, and
//! answers 202 with the sequences only once the whole batch is durable in the journal.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;
use std::time::Instant;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::cluster::ClusterError;
use crate::event::{Event, ItemError, now_rfc3339, parse_event};
use crate::http::{ApiError, ApiQuery, AppState, ErrorBody, FeatureRouter};

pub fn router() -> FeatureRouter {
    FeatureRouter::new().routes(routes!(post_events))
}

/// The answer to an accepted batch.
#[derive(Debug, Serialize, ToSchema)]
pub struct Accepted {
    /// How many events were made durable.
    pub accepted: usize,
    /// The sequence given to each, in the order posted (empty in cluster mode, where
    /// versions are given when a host takes the events off the intake queue).
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
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct IntakeQuery {
    /// The backfill these copies belong to (`POST /v1/backfills` made it).
    backfill: Option<u64>,
}

/// Posts changes: one event, a JSON array of events, or NDJSON. Answers only once every event
/// is durable on disk; a batch with any invalid item is refused whole.
#[utoipa::path(
    post,
    path = "/v1/events",
    tag = "intake",
    params(IntakeQuery),
    request_body(
        description = "One event (the s3db.js envelope), a JSON array of events, or NDJSON (one event per line)",
        content(
            (Event = "application/json"),
            (Vec<Event> = "application/json"),
            (String = "application/x-ndjson")
        )
    ),
    responses(
        (status = 202, description = "Durable, with the sequences given", body = Accepted),
        (status = 400, description = "Invalid events (each named by index and reason); none accepted", body = ErrorBody),
        (status = 401, description = "A token is configured and the request lacks it", body = ErrorBody),
        (status = 409, description = "The backfill named is not running", body = ErrorBody),
        (status = 413, description = "The body is over server.maxBodyBytes"),
        (status = 503, description = "The journal is over its disk budget, or could not write; retry after Retry-After", body = ErrorBody),
    ),
    security((), ("bearer" = []))
)]
pub async fn post_events(
    State(app): State<Arc<AppState>>,
    ApiQuery(query): ApiQuery<IntakeQuery>,
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
    if let Some(cluster) = &app.cluster {
        let n = events.len();
        let received_at = chrono::Utc::now().timestamp_millis();
        cluster
            .accept(events, received_at, backfill)
            .await
            .map_err(|e| match e {
                ClusterError::TooLarge { index, .. } => ApiError::InvalidEvents {
                    message: "an event is too large for an SQS message; none were accepted".into(),
                    items: vec![ItemError {
                        index,
                        line: None,
                        errors: vec![e.to_string()],
                    }],
                },
                other => ApiError::NotQueued(other),
            })?;
        metrics.accepted.inc_by(n as u64);
        metrics
            .intake_to_journal
            .observe(started.elapsed().as_secs_f64());
        // Versions are given when a host takes the events off the intake queue.
        return Ok((
            StatusCode::ACCEPTED,
            Json(Accepted {
                accepted: n,
                sequences: Vec::new(),
            }),
        ));
    }
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
