//! The HTTP service put together: each feature's routes, the token check on `/v1`, the body
//! limit, and serving until a signal (graceful shutdown).

use axum::extract::DefaultBodyLimit;
use axum::routing::get;
use axum::{Json, Router, middleware};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::http::{ApiDoc, AppState, require_token};
use crate::journal::Journal;
use crate::pipeline::Pipeline;
use crate::pipeline::telemetry::Telemetry;
use crate::{admin, intake};

/// The whole HTTP API and its OpenAPI description, both made from the features' routers.
pub fn router(state: Arc<AppState>) -> Router {
    let (api, description) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(intake::router())
        .merge(admin::api_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .merge(admin::probes_router())
        .split_for_parts();
    let description = Arc::new(description);
    api.route(
        "/v1/openapi.json",
        get(move || async move { Json(description.as_ref().clone()) }),
    )
    .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
    .with_state(state)
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
        let destination = r.driver_config.describe();
        tracing::info!(replicator = %r.id, driver = r.driver_config.kind().name(), %destination, "replicator configured");
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
