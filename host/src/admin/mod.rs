//! Monitoring and administration over HTTP: status, dead letters, the replication log,
//! replay, backfills, the SSE stream, Prometheus metrics, health checks, and the OpenAPI
//! description of the whole API (made from the handlers' own annotations).

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use std::convert::Infallible;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tokio_stream::wrappers::BroadcastStream;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::routes;

use crate::capture::stats::{Captured, PassReport, SourceState};
use crate::cluster::{Cluster, ClusterError};
use crate::delivery::RouteIndex;
use crate::event::{Event, StoredEvent};
use crate::http::{ApiError, ApiJson, ApiPath, ApiQuery, AppState, ErrorBody, FeatureRouter};
use crate::journal::{Backfill, DeadLetter, DeadLetterFilter, LogEntry, LogFilter, LogStatus};
use crate::pipeline::telemetry::{MonitorEvent, State as ReplicatorState, lag_seconds};
use crate::plugins::live::{PluginStatus, Reload};

/// The `/v1` monitoring and administration routes (behind the token when one is set).
pub fn api_router() -> FeatureRouter {
    FeatureRouter::new()
        .routes(routes!(status))
        .routes(routes!(dlq_list))
        .routes(routes!(dlq_redrive))
        .routes(routes!(dlq_discard))
        .routes(routes!(dlq_show))
        .routes(routes!(log))
        .routes(routes!(replay))
        .routes(routes!(stream))
        .routes(routes!(backfill_list, backfill_start))
        .routes(routes!(backfill_finish))
        .routes(routes!(recent_events))
        .routes(routes!(plugins_reload))
}

/// Probes and metrics, open to the host's own monitoring.
pub fn probes_router() -> FeatureRouter {
    FeatureRouter::new()
        .routes(routes!(metrics))
        .routes(routes!(healthz))
        .routes(routes!(readyz))
}

/// Every `/v1` answer may be one of these besides its own.
const UNAUTHORIZED: &str = "A token is configured and the request lacks it";

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicatorStatus {
    pub id: String,
    pub driver: &'static str,
    pub state: ReplicatorState,
    pub delivered: u64,
    /// Failed attempts (a record retried three times counts three).
    pub failed: u64,
    pub skipped: u64,
    pub dead_lettered: u64,
    /// Events accepted and not yet done by this replicator.
    pub backlog: u64,
    /// Age of the oldest event it has not finished (in cluster mode: on any host alive).
    pub lag_seconds: f64,
    pub cursor: u64,
    pub last_error: Option<String>,
    /// What the destination says when it is not healthy (Wasm drivers' `health`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_health: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JournalStatus {
    pub head: u64,
    pub oldest_retained: u64,
    pub live_bytes: u64,
    pub max_bytes: u64,
}

/// A change capture source (`sources` in the config).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SourceStatus {
    pub id: String,
    /// `notifications`, `poll` or `notifications+poll`.
    pub mode: &'static str,
    pub state: SourceState,
    /// Changes journaled, by action.
    pub captured: Captured,
    /// What it looked at and did not journal, by reason (`unchanged`, `stale`,
    /// `not_a_record`, `plugin_resource`...).
    pub skipped: std::collections::BTreeMap<&'static str, u64>,
    /// From the last captured change's last-modified time to its being durable.
    pub lag_seconds: f64,
    pub last_error: Option<String>,
    /// The last complete polling pass.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_pass: Option<PassReport>,
}

/// A host of the cluster, as its last heartbeat tells.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostStatus {
    pub host_id: String,
    pub started_at: String,
    /// Seconds since its last heartbeat.
    pub seen_seconds_ago: f64,
    /// Whether it wrote a heartbeat within the last three periods.
    pub alive: bool,
    /// What it does for each replicator.
    pub replicators: std::collections::BTreeMap<String, HostReplicator>,
}

/// One replicator's work on one host.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct HostReplicator {
    /// Messages received and not yet done.
    pub held: u64,
    /// Age of the oldest of them.
    pub lag_seconds: f64,
}

/// Cluster mode: this host, the hosts seen, and the intake queue.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterStatus {
    pub host_id: String,
    pub hosts: Vec<HostStatus>,
    /// Events in the intake queue, not yet versioned and fanned out.
    pub intake_backlog: u64,
    /// The last failure of each failing cluster task of this host (sequencer, feeds,
    /// forwarder, heartbeat).
    pub last_error: Option<String>,
    /// Set when the state database did not answer: dead-letter counts and hosts are missing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state_error: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct Status {
    /// Set in cluster mode; `backlog` of each replicator is then its queue's depth.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<ClusterStatus>,
    pub replicators: Vec<ReplicatorStatus>,
    pub sources: Vec<SourceStatus>,
    /// Every Wasm transform and driver, with the version running.
    pub plugins: Vec<PluginStatus>,
    pub journal: JournalStatus,
}

