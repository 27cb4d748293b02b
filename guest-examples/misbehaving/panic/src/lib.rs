//! Misbehaving guest: panics (a trap for the host) when a record has `data.panic == true`;
//! other records are kept unchanged.

include!("../../common.rs");

fn misbehave(event: Event, data: Map<String, Value>) -> Outcome {
    if data.get("panic") == Some(&Value::Bool(true)) {
        panic!("record {} asked to panic", event.id);
    }
    Outcome::Keep
}
