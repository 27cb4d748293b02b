//! Drivers: the [`Driver`] trait and the `driver` export behind
//! [`export_driver!`](crate::export_driver).

use crate::bindings::sink_driver::exports::replicator::plugin::driver as wit_driver;
use crate::bindings::sink_driver::replicator::plugin::types as wit;
use crate::{Error, Event, Json, config_json};
use std::cell::RefCell;
use std::fmt;
use std::thread::LocalKey;

/// What `describe` tells the host (callable before `init`).
#[derive(Debug, Clone, PartialEq)]
pub struct DriverInfo {
    /// e.g. "acme-search"
    pub name: String,
    pub version: String,
    /// JSON Schema of the config.
    pub config_schema: Option<Json>,
    /// The largest batch `replicate` wants (lowers the replicator's `batchSize`).
    pub max_batch_size: u32,
    /// True when writing an event twice has no visible effect.
    pub idempotent: bool,
}

/// Why a batch, or one event of it, was not written. Each kind tells the host what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DriverError {
    /// The config is wrong: nothing is retried until it changes.
    InvalidConfig(Error),
    /// Credentials refused: retried with back-off, shown as failing.
    Unauthorized(Error),
    /// Transient (network, 5xx, throttling): retried with back-off, not before
    /// `retry_after_ms` when given.
    Retryable {
        error: Error,
        retry_after_ms: Option<u32>,
    },
    /// Permanent for this data (a 400): dead-lettered.
    Rejected(Error),
    /// The driver is broken: the host closes the instance and makes a new one.
    Fatal(Error),
}

impl DriverError {
    /// Code `invalid-config`; the message should name the key at fault.
    pub fn invalid_config(message: impl Into<String>) -> DriverError {
        DriverError::InvalidConfig(Error::invalid_config(message))
    }

    pub fn unauthorized(code: impl Into<String>, message: impl Into<String>) -> DriverError {
        DriverError::Unauthorized(Error::new(code, message))
    }

    pub fn retryable(
        code: impl Into<String>,
        message: impl Into<String>,
        retry_after_ms: Option<u32>,
    ) -> DriverError {
        DriverError::Retryable {
            error: Error::new(code, message),
            retry_after_ms,
        }
    }

    pub fn rejected(code: impl Into<String>, message: impl Into<String>) -> DriverError {
        DriverError::Rejected(Error::new(code, message))
    }

    pub fn fatal(code: impl Into<String>, message: impl Into<String>) -> DriverError {
        DriverError::Fatal(Error::new(code, message))
    }

    /// The code and message, whatever the kind.
    pub fn error(&self) -> &Error {
        match self {
            DriverError::InvalidConfig(e)
            | DriverError::Unauthorized(e)
            | DriverError::Rejected(e)
            | DriverError::Fatal(e)
            | DriverError::Retryable { error: e, .. } => e,
        }
    }

    /// The kind as the contract names it: `invalid-config`, `unauthorized`...
    pub fn kind(&self) -> &'static str {
        match self {
            DriverError::InvalidConfig(_) => "invalid-config",
            DriverError::Unauthorized(_) => "unauthorized",
            DriverError::Retryable { .. } => "retryable",
            DriverError::Rejected(_) => "rejected",
            DriverError::Fatal(_) => "fatal",
        }
    }
}

impl fmt::Display for DriverError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.kind(), self.error())
    }
}

/// One event of a batch that was not written; every other event was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventFailure {
    /// Index into the batch given to `replicate`.
    pub index: u32,
    pub error: DriverError,
}

/// Anything but `Ok` shows in the replicator's status (`destinationHealth`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Health {
    Ok,
    Degraded(String),
    Unhealthy(String),
}

