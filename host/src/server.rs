//! The HTTP service put together: each feature's routes, the token check on `/v1`, the body
//! limit, and serving until a signal (graceful shutdown).

use axum::extract::DefaultBodyLimit;
use axum::http::header;
use axum::routing::get;
use axum::{Router, ServiceExt, middleware};
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tower::Layer;
use tower_http::normalize_path::{NormalizePath, NormalizePathLayer};
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;

use crate::capture::Sources;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::http::{ApiDoc, AppState, require_token};
use crate::journal::Journal;
use crate::pipeline::Pipeline;
use crate::pipeline::telemetry::{MonitorEvent, Telemetry};
use crate::{admin, intake};

/// The whole HTTP API and its OpenAPI description, both made from the features' routers.
pub fn router(state: Arc<AppState>) -> Router {
    let (api, description) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(intake::router())
        .merge(admin::api_router())
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token))
        .merge(admin::probes_router())
        .split_for_parts();
    // Serialized once: the description does not change while the host runs.
    let description = with_itself(description)
        .to_json()
        .expect("the OpenAPI description serializes");
    api.route(
        "/v1/openapi.json",
        get(move || async move {
            (
                [(header::CONTENT_TYPE, "application/json")],
                description.clone(),
            )
        }),
    )
    .layer(DefaultBodyLimit::max(state.config.server.max_body_bytes))
    .with_state(state)
}

/// The router as served: a trailing `/` is ignored (s3db.js's webhook driver posts to
/// `/v1/events/`), before routing, so the description's paths stay the only ones.
pub fn service(router: Router) -> NormalizePath<Router> {
    NormalizePathLayer::trim_trailing_slash().layer(router)
}

/// The description lists the route that serves it too.
fn with_itself(mut description: utoipa::openapi::OpenApi) -> utoipa::openapi::OpenApi {
    use utoipa::openapi::path::{HttpMethod, OperationBuilder, PathItem};
    use utoipa::openapi::{ContentBuilder, ObjectBuilder, ResponseBuilder};
    let operation = OperationBuilder::new()
        .tag("monitoring")
        .summary(Some("This OpenAPI description of the HTTP API"))
        .response(
            "200",
            ResponseBuilder::new().description("OpenAPI 3.1").content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(ObjectBuilder::new()))
                    .build(),
            ),
        )
        .build();
    description.paths.paths.insert(
        "/v1/openapi.json".into(),
        PathItem::new(HttpMethod::Get, operation),
    );
    description
}

