//! SDK for replicator plugins: WebAssembly components (`wasm32-wasip2`) implementing
//! `replicator:plugin@0.1.0` (`wit/plugin.wit`), without handling the generated bindings.
//!
//! Enable the feature of the plugin's kind (one, or both: features unify across a cargo
//! workspace, so a workspace with a transform and a driver builds the SDK with both):
//! - `transform`: implement `Transform` and call `export_transform!`; the component exports
//!   `batch-transform` (world `batch-transformer`), and each batch becomes one
//!   `Transform::transform` call per event unless `Transform::transform_batch` is overridden.
//! - `driver`: implement `Driver` and call `export_driver!` (world `sink-driver`).
//!
//! The traits' documentation has a whole plugin each.
//!
//! Documents (`data`, `before`, `metadata`, the config) are [`Json`]: the UTF-8 JSON bytes the
//! host sent, parsed only when the plugin asks ([`Json::parse`], [`Json::value`]). Events and
//! outcomes are moved between these types and the generated ones, never copied or re-encoded.
//!
//! A record that cannot be transformed is `Outcome::Fail` (`invalid-record`, dead-lettered).
//! An `Err` returned by `transform` (for instance through `?`: any `std::error::Error` becomes
//! an [`Error`] with code `exception`) fails that record as `other`, and the batch goes on. A
//! panic cannot be caught (Wasm aborts on panic): the host sees a trap, so return `Err` instead.
//!
//! The host's `log` and `digest` are in [`log`] and [`digest`]; a driver's shared state is in
//! `state`. They call the host, so they only work inside a component.

#[cfg(not(any(feature = "transform", feature = "driver")))]
compile_error!("replicator-plugin: enable the feature `transform` or `driver`");

/// The bindings wit-bindgen generates for each enabled world (used by the export macros; the
/// SDK's own types cover what a plugin needs). A component imports only what it calls, so the
/// other world's imports cost nothing when both features are on.
pub mod bindings {
    // Also without features, so that the `compile_error!` above is the only error.
    #[cfg(any(feature = "transform", not(feature = "driver")))]
    pub mod batch_transformer {
        wit_bindgen::generate!({
            path: "../wit",
            world: "batch-transformer",
            pub_export_macro: true,
        });
    }

    #[cfg(feature = "driver")]
    pub mod sink_driver {
        wit_bindgen::generate!({
            path: "../wit",
            world: "sink-driver",
            pub_export_macro: true,
        });
    }
}

#[cfg(feature = "driver")]
mod driver;
#[cfg(feature = "transform")]
mod transform;

#[cfg(feature = "driver")]
pub use driver::{Driver, DriverError, DriverInfo, EventFailure, Health, state};
#[cfg(feature = "transform")]
pub use transform::{Outcome, Transform};

/// What the export macros expand to; not an API.
#[doc(hidden)]
pub mod __private {
    #[cfg(feature = "driver")]
    pub mod driver {
        pub use crate::bindings::sink_driver::exports::replicator::plugin::driver::{
            DriverError, DriverInfo, Guest, HealthStatus, ReplicateResult,
        };
        pub use crate::bindings::sink_driver::replicator::plugin::types::Event;
        pub use crate::driver::{close, describe, health, init, replicate};
    }
    #[cfg(feature = "transform")]
    pub mod transform {
        pub use crate::bindings::batch_transformer::exports::replicator::plugin::batch_transform::Guest;
        pub use crate::bindings::batch_transformer::replicator::plugin::transform_types::{
            Outcome, TransformError,
        };
        pub use crate::bindings::batch_transformer::replicator::plugin::types::Event;
        pub use crate::transform::{init, transform_batch};
    }
}

/// The world whose `log` and `digest` imports the helpers call (either: the host links the
/// same functions to both).
#[cfg(any(feature = "transform", not(feature = "driver")))]
use bindings::batch_transformer as world;
#[cfg(all(feature = "driver", not(feature = "transform")))]
use bindings::sink_driver as world;

pub use serde_json;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::ops::Deref;

/// UTF-8 JSON text as the host sent it (or as the plugin will send it back).
#[derive(Clone, Default, PartialEq, Eq, Hash)]
pub struct Json(pub Vec<u8>);

impl Json {
    /// Parses the text into `T`, which may borrow from it (`&str`, `&RawValue`...). An error
    /// has code `invalid-json`.
    pub fn parse<'a, T: Deserialize<'a>>(&'a self) -> Result<T, Error> {
        serde_json::from_slice(&self.0)
            .map_err(|e| Error::new("invalid-json", format!("not valid JSON: {e}")))
    }

    /// The text as a [`serde_json::Value`].
    pub fn value(&self) -> Result<serde_json::Value, Error> {
        self.parse()
    }

