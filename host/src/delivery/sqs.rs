//! SQS, for the sqs driver and for change capture's notification queue: queues named by URL
//! or by name, and which refusals mean a queue is not usable as configured (waited out until
//! someone creates the queue or fixes the credentials or the key policy, never given up on).

use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_runtime_api::http::Response;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use sha2::{Digest, Sha256};

/// What SQS refuses in a message group or deduplication id: 1-128 printable ASCII characters.
pub fn id_problem(id: &str) -> Option<String> {
    let ok = !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| (33..=126).contains(&b));
    (!ok).then(|| {
        format!("\"{id}\" is not an SQS id: 1 to 128 printable ASCII characters, no spaces")
    })
}

/// `text` when SQS takes it as a group or deduplication id, else a digest of it (the same
/// text always gives the same id, so a key keeps its group).
pub fn sqs_id(text: String) -> String {
    if id_problem(&text).is_none() {
        return text;
    }
    let digest = Sha256::digest(text.as_bytes());
    let hex: String = digest.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256-{hex}")
}

/// A queue as the config names it: by URL, or by name (resolved with GetQueueUrl).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum QueueRef {
    Url(String),
    Name(String),
}

impl QueueRef {
    /// A URL (`http(s)://...`) or a queue name: up to 80 letters, digits, `-` and `_`, with
    /// `.fifo` at the end of FIFO queues.
    pub fn parse(text: &str) -> Result<QueueRef, String> {
        if text.starts_with("http://") || text.starts_with("https://") {
            return match url::Url::parse(text) {
                Ok(u) if u.path().len() > 1 => Ok(QueueRef::Url(text.to_string())),
                _ => Err(format!(
                    "\"{}\" is not a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)",
                    crate::redact::url(text)
                )),
            };
        }
        let stem = text.strip_suffix(".fifo").unwrap_or(text);
        if stem.is_empty()
            || text.len() > 80
            || !stem
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(format!(
                "\"{text}\" is neither a queue URL nor a queue name (up to 80 letters, digits, \
                 '-' and '_', ending in .fifo for a FIFO queue)"
            ));
        }
        Ok(QueueRef::Name(text.to_string()))
    }

    /// The queue's URL: the one given, or GetQueueUrl's answer for a name.
    pub async fn url(
        &self,
        client: &aws_sdk_sqs::Client,
    ) -> Result<String, SdkError<aws_sdk_sqs::operation::get_queue_url::GetQueueUrlError, Response>>
    {
        match self {
            QueueRef::Url(url) => Ok(url.clone()),
            QueueRef::Name(name) => {
                let answer = client.get_queue_url().queue_name(name).send().await?;
                Ok(answer.queue_url.unwrap_or_default())
            }
        }
    }
}

impl std::fmt::Display for QueueRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            QueueRef::Url(u) => f.write_str(&crate::redact::url(u)),
            QueueRef::Name(n) => write!(f, "queue \"{n}\""),
        }
    }
}

/// Error codes that say the queue does not exist.
const QUEUE_MISSING: [&str; 2] = [
    "AWS.SimpleQueueService.NonExistentQueue",
    "QueueDoesNotExist",
];

/// Error codes that refuse who we are or what we may do (keys, tokens, clocks, KMS).
pub const ACCESS_REFUSED: [&str; 14] = [
    "AccessDenied",
    "AccessDeniedException",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "SignatureDoesNotMatch",
    "IncompleteSignature",
    "MissingAuthenticationToken",
    "ExpiredToken",
    "InvalidSecurity",
    "KmsAccessDenied",
    "KmsDisabled",
    "KmsNotFound",
    "KmsInvalidState",
    "KmsOptInRequired",
];

/// Why a queue cannot be used as configured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unusable {
    Missing,
    Refused,
}

/// What an error code (of a call, or of one entry of a batch) says about the queue.
pub fn unusable_code(code: &str) -> Option<Unusable> {
    if QUEUE_MISSING.contains(&code) {
        Some(Unusable::Missing)
    } else if ACCESS_REFUSED.contains(&code) {
        Some(Unusable::Refused)
    } else {
        None
    }
}

/// What a failed call says about the queue; any 401 or 403 refuses access, whatever its code
/// (an expired token, a skewed clock...).
pub fn unusable<E: ProvideErrorMetadata>(e: &SdkError<E, Response>) -> Option<Unusable> {
    super::aws::error_code(e)
        .and_then(unusable_code)
        .or_else(|| matches!(super::aws::status(e), Some(401 | 403)).then_some(Unusable::Refused))
}
