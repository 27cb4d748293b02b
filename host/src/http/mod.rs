//! What every HTTP feature shares: the application state, the bearer-token check, and the one
//! error type every handler answers with. Features (`intake`, `admin`) bring their own routers;
//! `server` puts them together.

use crate::redact::ExposeSecret;
use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::config::Config;
use crate::event::ItemError;
use crate::journal::{Journal, JournalError};
use crate::pipeline::telemetry::Telemetry;
use crate::pipeline::{Pipeline, PipelineError};

pub struct AppState {
    pub config: Config,
    pub journal: Arc<Journal>,
    pub pipeline: Pipeline,
    pub sources: crate::capture::Sources,
    pub telemetry: Arc<Telemetry>,
    /// Set in cluster mode: intake sends to the cluster's intake queue.
    pub cluster: Option<Arc<crate::cluster::Cluster>>,
    /// Cancelled at shutdown so long-lived responses (the SSE stream) end.
    pub shutdown: CancellationToken,
}

/// A router of one feature, before the state is given; it carries the OpenAPI description
/// of its routes, made from the same handlers.
pub type FeatureRouter = OpenApiRouter<Arc<AppState>>;

/// The parts of the OpenAPI description no handler carries: title, security, tags.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "replicator",
        description = "The replication host for s3db: intake of s3db.js changes, status, dead letters, replay, backfills and monitoring."
    ),
    modifiers(&BearerToken),
    tags(
        (name = "intake", description = "Posting changes"),
        (name = "admin", description = "Status, dead letters, the replication log, replay and backfills"),
        (name = "monitoring", description = "Probes, metrics and the event stream")
    )
)]
pub struct ApiDoc;

/// `server.token`: every `/v1` call then needs `Authorization: Bearer <token>`.
struct BearerToken;

impl Modify for BearerToken {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The body of every error answer.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What is wrong, in words.
    pub error: String,
    /// For a refused batch of events: each bad item's index and reasons.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub items: Option<Vec<ItemError>>,
}

/// A JSON body; a body that cannot be read is answered as an [`ApiError`].
#[derive(FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub struct ApiJson<T>(pub T);

/// A query string; one that cannot be read is answered as an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Query), rejection(ApiError))]
pub struct ApiQuery<T>(pub T);

/// A path parameter; one that cannot be read is answered as an [`ApiError`].
#[derive(FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct ApiPath<T>(pub T);

/// Why a request was not served; each variant knows its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("missing or wrong bearer token")]
    Unauthorized,
    /// A posted batch with invalid items: none was accepted.
    #[error("{message}")]
    InvalidEvents {
        message: String,
        items: Vec<ItemError>,
    },
    /// The journal is over its disk budget.
    #[error("{0}")]
    OverBudget(String),
    /// Events could not be made durable.
    #[error("cannot make the events durable: {0}")]
    NotDurable(#[source] JournalError),
    /// Events could not be handed to the cluster's intake queue.
    #[error("cannot make the events durable: {0}")]
    NotQueued(#[source] crate::cluster::ClusterError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The cluster's queues or state database did not answer.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
    /// A body, query or path parameter that does not parse (400, 415 or 422 as axum decides).
    #[error("{}", .0.body_text())]
    Body(#[from] JsonRejection),
    #[error("{}", .0.body_text())]
    Query(#[from] QueryRejection),
    #[error("{}", .0.body_text())]
    Path(#[from] PathRejection),
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_) | ApiError::InvalidEvents { .. } => StatusCode::BAD_REQUEST,
            ApiError::NotFound(_) | ApiError::Pipeline(PipelineError::UnknownReplicator(_)) => {
                StatusCode::NOT_FOUND
            }
            ApiError::Conflict(_)
            | ApiError::Pipeline(
                PipelineError::Pruned { .. }
                | PipelineError::Paused(_)
                | PipelineError::NoReplayInCluster,
            ) => StatusCode::CONFLICT,
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::OverBudget(_)
            | ApiError::NotDurable(_)
            | ApiError::NotQueued(_)
            | ApiError::Cluster(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Body(r) => r.status(),
            ApiError::Query(r) => r.status(),
            ApiError::Path(r) => r.status(),
            ApiError::Journal(_) | ApiError::Pipeline(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        if status.is_server_error() && !matches!(self, ApiError::OverBudget(_)) {
            tracing::error!(error = %self, "request failed");
        }
        let retry_after = match &self {
            ApiError::OverBudget(_) => Some("5"),
            ApiError::NotDurable(_) | ApiError::NotQueued(_) => Some("1"),
            _ => None,
        };
        let error = self.to_string();
        let items = match self {
            ApiError::InvalidEvents { items, .. } => Some(items),
            _ => None,
        };
        let mut response = (status, Json(ErrorBody { error, items })).into_response();
        let headers = response.headers_mut();
        if let Some(seconds) = retry_after {
            headers.insert(
                header::RETRY_AFTER,
                header::HeaderValue::from_static(seconds),
            );
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// With `server.token` set, every `/v1` call needs `Authorization: Bearer <token>`.
pub async fn require_token(
    State(app): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    if let Some(token) = &app.config.server.token {
        let given = request
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        let ok =
            given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.expose_secret().as_bytes())));
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}
