//! What every HTTP feature shares: the application state, the bearer-token check, and the one
//! error type every handler answers with. Features (`intake`, `admin`) bring their own routers;
//! `server` puts them together.

use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::json;
use std::sync::Arc;
use subtle::ConstantTimeEq;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::event::ItemError;
use crate::journal::{Journal, JournalError};
use crate::pipeline::telemetry::Telemetry;
use crate::pipeline::{Pipeline, PipelineError};

pub struct AppState {
    pub config: Config,
    pub journal: Arc<Journal>,
    pub pipeline: Pipeline,
    pub telemetry: Arc<Telemetry>,
    /// Cancelled at shutdown so long-lived responses (the SSE stream) end.
    pub shutdown: CancellationToken,
}

/// A router of one feature, before the state is given.
pub type FeatureRouter = axum::Router<Arc<AppState>>;

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
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Pipeline(#[from] PipelineError),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = self.to_string();
        let body = |extra: Option<(&str, serde_json::Value)>| {
            let mut body = json!({"error": message});
            if let Some((key, value)) = extra {
                body[key] = value;
            }
            Json(body)
        };
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, body(None)).into_response(),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, body(None)).into_response(),
            ApiError::Conflict(_) => (StatusCode::CONFLICT, body(None)).into_response(),
            ApiError::Unauthorized => (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                body(None),
            )
                .into_response(),
            ApiError::InvalidEvents { items, .. } => {
                let items = serde_json::to_value(items).unwrap_or_default();
                (StatusCode::BAD_REQUEST, body(Some(("items", items)))).into_response()
            }
            ApiError::OverBudget(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "5")],
                body(None),
            )
                .into_response(),
            ApiError::NotDurable(_) => (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "1")],
                body(None),
            )
                .into_response(),
            ApiError::Pipeline(PipelineError::UnknownReplicator(_)) => {
                (StatusCode::NOT_FOUND, body(None)).into_response()
            }
            ApiError::Pipeline(PipelineError::Pruned { .. } | PipelineError::Paused(_)) => {
                (StatusCode::CONFLICT, body(None)).into_response()
            }
            ApiError::Journal(_) | ApiError::Pipeline(_) => {
                tracing::error!(error = %message, "request failed");
                (StatusCode::INTERNAL_SERVER_ERROR, body(None)).into_response()
            }
        }
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
        let ok = given.is_some_and(|g| bool::from(g.as_bytes().ct_eq(token.expose().as_bytes())));
        if !ok {
            return ApiError::Unauthorized.into_response();
        }
    }
    next.run(request).await
}
