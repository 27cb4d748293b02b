//! Transforms: the [`Transform`] trait and the `batch-transform` export behind
//! [`export_transform!`](crate::export_transform).

use crate::bindings::batch_transformer::replicator::plugin::transform_types::{
    Documents, Outcome as WitOutcome, TransformError,
};
use crate::bindings::batch_transformer::replicator::plugin::types as wit;
use crate::{Error, Event, Json, config_json};
use std::cell::RefCell;
use std::thread::LocalKey;

/// What becomes of one event.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Send the event on as it came.
    Keep,
    /// Drop the event.
    Skip,
    /// New documents; `None` leaves one as it came, and the envelope stays as it came. The
    /// cheap way to change a record: only these cross back to the host.
    Update {
        data: Option<Json>,
        before: Option<Json>,
    },
    /// These events instead, zero or more (split, fan out, change the resource or id). Build
    /// each from the input to keep its envelope: `Event { id, ..event.clone() }`.
    Many(Vec<Event>),
    /// This record is invalid (`invalid-record`): the host dead-letters it and goes on.
    Fail(Error),
}

impl Outcome {
    /// New `data`, `before` as it came.
    pub fn update(data: impl Into<Json>) -> Outcome {
        Outcome::Update {
            data: Some(data.into()),
            before: None,
        }
    }

    /// Fails the record as invalid.
    pub fn fail(code: impl Into<String>, message: impl Into<String>) -> Outcome {
        Outcome::Fail(Error::new(code, message))
    }
}

/// A transform: one instance per component instance, made by `init` and kept between calls.
///
/// ```
/// use replicator_plugin::serde_json::{Map, Value};
/// use replicator_plugin::{Error, Event, Json, Outcome, Transform, export_transform};
///
/// /// Removes `password` from every record.
/// struct DropPasswords;
///
/// impl Transform for DropPasswords {
///     fn init(_config: Json) -> Result<Self, Error> {
///         Ok(DropPasswords)
///     }
///
///     fn transform(&mut self, event: Event) -> Result<Outcome, Error> {
///         let Some(data) = &event.data else {
///             return Ok(Outcome::Keep);
///         };
///         let mut doc: Map<String, Value> = data.parse()?;
///         Ok(match doc.remove("password") {
///             Some(_) => Outcome::update(Value::Object(doc)),
///             None => Outcome::Keep,
///         })
///     }
/// }
///
/// export_transform!(DropPasswords);
/// ```
pub trait Transform: Sized + 'static {
    /// Called once before any event with the transform's config (`{}` when none). Refuse a
    /// bad config with [`Error::invalid_config`] naming the key: the replicator stops and says
    /// why.
    fn init(config: Json) -> Result<Self, Error>;

    /// One event. `Err` fails this record only (`other`, with the error's code).
    fn transform(&mut self, event: Event) -> Result<Outcome, Error>;

    /// A whole batch: one result per event, in order (the host fails a batch of any other
    /// length). Override it to share work across a batch.
    fn transform_batch(&mut self, events: Vec<Event>) -> Vec<Result<Outcome, Error>> {
        events.into_iter().map(|e| self.transform(e)).collect()
    }
}

impl From<Result<Outcome, Error>> for WitOutcome {
    fn from(result: Result<Outcome, Error>) -> WitOutcome {
        match result {
            Ok(Outcome::Keep) => WitOutcome::Keep,
            Ok(Outcome::Skip) => WitOutcome::Skip,
            Ok(Outcome::Update { data, before }) => WitOutcome::Update(Documents {
                data: data.map(Json::into_bytes),
                before: before.map(Json::into_bytes),
            }),
            Ok(Outcome::Many(events)) => {
                WitOutcome::Many(events.into_iter().map(wit::Event::from).collect())
            }
            Ok(Outcome::Fail(e)) => WitOutcome::Failed(TransformError::InvalidRecord(e.into())),
            Err(e) => WitOutcome::Failed(TransformError::Other(e.into())),
        }
    }
}

