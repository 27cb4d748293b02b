//! Misbehaving guest: returns what intake would refuse, chosen by `data.misbehave`:
//! `array-data` (an update whose `data` is a JSON array), `fan-out` (one record made 200,000
//! events), `bad-resource` (an event for resource `a/b`), `no-id` (an event without an id).
//! Other records are kept unchanged.

include!("../../common.rs");

fn misbehave(event: Event, data: Map<String, Value>) -> Outcome {
    let copy = |resource: &str, id: String| Event {
        resource: resource.to_string(),
        id,
        ..event.clone()
    };
    match data.get("misbehave").and_then(Value::as_str) {
        Some("array-data") => Outcome::Update(Documents {
            data: Some(b"[1,2]".to_vec()),
            before: None,
        }),
        Some("fan-out") => Outcome::Many(
            (0..200_000)
                .map(|i| copy(&event.resource, format!("{}-{i}", event.id)))
                .collect(),
        ),
        Some("bad-resource") => Outcome::Many(vec![copy("a/b", event.id.clone())]),
        Some("no-id") => Outcome::Many(vec![copy(&event.resource, String::new())]),
        _ => Outcome::Keep,
    }
}