/// A driver: one instance per component instance, made by `init` and kept between calls.
///
/// ```
/// use replicator_plugin::{Driver, DriverError, DriverInfo, Event, EventFailure, Json};
/// use replicator_plugin::{export_driver, log};
///
/// /// Logs every batch; writes nothing.
/// struct Logger;
///
/// impl Driver for Logger {
///     fn describe() -> DriverInfo {
///         DriverInfo {
///             name: "logger".into(),
///             version: "0.1.0".into(),
///             config_schema: None,
///             max_batch_size: 100,
///             idempotent: true,
///         }
///     }
///
///     fn init(_config: Json) -> Result<Self, DriverError> {
///         Ok(Logger)
///     }
///
///     fn replicate(&mut self, events: Vec<Event>) -> Result<Vec<EventFailure>, DriverError> {
///         log::info(&format!("{} events", events.len()));
///         Ok(Vec::new())
///     }
/// }
///
/// export_driver!(Logger);
/// ```
pub trait Driver: Sized + 'static {
    fn describe() -> DriverInfo;

    /// Checks the config (`{}` when none) and opens what the driver needs; once per instance.
    fn init(config: Json) -> Result<Self, DriverError>;

    /// Writes a batch (events of one key keep their order): `Ok` with the events that failed
    /// (empty: all written), or `Err` when nothing was written.
    fn replicate(&mut self, events: Vec<Event>) -> Result<Vec<EventFailure>, DriverError>;

    /// Asked of an idle instance whenever the replicator's status is.
    fn health(&mut self) -> Health {
        Health::Ok
    }

    /// Flush and release; the instance is dropped afterwards.
    fn close(&mut self) -> Result<(), DriverError> {
        Ok(())
    }
}

impl From<DriverError> for wit_driver::DriverError {
    fn from(e: DriverError) -> wit_driver::DriverError {
        use wit_driver::DriverError as W;
        match e {
            DriverError::InvalidConfig(e) => W::InvalidConfig(e.into()),
            DriverError::Unauthorized(e) => W::Unauthorized(e.into()),
            DriverError::Retryable {
                error,
                retry_after_ms,
            } => W::Retryable(wit_driver::RetryHint {
                info: error.into(),
                retry_after_ms,
            }),
            DriverError::Rejected(e) => W::Rejected(e.into()),
            DriverError::Fatal(e) => W::Fatal(e.into()),
        }
    }
}

/// Where [`export_driver!`](crate::export_driver) keeps the instance.
pub type Slot<T> = LocalKey<RefCell<Option<T>>>;

pub fn describe<T: Driver>() -> wit_driver::DriverInfo {
    let i = T::describe();
    wit_driver::DriverInfo {
        name: i.name,
        version: i.version,
        config_schema: i.config_schema.map(Json::into_bytes),
        max_batch_size: i.max_batch_size,
        idempotent: i.idempotent,
    }
}

pub fn init<T: Driver>(
    slot: &'static Slot<T>,
    config: Vec<u8>,
) -> Result<(), wit_driver::DriverError> {
    let d = T::init(config_json(config))?;
    slot.with(|s| *s.borrow_mut() = Some(d));
    Ok(())
}

fn not_initialised(call: &str) -> DriverError {
    DriverError::fatal(
        "not-initialised",
        format!("`{call}` was called before `init`"),
    )
}

pub fn replicate<T: Driver>(
    slot: &'static Slot<T>,
    events: Vec<wit::Event>,
) -> Result<wit_driver::ReplicateResult, wit_driver::DriverError> {
    slot.with(|s| {
        let mut s = s.borrow_mut();
        let d = s.as_mut().ok_or_else(|| not_initialised("replicate"))?;
        let failed = d.replicate(events.into_iter().map(Event::from).collect())?;
        Ok(wit_driver::ReplicateResult {
            failed: failed
                .into_iter()
                .map(|f| wit_driver::EventFailure {
                    index: f.index,
                    error: f.error.into(),
                })
                .collect(),
        })
    })
}

pub fn health<T: Driver>(slot: &'static Slot<T>) -> wit_driver::HealthStatus {
    let health = slot.with(|s| s.borrow_mut().as_mut().map(T::health));
    match health {
        Some(Health::Ok) => wit_driver::HealthStatus::Ok,
        Some(Health::Degraded(m)) => wit_driver::HealthStatus::Degraded(m),
        Some(Health::Unhealthy(m)) => wit_driver::HealthStatus::Unhealthy(m),
        None => wit_driver::HealthStatus::Unhealthy("`init` was not called".into()),
    }
}