    /// `value` as JSON text (fails only for a map whose keys are not strings, or a failing
    /// `Serialize`).
    pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Json, Error> {
        serde_json::to_vec(value)
            .map(Json)
            .map_err(|e| Error::new("invalid-json", format!("cannot encode as JSON: {e}")))
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    pub fn into_bytes(self) -> Vec<u8> {
        self.0
    }
}

impl Deref for Json {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        &self.0
    }
}

impl From<Vec<u8>> for Json {
    fn from(bytes: Vec<u8>) -> Json {
        Json(bytes)
    }
}

impl From<String> for Json {
    fn from(text: String) -> Json {
        Json(text.into_bytes())
    }
}

impl From<&str> for Json {
    fn from(text: &str) -> Json {
        Json(text.as_bytes().to_vec())
    }
}

impl From<serde_json::Value> for Json {
    fn from(value: serde_json::Value) -> Json {
        Json(value.to_string().into_bytes())
    }
}

impl fmt::Debug for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Json")
            .field(&String::from_utf8_lossy(&self.0))
            .finish()
    }
}

impl fmt::Display for Json {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

/// An error with a stable kebab-case `code` for machines and a `message` for people.
///
/// Any `std::error::Error` converts into one with code `exception`, so `?` works in
/// `transform` and `init`. (`Error` itself does not implement `std::error::Error`, which is what
/// lets that conversion exist.)
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    pub code: String,
    pub message: String,
}

impl Error {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Error {
        Error {
            code: code.into(),
            message: message.into(),
        }
    }

    /// Code `invalid-config`; the message should name the key at fault.
    pub fn invalid_config(message: impl Into<String>) -> Error {
        Error::new("invalid-config", message)
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl<E: std::error::Error> From<E> for Error {
    fn from(e: E) -> Error {
        Error::new("exception", e.to_string())
    }
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Action {
    #[default]
    Insert,
    Update,
    Delete,
}

impl Action {
    /// `"insert"`, `"update"` or `"delete"`, as in the host's envelope.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Insert => "insert",
            Action::Update => "update",
            Action::Delete => "delete",
        }
    }
}

impl fmt::Display for Action {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One change of one record: the host's event envelope.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Event {
    pub resource: String,
    pub action: Action,
    /// The record id.
    pub id: String,
    /// The record after the change (for a delete, the last known record), a JSON object.
    pub data: Option<Json>,
    /// The record before an update or delete, when the sender had it.
    pub before: Option<Json>,
    /// ISO-8601 time of the change.
    pub timestamp: String,
    /// Who sent the change.
    pub source: Option<String>,
    /// Grows with every accepted event; with `resource` and `id`, the idempotency key.
    pub sequence: u64,
    /// What the sender attached, a JSON object.
    pub metadata: Option<Json>,
}

/// The conversions between the SDK's types and one world's generated ones: moves, the
/// documents staying the same buffers.
macro_rules! conversions {
    ($world:ident) => {
        const _: () = {
            use crate::bindings::$world::replicator::plugin::types as wit;
            use crate::{Action, Error, Event, Json};

            impl From<Error> for wit::ErrorInfo {
                fn from(e: Error) -> wit::ErrorInfo {
                    wit::ErrorInfo {
                        code: e.code,
                        message: e.message,
                    }
                }
            }

            impl From<wit::Event> for Event {
                fn from(e: wit::Event) -> Event {
                    Event {
                        resource: e.resource,
                        action: match e.action {
                            wit::Action::Insert => Action::Insert,
                            wit::Action::Update => Action::Update,
                            wit::Action::Delete => Action::Delete,
                        },
                        id: e.id,
                        data: e.data.map(Json),
                        before: e.before.map(Json),
                        timestamp: e.timestamp,
                        source: e.source,
                        sequence: e.sequence,
                        metadata: e.metadata.map(Json),
                    }
                }
            }

            impl From<Event> for wit::Event {
                fn from(e: Event) -> wit::Event {
                    wit::Event {
                        resource: e.resource,
                        action: match e.action {
                            Action::Insert => wit::Action::Insert,
                            Action::Update => wit::Action::Update,
                            Action::Delete => wit::Action::Delete,
                        },
                        id: e.id,
                        data: e.data.map(Json::into_bytes),
                        before: e.before.map(Json::into_bytes),
                        timestamp: e.timestamp,
                        source: e.source,
                        sequence: e.sequence,
                        metadata: e.metadata.map(Json::into_bytes),
                    }
                }
            }
        };
    };
}

#[cfg(any(feature = "transform", not(feature = "driver")))]
conversions!(batch_transformer);
#[cfg(feature = "driver")]
conversions!(sink_driver);

/// The config given to `init`: `{}` when the host sent none.
fn config_json(bytes: Vec<u8>) -> Json {
    if bytes.is_empty() {
        Json::from("{}")
    } else {
        Json(bytes)
    }
}

/// Structured logging through the host's logger.
pub mod log {
    pub use crate::world::replicator::plugin::log::Level;

