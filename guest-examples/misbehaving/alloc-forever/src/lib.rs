//! Misbehaving guest: allocates without limit, touching every page, when a record has
//! `data.alloc == true` (the host's memory cap must stop it); other records are kept unchanged.

include!("../../common.rs");

fn misbehave(_event: Event, data: Map<String, Value>) -> Outcome {
    if data.get("alloc") == Some(&Value::Bool(true)) {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            // 1 MiB chunks, each written so the memory is really committed.
            let chunk = vec![0xa5u8; 1 << 20];
            hoard.push(std::hint::black_box(chunk));
        }
    }
    Outcome::Keep
}
