//! The HTTP service: shared state, routes, the bearer-token check, and graceful shutdown.

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config::Config;
use crate::intake;
use crate::journal::Journal;
use crate::pipeline::Pipeline;
use crate::pipeline::telemetry::Telemetry;

pub struct AppState {
    pub config: Config,
    pub journal: Arc<Journal>,
    pub pipeline: Pipeline,
    pub telemetry: Arc<Telemetry>,
    /// Cancelled at shutdown so long-lived responses (the SSE stream) end.
    pub shutdown: CancellationToken,
}

pub fn router(state: Arc<AppState>) -> Router {
    let api = Router::new()
        .route("/v1/events", post(intake::post_events))
        .route("/v1/status", get(admin::status))
        .route("/v1/dlq", get(admin::dlq_list))
        .route("/v1/dlq/redrive", post(admin::dlq_redrive))
        .route("/v1/dlq/discard", post(admin::dlq_discard))
        .route("/v1/dlq/{id}", get(admin::dlq_show))
        .route("/v1/log", get(admin::log))
        .route("/v1/replicators/{id}/replay", post(admin::replay))
        .route("/v1/stream", get(admin::stream))
        .route(
            "/v1/backfills",
            get(admin::backfill_list).post(admin::backfill_start),
        )
        .route("/v1/backfills/{id}/finish", post(admin::backfill_finish))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(api)
        .route("/metrics", get(admin::metrics))
        .route("/healthz", get(admin::healthz))
        .route("/readyz", get(admin::readyz))
        .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
        .with_state(state)
}

/// With `server.token` set, every `/v1` call needs `Authorization: Bearer <token>`.
async fn require_token(State(app): State<Arc<AppState>>, request: Request, next: Next) -> Response {
    if let Some(token) = &app.config.server.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok = given.is_some_and(|g| constant_time_eq(g.as_bytes(), token.expose().as_bytes()));
        if !ok {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                axum::Json(serde_json::json!({"error": "missing or wrong bearer token"})),
            )
                .into_response();
        }
    }
    next.run(request).await
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Opens the journal, starts the pipeline and serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let journal = Journal::open(&config.journal.path, config.journal.cache_bytes as usize)?;
    let telemetry = Arc::new(Telemetry::new(config.verbose));
    let pipeline = Pipeline::start(&config, journal.clone(), telemetry.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.server.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.server.listen))?;
    tracing::info!(
        listen = %config.server.listen,
        journal = %config.journal.path.display(),
        head = journal.head(),
        replicators = config.replicators.len(),
        "replicator serving"
    );
    for r in &config.replicators {
        if let crate::config::DriverConfig::S3db(c) = &r.driver_config {
            tracing::info!(replicator = %r.id, destination = %c.connection.shown, "s3db replicator");
        }
    }
    if config.replicators.is_empty() {
        tracing::warn!(
            "no replicators configured: events are accepted and journaled, then discarded after journal.retention; \
             start with --config FILE (see README: Configuration) to deliver them"
        );
    }
    let shutdown = CancellationToken::new();
    let state = Arc::new(AppState {
        config,
        journal,
        pipeline,
        telemetry,
        shutdown: shutdown.clone(),
    });
    axum::serve(listener, router(state.clone()))
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            shutdown.cancel();
        })
        .await?;
    state.pipeline.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
    tracing::info!("shutting down");
}
