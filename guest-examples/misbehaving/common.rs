// Shared by the batch-transformer misbehaving guests (included with `include!`): the
// bindings, a no-op `init`, and `transform-batch` calling the crate's `misbehave` on each
// event's parsed `data` object; `misbehave` returns `None` to keep the event unchanged.

wit_bindgen::generate!({
    path: "../../../wit",
    world: "batch-transformer",
});

use exports::replicator::plugin::batch_transform::Guest;
#[allow(unused_imports)]
use replicator::plugin::transform_types::{Documents, Outcome, TransformError};
#[allow(unused_imports)]
use replicator::plugin::types::{ErrorInfo, Event};
#[allow(unused_imports)]
use serde_json::{Map, Value};

struct Misbehaving;

impl Guest for Misbehaving {
    fn init(_config: Vec<u8>) -> Result<(), TransformError> {
        Ok(())
    }

    fn transform_batch(events: Vec<Event>) -> Vec<Outcome> {
        events
            .into_iter()
            .map(|event| {
                let data = event
                    .data
                    .as_deref()
                    .and_then(|d| serde_json::from_slice::<Value>(d).ok());
                match data {
                    Some(Value::Object(obj)) => misbehave(event, obj),
                    _ => Outcome::Keep,
                }
            })
            .collect()
    }
}

export!(Misbehaving);
