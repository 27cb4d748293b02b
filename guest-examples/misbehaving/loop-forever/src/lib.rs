//! Misbehaving guest: `transform-batch` never returns when a record has `data.loop == true`
//! (the host's per-call deadline must stop it); other records are kept unchanged.

include!("../../common.rs");

fn misbehave(_event: Event, data: Map<String, Value>) -> Outcome {
    if data.get("loop") == Some(&Value::Bool(true)) {
        let mut n: u64 = 0;
        loop {
            // A side effect the optimizer cannot remove, so the loop really spins.
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    Outcome::Keep
}