/// Where every replicator and every change capture source stands, and the journal.
#[utoipa::path(get, path = "/v1/status", tag = "admin",
    responses((status = 200, body = Status), (status = 401, description = UNAUTHORIZED, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn status(State(app): State<Arc<AppState>>) -> Result<Json<Status>, ApiError> {
    use std::sync::atomic::Ordering::Relaxed;
    let head = app.journal.head();
    // Status stays whole when the state database is away: that is when it is needed.
    let mut state_error = None;
    let dead_letters = match &app.cluster {
        Some(c) => c.state.dead_letter_counts().await.unwrap_or_else(|e| {
            state_error = Some(e.to_string());
            Default::default()
        }),
        None => app.journal.dead_letter_counts().await?,
    };
    let now = chrono::Utc::now().timestamp_millis();
    // Asked together: each may take up to its 2 s.
    let healths = futures::future::join_all(
        app.pipeline
            .replicators()
            .iter()
            .map(|r| r.destination_health()),
    )
    .await;
    let cluster = match &app.cluster {
        Some(c) => Some(cluster_status(c, now, state_error).await),
        None => None,
    };
    let mut replicators = Vec::new();
    for (r, destination_health) in app.pipeline.replicators().iter().zip(healths) {
        let s = &r.stats;
        let oldest = s.oldest_pending_ms.load(Relaxed) as i64;
        replicators.push(ReplicatorStatus {
            id: r.id.clone(),
            driver: r.driver.name(),
            state: s.state(),
            delivered: s.delivered.load(Relaxed),
            failed: s.failed.load(Relaxed),
            skipped: s.skipped.load(Relaxed),
            dead_lettered: dead_letters.get(&r.id).copied().unwrap_or(0),
            backlog: match &app.cluster {
                Some(c) => c.backlog(&r.id),
                None => head.saturating_sub(s.cursor()),
            },
            lag_seconds: cluster.as_ref().map_or(lag_seconds(oldest, now), |c| {
                c.hosts
                    .iter()
                    .filter(|h| h.alive)
                    .filter_map(|h| h.replicators.get(&r.id))
                    .map(|w| w.lag_seconds)
                    .fold(lag_seconds(oldest, now), f64::max)
            }),
            cursor: s.cursor(),
            last_error: s.last_error(),
            destination_health,
        });
    }
    let sources = app
        .sources
        .handles()
        .iter()
        .map(|h| SourceStatus {
            id: h.id.clone(),
            mode: h.mode,
            state: h.stats.state(),
            captured: h.stats.captured(),
            skipped: h.stats.skipped(),
            lag_seconds: h.stats.lag_seconds(),
            last_error: h.stats.last_error(),
            last_pass: h.stats.last_pass(),
        })
        .collect();
    let plugins = app
        .pipeline
        .plugins
        .as_ref()
        .map(|p| p.status())
        .unwrap_or_default();
    Ok(Json(Status {
        cluster,
        replicators,
        sources,
        plugins,
        journal: JournalStatus {
            head,
            oldest_retained: app.journal.first_retained().await?,
            live_bytes: app.journal.live_bytes(),
            max_bytes: app.config.journal.max_bytes,
        },
    }))
}

/// How long a host that stopped writing heartbeats stays in status.
const FORGET_HOSTS_AFTER_MS: i64 = 24 * 3600 * 1000;

async fn cluster_status(c: &Cluster, now: i64, state_error: Option<String>) -> ClusterStatus {
    let alive_within = 3 * crate::cluster::HEARTBEAT.as_millis() as i64;
    let (heartbeats, state_error) = match c.state.hosts().await {
        Ok(h) => (h, state_error),
        Err(e) => (Vec::new(), Some(e.to_string())),
    };
    let hosts = heartbeats
        .into_iter()
        // Hosts gone for a day (restarted under a new id, or killed) are no longer listed.
        .filter(|h| now - h.seen_at_ms < FORGET_HOSTS_AFTER_MS)
        .map(|h| HostStatus {
            alive: now - h.seen_at_ms <= alive_within,
            seen_seconds_ago: (now - h.seen_at_ms).max(0) as f64 / 1000.0,
            host_id: h.host_id,
            started_at: h.started_at,
            replicators: h
                .replicators
                .into_iter()
                .map(|(id, w)| {
                    let work = HostReplicator {
                        held: w.held,
                        lag_seconds: lag_seconds(w.oldest_pending_ms, now),
                    };
                    (id, work)
                })
                .collect(),
        })
        .collect();
    ClusterStatus {
        host_id: c.config.host_id.clone(),
        hosts,
        intake_backlog: c.backlog(""),
        last_error: c.last_error(),
        state_error,
    }
}

/// Query of `GET /v1/dlq` (no `flatten`: query strings carry numbers as text).
#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct Listing {
    replicator: Option<String>,
    resource: Option<String>,
    /// The record id.
    id: Option<String>,
    /// A substring of the error message.
    error: Option<String>,
    /// At most this many (default 100).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeadLetters {
    pub dead_letters: Vec<DeadLetter>,
}

/// Dead letters, oldest first, filtered.
#[utoipa::path(get, path = "/v1/dlq", tag = "admin", params(Listing),
    responses((status = 200, body = DeadLetters), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn dlq_list(
    State(app): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<Listing>,
) -> Result<Json<DeadLetters>, ApiError> {
    let filter = DeadLetterFilter {
        replicator: q.replicator,
        resource: q.resource,
        id: q.id,
        error: q.error,
    };
    let limit = q.limit.unwrap_or(100);
    let dead_letters = match &app.cluster {
        Some(c) => c
            .state
            .dead_letters(&filter, limit)
            .await
            .map_err(ClusterError::from)?,
        None => app.journal.dead_letters(filter, limit).await?,
    };
    Ok(Json(DeadLetters { dead_letters }))
}

/// One dead letter, with its event and attempt history.
#[utoipa::path(get, path = "/v1/dlq/{id}", tag = "admin", params(("id" = u64, Path, description = "The dead letter's id")),
    responses((status = 200, body = DeadLetter), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody), (status = 404, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn dlq_show(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<DeadLetter>, ApiError> {
    let found = match &app.cluster {
        Some(c) => c.state.dead_letter(id).await.map_err(ClusterError::from)?,
        None => app.journal.dead_letter_by_id(id).await?,
    };
    match found {
        Some(d) => Ok(Json(d)),
        None => Err(ApiError::NotFound(format!("no dead letter {id}"))),
    }
}

/// Which dead letters a redrive or discard applies to: explicit ids, a filter, or `all`.
#[derive(Deserialize, Default, ToSchema)]
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
        let list = match &app.cluster {
            Some(c) => c
                .state
                .dead_letters(&self.filter, usize::MAX)
                .await
                .map_err(ClusterError::from)?,
            None => app.journal.dead_letters(self.filter, usize::MAX).await?,
        };
        Ok(list.into_iter().map(|d| d.id).collect())
    }
}

#[derive(Serialize, ToSchema)]
pub struct Redriven {
    pub redriven: usize,
    pub ids: Vec<u64>,
}

/// Queues dead letters again; each keeps its place behind its key's current events.
#[utoipa::path(post, path = "/v1/dlq/redrive", tag = "admin", request_body = Selection,
    responses((status = 200, body = Redriven), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn dlq_redrive(
    State(app): State<Arc<AppState>>,
    ApiJson(sel): ApiJson<Selection>,
) -> Result<Json<Redriven>, ApiError> {
    let ids = sel.resolve(&app).await?;
    // In cluster mode a dead letter goes back to its replicator's queue, for any host.
    if let Some(c) = &app.cluster {
        let ids = c.redrive(&ids).await?;
        return Ok(Json(Redriven {
            redriven: ids.len(),
            ids,
        }));
    }
    let moved = app.journal.redrive(ids).await?;
    let ids: Vec<u64> = moved.iter().map(|d| d.id).collect();
    app.pipeline.redrive(moved).await;
    Ok(Json(Redriven {
        redriven: ids.len(),
        ids,
    }))
}

#[derive(Serialize, ToSchema)]
pub struct Discarded {
    pub discarded: usize,
}

/// Deletes dead letters.
#[utoipa::path(post, path = "/v1/dlq/discard", tag = "admin", request_body = Selection,
    responses((status = 200, body = Discarded), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn dlq_discard(
    State(app): State<Arc<AppState>>,
    ApiJson(sel): ApiJson<Selection>,
) -> Result<Json<Discarded>, ApiError> {
    let ids = sel.resolve(&app).await?;
    let discarded = match &app.cluster {
        Some(c) => c.state.discard(&ids).await.map_err(ClusterError::from)?,
        None => app.journal.discard(ids).await?,
    };
    Ok(Json(Discarded { discarded }))
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    replicator: Option<String>,
    resource: Option<String>,
    status: Option<LogStatus>,
    /// The record id.
    id: Option<String>,
    /// At most this many (default 100).
    limit: Option<usize>,
}

#[derive(Serialize, ToSchema)]
pub struct LogEntries {
    pub entries: Vec<LogEntry>,
}

/// The replication log, newest first.
#[utoipa::path(get, path = "/v1/log", tag = "admin", params(LogQuery),
    responses((status = 200, body = LogEntries), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn log(
    State(app): State<Arc<AppState>>,
    ApiQuery(q): ApiQuery<LogQuery>,
) -> Result<Json<LogEntries>, ApiError> {
    let filter = LogFilter {
        replicator: q.replicator,
        resource: q.resource,
        status: q.status,
        id: q.id,
    };
    let entries = app.journal.logs(filter, q.limit.unwrap_or(100)).await?;
    Ok(Json(LogEntries { entries }))
}

/// Where a replay starts: exactly one of the two.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Replay {
    from_sequence: Option<u64>,
    /// ISO-8601: replay events accepted at or after this time.
    from_time: Option<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replaying {
    pub replicator: String,
    pub from_sequence: u64,
}

/// Delivers again, for one replicator, every event from a sequence or a time on.
#[utoipa::path(post, path = "/v1/replicators/{id}/replay", tag = "admin", request_body = Replay,
    params(("id" = String, Path, description = "The replicator's id")),
    responses((status = 200, body = Replaying), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 409, description = "Paused, or the sequence is no longer kept", body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn replay(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiJson(r): ApiJson<Replay>,
) -> Result<Json<Replaying>, ApiError> {
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
    Ok(Json(Replaying {
        replicator: id,
        from_sequence: from,
    }))
}

/// Server-sent events as they happen: `replicated`, `replicator_error`, `replicator_log_error`,
/// `dead_lettered`, `redriven`... (the event name), each a JSON monitoring event.
#[utoipa::path(get, path = "/v1/stream", tag = "monitoring",
    responses((status = 200, description = "An endless stream of server-sent events", body = MonitorEvent, content_type = "text/event-stream"),
        (status = 401, description = UNAUTHORIZED, body = ErrorBody)),
    security((), ("bearer" = [])))]
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

/// Prometheus metrics (OpenMetrics text).
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, body = String, content_type = "application/openmetrics-text")))]
pub async fn metrics(State(app): State<Arc<AppState>>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.telemetry.metrics.encode(),
    )
        .into_response()
}

