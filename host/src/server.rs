//! The HTTP service put together: each feature's routes, the token check on `/v1`, the body
//! limit, and serving until a signal (graceful shutdown).

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::http::{AppState, require_token};
use crate::journal::Journal;
use crate::pipeline::Pipeline;
use crate::pipeline::telemetry::Telemetry;
use crate::{admin, intake};

pub fn router(state: Arc<AppState>) -> Router {
    let api = intake::router()
        .merge(admin::api_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .merge(api)
        .merge(admin::probes_router())
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