/// Where [`export_transform!`](crate::export_transform) keeps the instance.
pub type Slot<T> = LocalKey<RefCell<Option<T>>>;

pub fn init<T: Transform>(slot: &'static Slot<T>, config: Vec<u8>) -> Result<(), TransformError> {
    let t = T::init(config_json(config)).map_err(|e| TransformError::InvalidConfig(e.into()))?;
    slot.with(|s| *s.borrow_mut() = Some(t));
    Ok(())
}

/// Runs a batch; a batch that comes before `init` gets the instance `init({})` makes.
pub fn transform_batch<T: Transform>(
    slot: &'static Slot<T>,
    events: Vec<wit::Event>,
) -> Vec<WitOutcome> {
    slot.with(|s| {
        let mut s = s.borrow_mut();
        if s.is_none() {
            match T::init(Json::from("{}")) {
                Ok(t) => *s = Some(t),
                Err(e) => {
                    let failed =
                        || WitOutcome::Failed(TransformError::InvalidConfig(e.clone().into()));
                    return events.iter().map(|_| failed()).collect();
                }
            }
        }
        let t = s.as_mut().expect("initialised above");
        t.transform_batch(events.into_iter().map(Event::from).collect())
            .into_iter()
            .map(WitOutcome::from)
            .collect()
    })
}

