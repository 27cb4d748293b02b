//! The BigQuery REST client: built from the configured credentials (nothing at all for an
//! emulator), each call counted, and every failure classed for the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use gcp_bigquery_client::Client;
use gcp_bigquery_client::auth::Authenticator;
use gcp_bigquery_client::client_builder::ClientBuilder;
use gcp_bigquery_client::error::BQError;
use gcp_bigquery_client::model::error_proto::ErrorProto;
use gcp_bigquery_client::model::get_query_results_parameters::GetQueryResultsParameters;
use gcp_bigquery_client::model::query_request::QueryRequest;

use super::config::{BigQueryConfig, Credentials};
use crate::delivery::cause_chain;
use crate::drivers::{DeliveryError, ErrorKind};
use crate::redact::ExposeSecret;

/// Emulators take no credentials; the client sends an empty bearer token.
#[derive(Clone)]
struct NoCredentials;

#[async_trait::async_trait]
impl Authenticator for NoCredentials {
    async fn access_token(&self) -> Result<String, BQError> {
        Ok(String::new())
    }
}

/// Reasons BigQuery gives for trouble that passes (`rateLimitExceeded`, `backendError`...).
const TRANSIENT_REASONS: [&str; 6] = [
    "rateLimitExceeded",
    "backendError",
    "internalError",
    "quotaExceeded",
    "timeout",
    "jobRateLimitExceeded",
];
/// Reasons that mean the destination is not usable as configured.
const UNAVAILABLE_REASONS: [&str; 3] = ["accessDenied", "authError", "billingNotEnabled"];

pub async fn connect(config: &BigQueryConfig) -> Result<Client, DeliveryError> {
    let mut builder = ClientBuilder::new();
    if let Some(endpoint) = &config.endpoint {
        builder.with_v2_base_url(format!("{}/bigquery/v2", endpoint.trim_end_matches('/')));
    }
    let built = match (&config.credentials, &config.endpoint) {
        (Credentials::Key(key), _) => {
            let key =
                gcp_bigquery_client::yup_oauth2::parse_service_account_key(key.expose_secret())
                    .map_err(|e| {
                        DeliveryError::unavailable(format!(
                            "the service-account key does not parse: {e}"
                        ))
                    })?;
            builder.build_from_service_account_key(key, false).await
        }
        (Credentials::KeyFile(path), _) => {
            builder
                .build_from_service_account_key_file(&path.to_string_lossy())
                .await
        }
        (Credentials::Default, Some(_)) => {
            builder
                .build_from_authenticator(Arc::new(NoCredentials))
                .await
        }
        (Credentials::Default, None) => builder.build_from_application_default_credentials().await,
    };
    built.map_err(|e| {
        DeliveryError::unavailable(format!(
            "cannot authenticate to BigQuery: {} (check credentials, or the Application Default Credentials)",
            cause_chain(&e)
        ))
    })
}

/// A failed call as a delivery error.
pub fn error(call: &str, e: &BQError) -> DeliveryError {
    match e {
        BQError::ResponseError { error } => {
            let e = &error.error;
            let reason = e
                .errors
                .first()
                .and_then(|r| r.get("reason"))
                .map(String::as_str);
            let kind = classify(Some(e.code), reason);
            let hint = match (e.code, reason) {
                (404, _) => ": create it, or correct projectId/datasetId (waiting for it)",
                (401 | 403, _) | (_, Some("accessDenied")) => {
                    ": the credentials are refused or lack a role (BigQuery Data Editor and Job User)"
                }
                _ => "",
            };
            DeliveryError::new(
                kind,
                format!("{call}: HTTP {}: {}{hint}", e.code, e.message),
            )
        }
        BQError::RequestError(r) if r.is_connect() => {
            DeliveryError::unavailable(format!("{call}: cannot connect: {}", cause_chain(r)))
        }
        BQError::RequestError(r) => DeliveryError::transient(format!("{call}: {}", cause_chain(r))),
        BQError::AuthError(_) | BQError::YupAuthError(_) | BQError::NoToken => {
            DeliveryError::unavailable(format!("{call}: cannot authenticate: {}", cause_chain(e)))
        }
        other => DeliveryError::transient(format!("{call}: {}", cause_chain(other))),
    }
}

/// The class of a BigQuery error from its HTTP status and reason.
pub fn classify(status: Option<i64>, reason: Option<&str>) -> ErrorKind {
    match (status, reason) {
        (_, Some(r)) if TRANSIENT_REASONS.contains(&r) => ErrorKind::Transient,
        (_, Some(r)) if UNAVAILABLE_REASONS.contains(&r) => ErrorKind::Unavailable,
        (Some(401 | 403 | 404), _) => ErrorKind::Unavailable,
        (Some(408 | 429), _) => ErrorKind::Transient,
        (Some(s), _) if s >= 500 => ErrorKind::Transient,
        (_, Some("notFound")) => ErrorKind::Unavailable,
        _ => ErrorKind::Permanent,
    }
}

/// The API, each call counted.
pub struct Api {
    pub client: Client,
    pub project: String,
    requests: Arc<AtomicU64>,
}

impl Api {
    pub fn new(client: Client, project: String, requests: Arc<AtomicU64>) -> Api {
        Api {
            client,
            project,
            requests,
        }
    }

    pub fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    /// Runs a statement to its end (a job still running after the first wait is polled).
    /// BigQuery answers a failed query with an error status, emulators with 200 and
    /// `errors`: both are errors here.
    pub async fn query(&self, sql: &str) -> Result<(), DeliveryError> {
        self.count();
        let mut request = QueryRequest::new(sql);
        request.use_legacy_sql = false;
        request.timeout_ms = Some(60_000);
        let answer = self
            .client
            .job()
            .query(&self.project, request)
            .await
            .map_err(|e| error("query", &e))?;
        let (mut complete, mut errors, job) =
            (answer.job_complete, answer.errors, answer.job_reference);
        while complete == Some(false) {
            let Some(job) = &job else { break };
            let parameters = GetQueryResultsParameters {
                location: job.location.clone(),
                timeout_ms: Some(10_000),
                max_results: Some(0),
                ..Default::default()
            };
            self.count();
            let polled = self
                .client
                .job()
                .get_query_results(
                    &self.project,
                    job.job_id.as_deref().unwrap_or_default(),
                    parameters,
                )
                .await
                .map_err(|e| error("query results", &e))?;
            (complete, errors) = (polled.job_complete, polled.errors);
        }
        match errors.as_ref().and_then(|e| e.first()) {
            Some(first) => Err(proto_error("query", first)),
            None => Ok(()),
        }
    }
}

pub fn is_not_found(e: &BQError) -> bool {
    matches!(e, BQError::ResponseError { error } if error.error.code == 404)
}

pub fn is_duplicate(e: &BQError) -> bool {
    matches!(e, BQError::ResponseError { error } if error.error.code == 409)
}

/// An error BigQuery reported inside an answer (a row of insertAll, a query).
pub fn proto_error(what: &str, e: &ErrorProto) -> DeliveryError {
    let reason = e.reason.as_deref();
    DeliveryError::new(
        classify(None, reason),
        format!(
            "{what}: {}: {}",
            reason.unwrap_or("error"),
            e.message.as_deref().unwrap_or("no message")
        ),
    )
}