    pub fn log(level: Level, message: &str) {
        crate::world::replicator::plugin::log::log(level, message)
    }

    pub fn trace(message: &str) {
        log(Level::Trace, message)
    }

    pub fn debug(message: &str) {
        log(Level::Debug, message)
    }

    pub fn info(message: &str) {
        log(Level::Info, message)
    }

    pub fn warn(message: &str) {
        log(Level::Warn, message)
    }

    pub fn error(message: &str) {
        log(Level::Error, message)
    }
}

/// Hashes computed by the host at native speed (Wasm has no SHA instructions), as lowercase hex.
pub mod digest {
    use crate::world::replicator::plugin::digest as host;
    pub use crate::world::replicator::plugin::digest::Algorithm;

    pub fn hash(algorithm: Algorithm, data: &[u8]) -> String {
        host::hash(algorithm, data)
    }

    pub fn sha256(data: impl AsRef<[u8]>) -> String {
        hash(Algorithm::Sha256, data.as_ref())
    }

    pub fn sha384(data: impl AsRef<[u8]>) -> String {
        hash(Algorithm::Sha384, data.as_ref())
    }

    pub fn sha512(data: impl AsRef<[u8]>) -> String {
        hash(Algorithm::Sha512, data.as_ref())
    }

    /// HMAC of `data` under `key`: a pseudonym only holders of the key can reproduce.
    pub fn hmac(algorithm: Algorithm, key: impl AsRef<[u8]>, data: impl AsRef<[u8]>) -> String {
        host::hmac(algorithm, key.as_ref(), data.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::world::replicator::plugin::types as wit;
    use serde_json::json;

    #[test]
    fn json_parses_lazily_typed_borrowed_or_as_a_value() {
        let j = Json::from(r#"{"name":"Ada","n":1}"#);
        assert_eq!(j.value().unwrap(), json!({"name": "Ada", "n": 1}));
        let names = Json::from(r#"["Ada","Bob"]"#);
        let borrowed: Vec<&str> = names.parse().unwrap();
        assert_eq!(borrowed, ["Ada", "Bob"]);
        let (a, b): (u8, String) = Json::from(r#"[1,"x"]"#).parse().unwrap();
        assert_eq!((a, b.as_str()), (1, "x"));
        let e = Json::from("{nope").value().unwrap_err();
        assert_eq!(e.code, "invalid-json");
        assert!(e.message.contains("not valid JSON"), "{}", e.message);
        assert_eq!(
            Json::from(b"\xff".to_vec()).value().unwrap_err().code,
            "invalid-json"
        );
        assert_eq!(Json::from(json!([1])).as_bytes(), b"[1]");
        assert_eq!(Json::encode(&["a"]).unwrap(), Json::from(r#"["a"]"#));
        assert_eq!(format!("{:?}", Json::from("{}")), r#"Json("{}")"#);
    }

    #[test]
    fn std_errors_become_exceptions() {
        fn parse(s: &str) -> Result<u32, Error> {
            Ok(s.parse::<u32>()?)
        }
        let e = parse("x").unwrap_err();
        assert_eq!(e.code, "exception");
        assert!(e.message.contains("invalid digit"), "{}", e.message);
        assert_eq!(
            Error::invalid_config("`drop`").to_string(),
            "invalid-config: `drop`"
        );
    }

    #[test]
    fn events_are_moved_not_copied() {
        let data = br#"{"a":1}"#.to_vec();
        let ptr = data.as_ptr();
        let w = wit::Event {
            resource: "users".into(),
            action: wit::Action::Delete,
            id: "u1".into(),
            data: Some(data),
            before: None,
            timestamp: "t".into(),
            source: Some("app".into()),
            sequence: u64::MAX,
            metadata: Some(b"{}".to_vec()),
        };
        let e = Event::from(w);
        assert_eq!(e.action, Action::Delete);
        assert_eq!(e.data.as_ref().unwrap().as_ptr(), ptr);
        assert_eq!(
            (e.sequence, e.source.as_deref(), e.metadata.as_deref()),
            (u64::MAX, Some("app"), Some(&b"{}"[..]))
        );
        let back = wit::Event::from(e);
        assert!(matches!(back.action, wit::Action::Delete));
        let data = back.data.unwrap();
        assert_eq!(data.as_ptr(), ptr);
    }

    #[test]
    fn a_missing_config_is_an_empty_object() {
        assert_eq!(config_json(Vec::new()), Json::from("{}"));
        assert_eq!(config_json(b"[]".to_vec()), Json::from("[]"));
    }
}