/// The process is up.
#[utoipa::path(get, path = "/healthz", tag = "monitoring",
    responses((status = 200, body = String, content_type = "text/plain")))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// The journal is open and every running replicator has initialised its destination.
#[utoipa::path(get, path = "/readyz", tag = "monitoring",
    responses((status = 200, body = String, content_type = "text/plain"),
        (status = 503, description = "Replicators still initialising, named", body = ErrorBody)))]
pub async fn readyz(State(app): State<Arc<AppState>>) -> Response {
    if app.pipeline.ready() {
        return (StatusCode::OK, "ready").into_response();
    }
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
    let error = ErrorBody {
        error: format!("replicators still initialising: {}", waiting.join(", ")),
        items: None,
    };
    (StatusCode::SERVICE_UNAVAILABLE, Json(error)).into_response()
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackfillStart {
    /// Replicators the copies go to (all when empty).
    #[serde(default)]
    replicators: Vec<String>,
    /// Where the copies are read from (shown with secrets masked).
    source: String,
}

/// Starts a backfill: copies posted with `?backfill=ID` yield to live events from now on.
#[utoipa::path(post, path = "/v1/backfills", tag = "admin", request_body = BackfillStart,
    responses((status = 201, body = Backfill), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn backfill_start(
    State(app): State<Arc<AppState>>,
    ApiJson(b): ApiJson<BackfillStart>,
) -> Result<(StatusCode, Json<Backfill>), ApiError> {
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

/// Marks a backfill's last copy sent.
#[utoipa::path(post, path = "/v1/backfills/{id}/finish", tag = "admin",
    params(("id" = u64, Path, description = "The backfill's id")),
    responses((status = 200, body = Backfill), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody), (status = 404, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn backfill_finish(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<u64>,
) -> Result<Json<Backfill>, ApiError> {
    match app.pipeline.backfills.finish(id).await? {
        Some(b) => Ok(Json(b)),
        None => Err(ApiError::NotFound(format!("no backfill {id}"))),
    }
}

#[derive(Serialize, ToSchema)]
pub struct Backfills {
    pub backfills: Vec<Backfill>,
}

/// Backfills that are running or whose copies are still being delivered.
#[utoipa::path(get, path = "/v1/backfills", tag = "admin",
    responses((status = 200, body = Backfills), (status = 401, description = UNAUTHORIZED, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn backfill_list(State(app): State<Arc<AppState>>) -> Json<Backfills> {
    Json(Backfills {
        backfills: app.pipeline.backfills.list(),
    })
}

#[derive(Deserialize, Default, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct RecentQuery {
    /// How many (default 20, at most 1000).
    last: Option<usize>,
}

/// An event from the journal, as it was accepted.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecentEvent {
    #[serde(flatten)]
    pub event: Event,
    pub sequence: u64,
    /// The destinations of the replicator's routes that take it.
    pub destinations: Vec<String>,
}

#[derive(Serialize, ToSchema)]
pub struct RecentEvents {
    /// Oldest first.
    pub events: Vec<RecentEvent>,
}

/// Events read back from the journal per request, and the most one request looks at.
const READ_BACK_PAGE: usize = 1000;
const READ_BACK_LIMIT: usize = 100_000;

/// The last events the journal holds for a replicator's routes (the input its transforms
/// see), for `replicator plugin run --replicator`. Looks at the newest 100,000 events at most.
#[utoipa::path(get, path = "/v1/replicators/{id}/events", tag = "admin", params(("id" = String, Path, description = "The replicator's id"), RecentQuery),
    responses((status = 200, body = RecentEvents), (status = 400, body = ErrorBody), (status = 401, description = UNAUTHORIZED, body = ErrorBody),
        (status = 404, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn recent_events(
    State(app): State<Arc<AppState>>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<RecentQuery>,
) -> Result<Json<RecentEvents>, ApiError> {
    let want = q.last.unwrap_or(20);
    if !(1..=1000).contains(&want) {
        return Err(ApiError::BadRequest(format!(
            "last must be 1 to 1000, found {want}"
        )));
    }
    let replicator = app
        .config
        .replicators
        .iter()
        .find(|r| r.id == id)
        .ok_or_else(|| ApiError::NotFound(format!("no replicator named \"{id}\"")))?;
    let index = RouteIndex::new(&replicator.routes);
    let mut found = Vec::new();
    let mut before = app.journal.head() + 1;
    let mut looked = 0;
    while found.len() < want && looked < READ_BACK_LIMIT {
        let page: Vec<StoredEvent> = app.journal.read_before(before, READ_BACK_PAGE).await?;
        let Some(oldest) = page.last().map(|e| e.sequence) else {
            break;
        };
        looked += page.len();
        before = oldest;
        for stored in page {
            let e = &stored.event;
            let routes = index.routes_of(&e.resource, e.action).unwrap_or_default();
            if routes.is_empty() {
                continue;
            }
            found.push(RecentEvent {
                destinations: routes
                    .iter()
                    .map(|r| replicator.routes[*r].destination.clone())
                    .collect(),
                sequence: stored.sequence,
                event: stored.event,
            });
            if found.len() == want {
                break;
            }
        }
    }
    found.reverse();
    Ok(Json(RecentEvents { events: found }))
}

#[derive(Serialize, ToSchema)]
pub struct Reloads {
    /// One entry per plugin a replicator runs.
    pub plugins: Vec<Reload>,
}

/// Loads again every plugin whose file changed: each new version is compiled, checked against
/// its world and its config, and swapped in between batches; a version that fails is refused
/// with the reason and the running one stays.
#[utoipa::path(post, path = "/v1/plugins/reload", tag = "admin",
    responses((status = 200, body = Reloads), (status = 401, description = UNAUTHORIZED, body = ErrorBody)),
    security((), ("bearer" = [])))]
pub async fn plugins_reload(State(app): State<Arc<AppState>>) -> Json<Reloads> {
    let plugins = match &app.pipeline.plugins {
        Some(p) => p.reload(None).await,
        None => Vec::new(),
    };
    Json(Reloads { plugins })
}