/// Exports `$t` (a [`Transform`]) as the component's `batch-transform`. Once per component.
#[macro_export]
macro_rules! export_transform {
    ($t:ty) => {
        const _: () = {
            use $crate::__private::transform as sdk;
            ::std::thread_local! {
                static SLOT: ::core::cell::RefCell<::core::option::Option<$t>> =
                    const { ::core::cell::RefCell::new(::core::option::Option::None) };
            }
            struct Export;
            impl sdk::Guest for Export {
                fn init(
                    config: ::std::vec::Vec<u8>,
                ) -> ::core::result::Result<(), sdk::TransformError> {
                    sdk::init(&SLOT, config)
                }
                fn transform_batch(
                    events: ::std::vec::Vec<sdk::Event>,
                ) -> ::std::vec::Vec<sdk::Outcome> {
                    sdk::transform_batch(&SLOT, events)
                }
            }
            $crate::bindings::batch_transformer::export!(
                Export with_types_in $crate::bindings::batch_transformer
            );
        };
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Action;

    /// Drops `data.secret`; fails records with `data.bad`; errs on `data.boom`; fans out on
    /// `data.split`; refuses a config with `bogus`.
    struct Test;

    impl Transform for Test {
        fn init(config: Json) -> Result<Self, Error> {
            match config.value()?.get("bogus") {
                Some(_) => Err(Error::invalid_config("unknown key `bogus`")),
                None => Ok(Test),
            }
        }

        fn transform(&mut self, event: Event) -> Result<Outcome, Error> {
            let Some(data) = &event.data else {
                return Ok(Outcome::Keep);
            };
            let mut doc: serde_json::Map<String, serde_json::Value> = data.parse()?;
            if doc.contains_key("bad") {
                return Ok(Outcome::fail("bad-record", "asked to fail"));
            }
            if doc.contains_key("boom") {
                "x".parse::<u32>()?;
            }
            if doc.contains_key("split") {
                let copy = |id: &str| Event {
                    id: id.into(),
                    ..event.clone()
                };
                return Ok(Outcome::Many(vec![copy("a"), copy("b")]));
            }
            Ok(match doc.remove("secret") {
                Some(_) => Outcome::update(serde_json::Value::Object(doc)),
                None => Outcome::Skip,
            })
        }
    }

    // Checks that the macro expands and its types line up (natively its exports are inert).
    crate::export_transform!(Test);

    thread_local! {
        static SLOT: RefCell<Option<Test>> = const { RefCell::new(None) };
        static UNINIT: RefCell<Option<Test>> = const { RefCell::new(None) };
    }

    fn event(action: wit::Action, data: Option<&str>) -> wit::Event {
        wit::Event {
            resource: "users".into(),
            action,
            id: "u1".into(),
            data: data.map(|d| d.as_bytes().to_vec()),
            before: Some(b"{}".to_vec()),
            timestamp: "2026-01-01T00:00:00.000Z".into(),
            source: None,
            sequence: 3,
            metadata: None,
        }
    }

    fn info(e: &TransformError) -> (&'static str, &str) {
        match e {
            TransformError::InvalidRecord(i) => ("invalid-record", &i.code),
            TransformError::InvalidConfig(i) => ("invalid-config", &i.code),
            TransformError::Other(i) => ("other", &i.code),
        }
    }

    #[test]
    fn outcomes_map_to_the_contract() {
        init(&SLOT, Vec::new()).unwrap();
        let out = transform_batch(
            &SLOT,
            vec![
                event(wit::Action::Insert, Some(r#"{"secret":1,"a":2}"#)),
                event(wit::Action::Update, Some(r#"{"a":2}"#)),
                event(wit::Action::Delete, None),
                event(wit::Action::Insert, Some(r#"{"bad":true}"#)),
                event(wit::Action::Insert, Some(r#"{"boom":true}"#)),
                event(wit::Action::Insert, Some("{not json")),
                event(wit::Action::Update, Some(r#"{"split":true}"#)),
            ],
        );
        assert_eq!(out.len(), 7);
        match &out[0] {
            WitOutcome::Update(d) => {
                assert_eq!(d.data.as_deref(), Some(&br#"{"a":2}"#[..]));
                assert_eq!(d.before, None);
            }
            _ => panic!("expected update"),
        }
        assert!(matches!(out[1], WitOutcome::Skip));
        assert!(matches!(out[2], WitOutcome::Keep));
        let failed: Vec<_> = out[3..6]
            .iter()
            .map(|o| match o {
                WitOutcome::Failed(e) => info(e),
                _ => panic!("expected failed"),
            })
            .collect();
        assert_eq!(
            failed,
            [
                ("invalid-record", "bad-record"),
                ("other", "exception"),
                ("other", "invalid-json")
            ]
        );
        match &out[6] {
            WitOutcome::Many(es) => {
                let ids: Vec<_> = es.iter().map(|e| e.id.as_str()).collect();
                assert_eq!(ids, ["a", "b"]);
                assert!(es.iter().all(|e| e.sequence == 3
                    && matches!(e.action, wit::Action::Update)
                    && e.before.as_deref() == Some(&b"{}"[..])));
            }
            _ => panic!("expected many"),
        }
    }

    #[test]
    fn updated_documents_are_moved() {
        let data = Json::from(r#"{"x":1}"#);
        let ptr = data.as_ptr();
        match WitOutcome::from(Ok(Outcome::update(data))) {
            WitOutcome::Update(d) => {
                let data = d.data.unwrap();
                assert_eq!(data.as_ptr(), ptr);
            }
            _ => panic!("expected update"),
        }
    }

    #[test]
    fn config_errors() {
        match init::<Test>(&SLOT, br#"{"bogus":1}"#.to_vec()) {
            Err(TransformError::InvalidConfig(i)) => {
                assert_eq!(i.code, "invalid-config");
                assert!(i.message.contains("bogus"));
            }
            _ => panic!("expected invalid-config"),
        }
        match init::<Test>(&SLOT, b"[".to_vec()) {
            Err(TransformError::InvalidConfig(i)) => assert_eq!(i.code, "invalid-json"),
            _ => panic!("expected invalid-config"),
        }
    }

    #[test]
    fn a_batch_before_init_gets_the_default_config() {
        let out = transform_batch(&UNINIT, vec![event(wit::Action::Insert, Some("{}"))]);
        assert!(matches!(out[..], [WitOutcome::Skip]));
        assert!(UNINIT.with(|s| s.borrow().is_some()));
        assert_eq!(
            Event::from(event(wit::Action::Insert, None)).action,
            Action::Insert
        );
    }
}
