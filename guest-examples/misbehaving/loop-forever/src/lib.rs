//! Misbehaving guest: `transform-batch` never returns when a record has `data.loop == true`
//! (spinning: epoch interruption must stop it) or `data.sleep == true` (blocked in the clock's
//! host call, where no epoch check runs: the host's timer must stop it); other records are kept
//! unchanged.

include!("../../common.rs");

fn misbehave(_event: Event, data: Map<String, Value>) -> Outcome {
    if data.get("sleep") == Some(&Value::Bool(true)) {
        std::thread::sleep(std::time::Duration::from_secs(24 * 3600));
    }
    if data.get("loop") == Some(&Value::Bool(true)) {
        let mut n: u64 = 0;
        loop {
            // A side effect the optimizer cannot remove, so the loop really spins.
            n = std::hint::black_box(n.wrapping_add(1));
        }
    }
    Outcome::Keep
}