/// Closes and drops the instance (nothing to do before `init`).
pub fn close<T: Driver>(slot: &'static Slot<T>) -> Result<(), wit_driver::DriverError> {
    match slot.with(|s| s.borrow_mut().take()) {
        Some(mut d) => Ok(d.close()?),
        None => Ok(()),
    }
}

/// Exports `$t` (a [`Driver`]) as the component's `driver`. Once per component.
#[macro_export]
macro_rules! export_driver {
    ($t:ty) => {
        const _: () = {
            use $crate::__private::driver as sdk;
            ::std::thread_local! {
                static SLOT: ::core::cell::RefCell<::core::option::Option<$t>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct Export;
            impl sdk::Guest for Export {
                fn describe() -> sdk::DriverInfo {
                    sdk::describe::<$t>()
                }
                fn init(
                    config: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<(), sdk::DriverError> {
                    sdk::init(&SLOT, config)
                }
                fn replicate(
                    events: ::std::vec::Vec<sdk::Event>,
                ) -> ::core::result::Result<sdk::ReplicateResult, sdk::DriverError> {
                    sdk::replicate(&SLOT, events)
                }
                fn health() -> sdk::HealthStatus {
                    sdk::health(&SLOT)
                }
                fn close() -> ::core::result::Result<(), sdk::DriverError> {
                    sdk::close(&SLOT)
                }
            }
            $crate::bindings::sink_driver::export!(
                Export with_types_in $crate::bindings::sink_driver
            );
        };
    };
}

/// Small key/value state the host keeps for this driver (1 MiB in all), shared by its
/// instances and kept for the life of the process: tokens, the last error.
pub mod state {
    use crate::bindings::sink_driver::replicator::plugin::state as host;

    pub fn get(key: &str) -> Option<Vec<u8>> {
        host::get(key)
    }

    /// Fails when the state would grow past its limit.
    pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
        host::set(key, value)
    }

    pub fn delete(key: &str) {
        host::delete(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit_driver::DriverError as W;

    /// Writes events whose data has `ok`, rejects the others; the whole batch fails with the
    /// error named by the config's `fail`.
    struct Test {
        fail: Option<String>,
        closed: bool,
    }

    impl Driver for Test {
        fn describe() -> DriverInfo {
            DriverInfo {
                name: "test".into(),
                version: "1.0.0".into(),
                config_schema: Some(Json::from(r#"{"type":"object"}"#)),
                max_batch_size: 10,
                idempotent: true,
            }
        }

        fn init(config: Json) -> Result<Self, DriverError> {
            let v = config
                .value()
                .map_err(|e| DriverError::invalid_config(e.message))?;
            if v.get("url").is_some_and(|u| !u.is_string()) {
                return Err(DriverError::invalid_config("`url` must be a string"));
            }
            let fail = v.get("fail").and_then(|f| f.as_str()).map(String::from);
            Ok(Test {
                fail,
                closed: false,
            })
        }

        fn replicate(&mut self, events: Vec<Event>) -> Result<Vec<EventFailure>, DriverError> {
            assert!(!self.closed);
            match self.fail.as_deref() {
                Some("unauthorized") => return Err(DriverError::unauthorized("http-401", "no")),
                Some("retryable") => {
                    return Err(DriverError::retryable("http-429", "slow down", Some(3000)));
                }
                Some("fatal") => return Err(DriverError::fatal("broken", "gone")),
                _ => {}
            }
            Ok(events
                .iter()
                .enumerate()
                .filter(|(_, e)| e.data.as_deref() != Some(&br#"{"ok":true}"#[..]))
                .map(|(i, _)| EventFailure {
                    index: i as u32,
                    error: DriverError::rejected("http-400", "bad"),
                })
                .collect())
        }

        fn health(&mut self) -> Health {
            match &self.fail {
                Some(f) => Health::Degraded(f.clone()),
                None => Health::Ok,
            }
        }

        fn close(&mut self) -> Result<(), DriverError> {
            self.closed = true;
            Ok(())
        }
    }

    // Checks that the macro expands and its types line up (natively its exports are inert).
    crate::export_driver!(Test);

    thread_local! {
        static SLOT: RefCell<Option<Test>> = const { RefCell::new(None) };
    }

    fn event(data: &str) -> wit::Event {
        wit::Event {
            resource: "users".into(),
            action: wit::Action::Insert,
            id: "u1".into(),
            data: Some(data.as_bytes().to_vec()),
            before: None,
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            source: None,
            sequence: 1,
            metadata: None,
        }
    }

    fn kind(e: &W) -> (&'static str, &str) {
        match e {
            W::InvalidConfig(i) => ("invalid-config", &i.code),
            W::Unauthorized(i) => ("unauthorized", &i.code),
            W::Retryable(h) => ("retryable", &h.info.code),
            W::Rejected(i) => ("rejected", &i.code),
            W::Fatal(i) => ("fatal", &i.code),
        }
    }

    #[test]
    fn describe_maps_every_field() {
        let d = describe::<Test>();
        assert_eq!(
            (d.name.as_str(), d.max_batch_size, d.idempotent),
            ("test", 10, true)
        );
        assert_eq!(
            d.config_schema.as_deref(),
            Some(&br#"{"type":"object"}"#[..])
        );
    }

    #[test]
    fn before_init_and_after_close() {
        let e = replicate(&SLOT, vec![]).unwrap_err();
        assert_eq!(kind(&e), ("fatal", "not-initialised"));
        assert!(matches!(
            health(&SLOT),
            wit_driver::HealthStatus::Unhealthy(_)
        ));
        assert!(close(&SLOT).is_ok());
        init(&SLOT, Vec::new()).unwrap();
        assert!(close(&SLOT).is_ok());
        assert!(SLOT.with(|s| s.borrow().is_none()));
    }

    #[test]
    fn config_errors() {
        let e = init(&SLOT, br#"{"url":1}"#.to_vec()).unwrap_err();
        assert_eq!(kind(&e), ("invalid-config", "invalid-config"));
        let e = init(&SLOT, b"nope".to_vec()).unwrap_err();
        assert_eq!(kind(&e), ("invalid-config", "invalid-config"));
    }

    #[test]
    fn per_event_failures_and_batch_errors() {
        init(&SLOT, b"{}".to_vec()).unwrap();
        let r = replicate(
            &SLOT,
            vec![
                event(r#"{"ok":true}"#),
                event("{}"),
                event(r#"{"ok":true}"#),
            ],
        )
        .unwrap();
        let failed: Vec<_> = r.failed.iter().map(|f| (f.index, kind(&f.error))).collect();
        assert_eq!(failed, [(1, ("rejected", "http-400"))]);
        assert!(matches!(health(&SLOT), wit_driver::HealthStatus::Ok));

        for (fail, want) in [
            ("unauthorized", ("unauthorized", "http-401")),
            ("retryable", ("retryable", "http-429")),
            ("fatal", ("fatal", "broken")),
        ] {
            init(&SLOT, format!(r#"{{"fail":"{fail}"}}"#).into_bytes()).unwrap();
            let e = replicate(&SLOT, vec![event("{}")]).unwrap_err();
            assert_eq!(kind(&e), want);
            if let W::Retryable(h) = &e {
                assert_eq!(h.retry_after_ms, Some(3000));
                assert_eq!(h.info.message, "slow down");
            }
            match health(&SLOT) {
                wit_driver::HealthStatus::Degraded(m) => assert_eq!(m, fail),
                _ => panic!("expected degraded"),
            }
        }
    }

    #[test]
    fn errors_read_back() {
        let e = DriverError::retryable("network", "refused", None);
        assert_eq!(
            (e.kind(), e.error().code.as_str()),
            ("retryable", "network")
        );
        assert_eq!(e.to_string(), "retryable (network: refused)");
    }
}
