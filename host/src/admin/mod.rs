//! Monitoring and administration over HTTP: status, dead letters, the replication log,
//! replay, the SSE stream, Prometheus metrics and health checks.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::convert::Infallible;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::journal::{DeadLetterFilter, LogFilter, LogStatus};
use crate::pipeline::PipelineError;
use crate::pipeline::telemetry::State as ReplicatorState;
use crate::server::AppState;

fn error(status: StatusCode, message: impl ToString) -> Response {
    (status, Json(json!({"error": message.to_string()}))).into_response()
}

fn internal(e: impl ToString) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, e)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatorStatus {
    pub id: String,
    pub driver: &'static str,
    pub state: ReplicatorState,
    pub delivered: u64,
    pub failed: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    pub backlog: u64,
    pub lag_seconds: f64,
    pub cursor: u64,
    pub last_error: Option<String>,
    /// What the destination says when it is not healthy (Wasm drivers' `health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_health: Option<String>,
}

pub async fn status(State(app): State<Arc<AppState>>) -> Response {
    use std::sync::atomic::Ordering::Relaxed;
    let head = app.journal.head();
    let now = chrono::Utc::now().timestamp_millis();
    let mut list = Vec::new();
    // Asked together: each may take up to its 2 s.
    let healths = futures::future::join_all(
        app.pipeline
            .replicators()
            .iter()
            .map(|r| r.destination_health()),
    )
    .await;
    for (r, destination_health) in app.pipeline.replicators().iter().zip(healths) {
        let s = &r.stats;
        let oldest = s.oldest_pending_ms.load(Relaxed) as i64;
        list.push(ReplicatorStatus {
            id: r.id.clone(),
            driver: r.driver.name(),
            state: s.state(),
            delivered: s.delivered.load(Relaxed),
            failed: s.failed.load(Relaxed),
            skipped: s.skipped.load(Relaxed),
            dead_lettered: match app.journal.dead_letter_count(&r.id) {
                Ok(n) => n,
                Err(e) => return internal(e),
            },
            backlog: head.saturating_sub(s.cursor()),
            lag_seconds: if oldest > 0 {
                (now - oldest).max(0) as f64 / 1000.0
            } else {
                0.0
            },
            cursor: s.cursor(),
            last_error: s.last_error(),
            destination_health,
        });
    }
    let oldest = app.journal.first_retained().unwrap_or(0);
    Json(json!({
        "replicators": list,
        "journal": {"head": head, "oldestRetained": oldest, "liveBytes": app.journal.live_bytes(), "maxBytes": app.config.journal.max_bytes},
    }))
    .into_response()
}

/// Query of `GET /v1/dlq` (no `flatten`: query strings carry numbers as text).
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Listing {
    replicator: Option<String>,
    resource: Option<String>,
    id: Option<String>,
    error: Option<String>,
    limit: Option<usize>,
}

pub async fn dlq_list(State(app): State<Arc<AppState>>, Query(q): Query<Listing>) -> Response {
    let filter = DeadLetterFilter {
        replicator: q.replicator,
        resource: q.resource,
        id: q.id,
        error: q.error,
    };
    match app.journal.dead_letters(&filter, q.limit.unwrap_or(100)) {
        Ok(list) => Json(json!({"deadLetters": list})).into_response(),
        Err(e) => internal(e),
    }
}

pub async fn dlq_show(State(app): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    match app.journal.dead_letter_by_id(id) {
        Ok(Some(d)) => Json(d).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no dead letter {id}")),
        Err(e) => internal(e),
    }
}

/// Which dead letters a redrive or discard applies to: explicit ids, a filter, or `all`.
#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Selection {
    #[serde(default)]
    ids: Vec<u64>,
    #[serde(flatten)]
    filter: DeadLetterFilter,
    #[serde(default)]
    all: bool,
}

impl Selection {
    fn resolve(&self, app: &AppState) -> Result<Vec<u64>, Box<Response>> {
        let f = &self.filter;
        let has_filter =
            f.replicator.is_some() || f.resource.is_some() || f.id.is_some() || f.error.is_some();
        if !self.ids.is_empty() {
            return Ok(self.ids.clone());
        }
        if !has_filter && !self.all {
            return Err(Box::new(error(
                StatusCode::BAD_REQUEST,
                "name dead letters by \"ids\", a filter (replicator, resource, id, error) or \"all\": true",
            )));
        }
        app.journal
            .dead_letters(f, usize::MAX)
            .map(|l| l.into_iter().map(|d| d.id).collect())
            .map_err(|e| Box::new(internal(e)))
    }
}

pub async fn dlq_redrive(State(app): State<Arc<AppState>>, Json(sel): Json<Selection>) -> Response {
    let ids = match sel.resolve(&app) {
        Ok(ids) => ids,
        Err(r) => return *r,
    };
    match app.journal.redrive(ids).await {
        Ok(moved) => {
            let n = moved.len();
            let ids: Vec<u64> = moved.iter().map(|d| d.id).collect();
            app.pipeline.redrive(moved).await;
            Json(json!({"redriven": n, "ids": ids})).into_response()
        }
        Err(e) => internal(e),
    }
}

