//! Monitoring and administration over HTTP: status, dead letters, the replication log,
//! replay, the SSE stream, Prometheus metrics and health checks.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::convert::Infallible;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;

use crate::http::{ApiError, AppState, FeatureRouter};
use crate::journal::{DeadLetterFilter, LogFilter, LogStatus};
use crate::pipeline::telemetry::{State as ReplicatorState, lag_seconds};

/// The `/v1` monitoring and administration routes (behind the token when one is set).
pub fn api_router() -> FeatureRouter {
    FeatureRouter::new()
        .route("/v1/status", get(status))
        .route("/v1/dlq", get(dlq_list))
        .route("/v1/dlq/redrive", post(dlq_redrive))
        .route("/v1/dlq/discard", post(dlq_discard))
        .route("/v1/dlq/{id}", get(dlq_show))
        .route("/v1/log", get(log))
        .route("/v1/replicators/{id}/replay", post(replay))
        .route("/v1/stream", get(stream))
        .route("/v1/backfills", get(backfill_list).post(backfill_start))
        .route("/v1/backfills/{id}/finish", post(backfill_finish))
}

/// Probes and metrics, open to the host's own monitoring.
pub fn probes_router() -> FeatureRouter {
    FeatureRouter::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
}

type Answer = Result<Json<Value>, ApiError>;

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

pub async fn status(State(app): State<Arc<AppState>>) -> Answer {
    use std::sync::atomic::Ordering::Relaxed;
    let head = app.journal.head();
    let dead_letters = app.journal.dead_letter_counts().await?;
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
            dead_lettered: dead_letters.get(&r.id).copied().unwrap_or(0),
            backlog: head.saturating_sub(s.cursor()),
            lag_seconds: lag_seconds(oldest, now),
            cursor: s.cursor(),
            last_error: s.last_error(),
            destination_health,
        });
    }
    let oldest = app.journal.first_retained().await?;
    Ok(Json(json!({
        "replicators": list,
        "journal": {"head": head, "oldestRetained": oldest, "liveBytes": app.journal.live_bytes(), "maxBytes": app.config.journal.max_bytes},
    })))
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

pub async fn dlq_list(State(app): State<Arc<AppState>>, Query(q): Query<Listing>) -> Answer {
    let filter = DeadLetterFilter {
        replicator: q.replicator,
        resource: q.resource,
        id: q.id,
        error: q.error,
    };
    let list = app
        .journal
        .dead_letters(filter, q.limit.unwrap_or(100))
        .await?;
    Ok(Json(json!({"deadLetters": list})))
}

pub async fn dlq_show(
    State(app): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Json<crate::journal::DeadLetter>, ApiError> {
    match app.journal.dead_letter_by_id(id).await? {
        Some(d) => Ok(Json(d)),
        None => Err(ApiError::NotFound(format!("no dead letter {id}"))),
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
    async fn resolve(self, app: &AppState) -> Result<Vec<u64>, ApiError> {
        let f = &self.filter;
        let has_filter =
            f.replicator.is_some() || f.resource.is_some() || f.id.is_some() || f.error.is_some();
        if !self.ids.is_empty() {
            return Ok(self.ids);
        }
        if !has_filter && !self.all {
            return Err(ApiError::BadRequest(
                "name dead letters by \"ids\", a filter (replicator, resource, id, error) or \"all\": true".into(),
            ));
        }
        let list = app.journal.dead_letters(self.filter, usize::MAX).await?;
        Ok(list.into_iter().map(|d| d.id).collect())
    }
}

pub async fn dlq_redrive(State(app): State<Arc<AppState>>, Json(sel): Json<Selection>) -> Answer {
    let ids = sel.resolve(&app).await?;
    let moved = app.journal.redrive(ids).await?;
    let n = moved.len();
    let ids: Vec<u64> = moved.iter().map(|d| d.id).collect();
    app.pipeline.redrive(moved).await;
    Ok(Json(json!({"redriven": n, "ids": ids})))
}

pub async fn dlq_discard(State(app): State<Arc<AppState>>, Json(sel): Json<Selection>) -> Answer {
    let ids = sel.resolve(&app).await?;
    let n = app.journal.discard(ids).await?;
    Ok(Json(json!({"discarded": n})))
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

pub async fn log(State(app): State<Arc<AppState>>, Query(q): Query<LogQuery>) -> Answer {
    let filter = LogFilter {
        replicator: q.replicator,
        resource: q.resource,
        status: q.status,
        id: q.id,
    };
    let list = app.journal.logs(filter, q.limit.unwrap_or(100)).await?;
    Ok(Json(json!({"entries": list})))
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
) -> Answer {
    let from = match (r.from_sequence, r.from_time) {
        (Some(seq), None) => seq,
        (None, Some(t)) => {
            let at = chrono::DateTime::parse_from_rfc3339(&t).map_err(|_| {
                ApiError::BadRequest(format!("fromTime must be ISO-8601, found \"{t}\""))
            })?;
            match app.journal.sequence_at(at.timestamp_millis()).await? {
                Some(seq) => seq,
                None => app.journal.head() + 1,
            }
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of fromSequence and fromTime".into(),
            ));
        }
    };
    app.pipeline.replay(&id, from).await?;
    Ok(Json(json!({"replicator": id, "fromSequence": from})))
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
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                json!({"error": format!("replicators still initialising: {}", waiting.join(", "))}),
            ),
        )
            .into_response()
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
) -> Result<(StatusCode, Json<crate::journal::Backfill>), ApiError> {
    let known: Vec<&str> = app
        .pipeline
        .replicators()
        .iter()
        .map(|r| r.id.as_str())
        .collect();
    if let Some(unknown) = b.replicators.iter().find(|r| !known.contains(&r.as_str())) {
        return Err(ApiError::BadRequest(format!(
            "no replicator named \"{unknown}\" (known: {})",
            known.join(", ")
        )));
    }
    let started = app
        .pipeline
        .backfills
        .start(b.replicators, crate::redact::url(&b.source))
        .await?;
    Ok((StatusCode::CREATED, Json(started)))
}

pub async fn backfill_finish(
    State(app): State<Arc<AppState>>,
    Path(id): Path<u64>,
) -> Result<Json<crate::journal::Backfill>, ApiError> {
    match app.pipeline.backfills.finish(id).await? {
        Some(b) => Ok(Json(b)),
        None => Err(ApiError::NotFound(format!("no backfill {id}"))),
    }
}

pub async fn backfill_list(State(app): State<Arc<AppState>>) -> Answer {
    Ok(Json(json!({"backfills": app.pipeline.backfills.list()})))
}
