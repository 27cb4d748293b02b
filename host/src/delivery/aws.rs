//! Calling AWS, for every AWS destination (the s3db store on S3, SQS): where and as whom
//! ([`AwsAccess`]), and how a failed call is treated: no connection waits for the destination;
//! timeouts, throttling and server errors are retried; any other answer would fail again.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{ErrorKind, cause_chain};
use crate::options::Section;
use crate::redact::{ExposeSecret, Secret};

/// Error codes AWS answers with a 400 status that mean "slow down", not "wrong request".
const THROTTLING_CODES: [&str; 4] = [
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "SlowDown",
];

pub fn error_kind<E: ProvideErrorMetadata>(e: &SdkError<E, Response>) -> ErrorKind {
    error_kind_with(e, |_| false)
}

/// As [`error_kind`], where `unavailable` picks the service's error codes that mean "not usable
/// as configured" (a missing queue, denied access): waited out without spending attempts.
pub fn error_kind_with<E: ProvideErrorMetadata>(
    e: &SdkError<E, Response>,
    unavailable: impl Fn(&str) -> bool,
) -> ErrorKind {
    match e {
        SdkError::DispatchFailure(_) => ErrorKind::Unavailable,
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Transient,
        SdkError::ServiceError(s) => {
            let code = s.raw().status().as_u16();
            let error_code = s.err().code();
            if error_code.is_some_and(unavailable) {
                return ErrorKind::Unavailable;
            }
            let throttled = error_code.is_some_and(|c| THROTTLING_CODES.contains(&c));
            if throttled || code == 429 || code == 408 || code >= 500 {
                ErrorKind::Transient
            } else {
                ErrorKind::Permanent
            }
        }
        _ => ErrorKind::Transient,
    }
}

/// Keys given in the config (s3db.js's `credentials` object); without them the SDK's default
/// chain is used: environment, profile, web identity, instance role.
#[derive(Debug, Clone)]
pub struct AwsCredentials {
    pub access_key_id: String,
    pub secret_access_key: Secret,
    pub session_token: Option<Secret>,
}

/// Where and as whom to call an AWS service (or a compatible server at `endpoint`).
#[derive(Debug, Clone)]
pub struct AwsAccess {
    pub region: String,
    /// `None` for AWS itself.
    pub endpoint: Option<String>,
    pub credentials: Option<AwsCredentials>,
}

impl AwsAccess {
    /// Reads s3db.js's `region` (default `us-east-1`), `endpoint` and `credentials`.
    pub fn parse(s: &mut Section) -> AwsAccess {
        let region = s.string("region").unwrap_or_else(|| "us-east-1".into());
        let endpoint = s.http_url("endpoint");
        let credentials = s.section("credentials").and_then(|mut c| {
            let access_key_id = c.required_string("accessKeyId");
            let secret_access_key = c.required_string("secretAccessKey");
            let session_token = c.string("sessionToken").map(Secret::from);
            c.finish();
            Some(AwsCredentials {
                access_key_id: access_key_id?,
                secret_access_key: Secret::from(secret_access_key?),
                session_token,
            })
        });
        AwsAccess {
            region,
            endpoint,
            credentials,
        }
    }

    /// The SDK configuration. The SDK makes one attempt per call: the pipeline retries,
    /// classifies and counts.
    pub async fn sdk_config(&self) -> aws_config::SdkConfig {
        let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(self.region.clone()))
            .retry_config(aws_config::retry::RetryConfig::disabled());
        if let Some(c) = &self.credentials {
            loader = loader.credentials_provider(aws_credential_types::Credentials::new(
                &c.access_key_id,
                c.secret_access_key.expose_secret(),
                c.session_token
                    .as_ref()
                    .map(|t| t.expose_secret().to_string()),
                None,
                "config",
            ));
        }
        if let Some(url) = &self.endpoint {
            loader = loader.endpoint_url(url);
        }
        loader.load().await
    }
}

/// What went wrong, with the HTTP status and AWS's own code and message when it answered.
pub fn describe<E>(e: &SdkError<E, Response>) -> String
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    match e {
        SdkError::ServiceError(s) => {
            let status = s.raw().status().as_u16();
            let err = s.err();
            match (err.code(), err.message()) {
                (Some(code), Some(message)) => format!("HTTP {status}: {code}: {message}"),
                (Some(code), None) => format!("HTTP {status}: {code}"),
                _ => format!("HTTP {status}: {}", cause_chain(err)),
            }
        }
        SdkError::DispatchFailure(_) => format!("cannot connect: {}", cause_chain(e)),
        SdkError::TimeoutError(_) => "timed out".into(),
        other => cause_chain(other),
    }
}

/// AWS's error code of a service's answer, when there was one.
pub fn error_code<E: ProvideErrorMetadata>(e: &SdkError<E, Response>) -> Option<&str> {
    match e {
        SdkError::ServiceError(s) => s.err().code(),
        _ => None,
    }
}

/// The HTTP status of a service's answer, when there was one.
pub fn status<E>(e: &SdkError<E, Response>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
        _ => None,
    }
}