pub async fn dlq_discard(State(app): State<Arc<AppState>>, Json(sel): Json<Selection>) -> Response {
    let ids = match sel.resolve(&app) {
        Ok(ids) => ids,
        Err(r) => return *r,
    };
    match app.journal.discard(ids).await {
        Ok(n) => Json(json!({"discarded": n})).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    replicator: Option<String>,
    resource: Option<String>,
    status: Option<LogStatus>,
    id: Option<String>,
    limit: Option<usize>,
}

pub async fn log(State(app): State<Arc<AppState>>, Query(q): Query<LogQuery>) -> Response {
    let filter = LogFilter {
        replicator: q.replicator,
        resource: q.resource,
        status: q.status,
        id: q.id,
    };
    match app.journal.logs(&filter, q.limit.unwrap_or(100)) {
        Ok(list) => Json(json!({"entries": list})).into_response(),
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replay {
    from_sequence: Option<u64>,
    /// ISO-8601: replay events accepted at or after this time.
    from_time: Option<String>,
}

pub async fn replay(
    State(app): State<Arc<AppState>>,
    Path(id): Path<String>,
    Json(r): Json<Replay>,
) -> Response {
    let from = match (r.from_sequence, r.from_time) {
        (Some(seq), None) => seq,
        (None, Some(t)) => {
            let Ok(at) = chrono::DateTime::parse_from_rfc3339(&t) else {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("fromTime must be ISO-8601, found \"{t}\""),
                );
            };
            match app.journal.sequence_at(at.timestamp_millis()) {
                Ok(Some(seq)) => seq,
                Ok(None) => app.journal.head() + 1,
                Err(e) => return internal(e),
            }
        }
        _ => {
            return error(
                StatusCode::BAD_REQUEST,
                "give exactly one of fromSequence and fromTime",
            );
        }
    };
    match app.pipeline.replay(&id, from).await {
        Ok(()) => Json(json!({"replicator": id, "fromSequence": from})).into_response(),
        Err(e @ PipelineError::UnknownReplicator(_)) => error(StatusCode::NOT_FOUND, e),
        Err(e @ (PipelineError::Pruned { .. } | PipelineError::Paused(_))) => {
            error(StatusCode::CONFLICT, e)
        }
        Err(e) => internal(e),
    }
}

pub async fn stream(
    State(app): State<Arc<AppState>>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let events = BroadcastStream::new(app.telemetry.monitor.subscribe()).filter_map(|m| {
        // A slow reader misses events rather than slowing replication.
        let m = m.ok()?;
        Some(Ok(SseEvent::default()
            .event(m.name)
            .json_data(&m)
            .expect("monitor events serialize")))
    });
    let events = futures::StreamExt::take_until(events, app.shutdown.clone().cancelled_owned());
    Sse::new(events).keep_alive(KeepAlive::default())
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.telemetry.metrics.encode(),
    )
        .into_response()
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.pipeline.ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        let waiting: Vec<&str> = app
            .pipeline
            .replicators()
            .iter()
            .filter(|r| {
                !r.stats
                    .initialised
                    .load(std::sync::atomic::Ordering::Relaxed)
            })
            .map(|r| r.id.as_str())
            .collect();
        error(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("replicators still initialising: {}", waiting.join(", ")),
        )
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackfillStart {
    #[serde(default)]
    replicators: Vec<String>,
    source: String,
}

/// Starts a backfill: copies posted with `?backfill=ID` yield to live events from now on.
pub async fn backfill_start(
    State(app): State<Arc<AppState>>,
    Json(b): Json<BackfillStart>,
) -> Response {
    let known: Vec<&str> = app
        .pipeline
        .replicators()
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    if let Some(unknown) = b.replicators.iter().find(|r| !known.contains(&r.as_str())) {
        return error(
            StatusCode::BAD_REQUEST,
            format!(
                "no replicator named \"{unknown}\" (known: {})",
                known.join(", ")
            ),
        );
    }
    match app
        .pipeline
        .backfills
        .start(b.replicators, crate::redact::url(&b.source))
        .await
    {
        Ok(started) => (StatusCode::CREATED, Json(started)).into_response(),
        Err(e) => internal(e),
    }
}

pub async fn backfill_finish(State(app): State<Arc<AppState>>, Path(id): Path<u64>) -> Response {
    match app.pipeline.backfills.finish(id).await {
        Ok(Some(b)) => Json(b).into_response(),
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no backfill {id}")),
        Err(e) => internal(e),
    }
}

pub async fn backfill_list(State(app): State<Arc<AppState>>) -> Response {
    Json(json!({"backfills": app.pipeline.backfills.list()})).into_response()
}