/// Opens the journal, starts the pipeline and serves until SIGINT or SIGTERM.
pub async fn serve(config: Config) -> anyhow::Result<()> {
    let journal = Journal::open(&config.journal.path, config.journal.cache_bytes as usize)?;
    let telemetry = Arc::new(Telemetry::new(config.verbose));
    let cluster = match &config.cluster {
        Some(c) => {
            let ids: Vec<String> = config.replicators.iter().map(|r| r.id.clone()).collect();
            let stream = telemetry.clone();
            let notify: crate::cluster::Notify = Arc::new(move |task, error| {
                stream.emit(MonitorEvent::replicator_wide(
                    "cluster_error",
                    "*",
                    format!("{task}: {error}"),
                ));
            });
            let cluster =
                Cluster::join(c.clone(), &ids, telemetry.metrics.cluster.clone(), notify).await?;
            tracing::info!(host = %c.host_id, intake = %crate::redact::url(&cluster.queues.intake), "cluster mode: the durable log is SQS FIFO");
            Some(cluster)
        }
        None => None,
    };
    let pipeline =
        Pipeline::start(&config, journal.clone(), telemetry.clone(), cluster.clone()).await?;
    let sources = Sources::start(
        &config.sources,
        journal.clone(),
        telemetry.clone(),
        config.journal.max_bytes,
        cluster.as_ref().map(|c| c.forwarded.subscribe()),
    );
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
        sources,
        telemetry,
        cluster,
        shutdown: shutdown.clone(),
    });
    let app =
        ServiceExt::<axum::extract::Request>::into_make_service(service(router(state.clone())));
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            shutdown_signal().await;
            shutdown.cancel();
        })
        .await?;
    state.sources.shutdown().await;
    state.pipeline.shutdown().await;
    if let Some(c) = &state.cluster
        && let Err(e) = c.state.forget(&c.config.host_id).await
    {
        tracing::warn!(error = %e, "cannot remove this host's heartbeat; status shows it as not alive");
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::{Method, Request, StatusCode};
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn app() -> (Router, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let mut config = Config::default();
        config.journal.path = dir.path().to_path_buf();
        let journal = Journal::open(dir.path(), 1 << 20).unwrap();
        let telemetry = Arc::new(Telemetry::new(false));
        let pipeline = Pipeline::start(&config, journal.clone(), telemetry.clone(), None)
            .await
            .unwrap();
        let state = Arc::new(AppState {
            sources: Sources::start(&[], journal.clone(), telemetry.clone(), u64::MAX, None),
            config,
            journal,
            pipeline,
            telemetry,
            cluster: None,
            shutdown: CancellationToken::new(),
        });
        (router(state), dir)
    }

    async fn call(app: &Router, method: Method, path: &str) -> (StatusCode, Vec<u8>) {
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header("content-type", "application/json")
            .body(Body::from("{}"))
            .unwrap();
        let response = app.clone().oneshot(request).await.unwrap();
        let status = response.status();
        // The event stream never ends: its headers are the answer.
        if path == "/v1/stream" {
            return (status, Vec::new());
        }
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body.to_vec())
    }

    #[tokio::test]
    async fn a_trailing_slash_reaches_the_same_route() {
        let (app, _dir) = app().await;
        let request = Request::builder()
            .method(Method::POST)
            .uri("/v1/events/")
            .header("content-type", "application/json")
            .body(Body::from(
                r#"{"resource":"users","action":"insert","id":"u1","data":{"id":"u1"}}"#,
            ))
            .unwrap();
        let response = tower::ServiceExt::oneshot(service(app), request)
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::ACCEPTED);
    }

    /// The description and the router agree: every documented operation is routed (answered
    /// by its handler, not by the router's 404 or 405), and a path the description does not
    /// have is not.
    #[tokio::test]
    async fn the_openapi_description_matches_the_router() {
        let (app, _dir) = app().await;
        let (status, body) = call(&app, Method::GET, "/v1/openapi.json").await;
        assert_eq!(status, StatusCode::OK);
        let description: serde_json::Value = serde_json::from_slice(&body).unwrap();
        let paths = description["paths"].as_object().unwrap();
        let mut operations = 0;
        for (path, item) in paths {
            for method in ["get", "post", "put", "patch", "delete"] {
                let Some(operation) = item.get(method) else {
                    continue;
                };
                operations += 1;
                let concrete = path.replace("{id}", "1");
                let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
                let (status, body) = call(&app, method.clone(), &concrete).await;
                assert_ne!(status, StatusCode::METHOD_NOT_ALLOWED, "{method} {path}");
                let documented = operation["responses"].get(status.as_str()).is_some();
                assert!(
                    documented,
                    "{method} {path} answered {status}, not in its responses"
                );
                if status == StatusCode::NOT_FOUND {
                    let error: serde_json::Value =
                        serde_json::from_slice(&body).unwrap_or_else(|_| {
                            panic!("{method} {path}: the router's 404, not the handler's")
                        });
                    assert!(error["error"].is_string(), "{method} {path}: {error}");
                }
            }
        }
        assert_eq!(operations, 18, "{:?}", paths.keys().collect::<Vec<_>>());
        let (status, body) = call(&app, Method::GET, "/v1/nothing-here").await;
        assert_eq!((status, body.len()), (StatusCode::NOT_FOUND, 0));
        let (status, _) = call(&app, Method::DELETE, "/v1/status").await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    }
}
