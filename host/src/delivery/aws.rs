//! How a failed AWS SDK call is treated, for every AWS destination (the s3db store on S3, SQS):
//! no connection waits for the destination; timeouts, throttling and server errors are
//! retried; any other answer would fail the same way again.

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use super::{ErrorKind, cause_chain};

/// Error codes AWS answers with a 400 status that mean "slow down", not "wrong request".
const THROTTLING_CODES: [&str; 4] = [
    "Throttling",
    "ThrottlingException",
    "RequestThrottled",
    "SlowDown",
];

pub fn error_kind<E: ProvideErrorMetadata>(e: &SdkError<E, Response>) -> ErrorKind {
    match e {
        SdkError::DispatchFailure(_) => ErrorKind::Unavailable,
        SdkError::TimeoutError(_) | SdkError::ResponseError(_) => ErrorKind::Transient,
        SdkError::ServiceError(s) => {
            let code = s.raw().status().as_u16();
            let throttled = s
                .err()
                .code()
                .is_some_and(|c| THROTTLING_CODES.contains(&c));
            if throttled || code == 429 || code == 408 || code >= 500 {
                ErrorKind::Transient
            } else {
                ErrorKind::Permanent
            }
        }
        _ => ErrorKind::Transient,
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

/// The HTTP status of a service's answer, when there was one.
pub fn status<E>(e: &SdkError<E, Response>) -> Option<u16> {
    match e {
        SdkError::ServiceError(s) => Some(s.raw().status().as_u16()),
        _ => None,
    }
}
