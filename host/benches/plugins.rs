//! Cost of a transform plugin per record, in Rust, JavaScript and Python, against the same
//! transform done natively; and the cold start of a component from the cache.
//!
//! `cargo bench -p replicator --bench plugins` (needs `guest-examples/build.sh` and
//! `guest-examples/build-js-python.sh --aot` first; the figures in docs/ are of that build).
//! Prints figures. `BENCH_GUESTS=DIR` takes the components from DIR instead of
//! guest-examples/dist.
//!
//! `BENCH_PROFILE=native` (or a guest's name, e.g. `rust-transform`) runs only that path at
//! batch 100 for `BENCH_PASSES` passes (default 10) over the records and prints no figures, for a
//! profiler. Under `valgrind --tool=callgrind` the difference between two pass counts gives
//! instructions per record, which the noise of a shared machine does not change
//! (docs/benchmarks.md). The pooling allocator is off then: valgrind cannot reserve its space.

// The replicator's own allocator, so both sides are measured as the service runs them.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use replicator::event::{Action, Event, StoredEvent};
use replicator::plugins::PluginsConfig;
use replicator::plugins::{Runtime, Transform, TransformOutcome};
use serde_json::{Value, json};
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `BENCH_GUESTS=DIR` takes the components from another build (an A/B of two guest builds).
fn guest(name: &str) -> PathBuf {
    std::env::var_os("BENCH_GUESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../guest-examples/dist"))
        .join(format!("{name}.wasm"))
}

/// A record of about 300 bytes, as the reference docs' examples use.
fn event(i: u64) -> StoredEvent {
    StoredEvent {
        sequence: i,
        received_at_ms: 0,
        backfill: None,
        event: Event {
            resource: "users".into(),
            action: Action::Insert,
            id: format!("u{i}"),
            data: Some(
                json!({"id": format!("u{i}"), "firstName": "Ana", "lastName": "Lima", "email": "Ana.Lima@Example.com",
                "password": "hunter2", "ssn": "123-45-6789", "creditCard": "4111111111111111", "plan": "pro", "age": 31,
                "address": {"city": "Lisboa", "zip": "1000-001"}, "tags": ["a", "b"]}),
            ),
            before: None,
            timestamp: "2026-11-23T10:00:00.000Z".into(),
            source: Some("app-1".into()),
            metadata: None,
        },
    }
}

/// The example transform's rules, compiled natively: the same source the component is built from.
#[path = "../../guest-examples/rust-transform/src/rules.rs"]
#[allow(dead_code)] // the component uses what the baseline does not
mod rules;

/// The same work natively, with the conversions the host does around a plugin call: the
/// document to JSON bytes, the rules (parse, change, serialise), the result parsed back into
/// a copy of the envelope (as the host builds an `update`'s event: the old document not copied).
fn native(config: &rules::Config, e: &StoredEvent) -> TransformOutcome {
    let bytes = serde_json::to_vec(e.event.data.as_ref().unwrap()).unwrap();
    match rules::apply(config, &bytes, None, rules::sha256_hex) {
        rules::Verdict::Changed { data, .. } => {
            let ev = &e.event;
            let result = StoredEvent {
                sequence: e.sequence,
                received_at_ms: e.received_at_ms,
                backfill: e.backfill.clone(),
                event: Event {
                    resource: ev.resource.clone(),
                    action: ev.action,
                    id: ev.id.clone(),
                    data: Some(serde_json::from_slice(&data).unwrap()),
                    before: ev.before.clone(),
                    timestamp: ev.timestamp.clone(),
                    source: ev.source.clone(),
                    metadata: ev.metadata.clone(),
                },
            };
            TransformOutcome::Emit(vec![result])
        }
        other => panic!("the benchmark's records are changed, not {other:?}"),
    }
}

/// `BENCH_ONLY=rust,native` runs only the scenarios whose label starts with one of these.
fn wanted(label: &str) -> bool {
    std::env::var("BENCH_ONLY").map_or(true, |only| {
        only.split(',').any(|w| label.starts_with(w.trim()))
    })
}

/// Passes over the 1,000 records for Rust and native; each figure is the median pass.
const PASSES: usize = 41;

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn per_record(total: Duration, records: usize) -> f64 {
    total.as_secs_f64() * 1e6 / records as f64
}

/// The path `BENCH_PROFILE` names and the passes to run over it.
fn profile() -> Option<(String, usize)> {
    let name = std::env::var("BENCH_PROFILE").ok()?;
    let passes = std::env::var("BENCH_PASSES").map_or(10, |p| p.parse().expect("BENCH_PASSES"));
    Some((name, passes))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let profile = profile();
    // A fresh cache, so the first load of each guest measures its compilation; a profiler's
    // runs share REPLICATOR_PLUGIN_CACHE instead (compiling under valgrind takes minutes).
    let cache = tempfile::tempdir().unwrap();
    let cache_dir = match std::env::var_os("REPLICATOR_PLUGIN_CACHE") {
        Some(dir) if profile.is_some() => PathBuf::from(dir),
        _ => cache.path().to_path_buf(),
    };
    let config = PluginsConfig {
        cache_dir,
        timeout: Duration::from_secs(30),
        pooling: profile.is_none(),
        ..Default::default()
    };
    let runtime = Runtime::new(config, Default::default()).unwrap();
    let events: Vec<StoredEvent> = (0..1000).map(event).collect();
    println!(
        "bytes per record (data JSON): {}",
        serde_json::to_vec(events[0].event.data.as_ref().unwrap())
            .unwrap()
            .len()
    );

    // Native baseline.
    let rules_config = rules::parse_config(b"{}").unwrap();
    let native_pass = |batch: usize| {
        let start = Instant::now();
        for chunk in events.chunks(batch) {
            for e in chunk {
                std::hint::black_box(native(&rules_config, e));
            }
        }
        per_record(start.elapsed(), events.len())
    };
    if let Some((name, passes)) = &profile
        && name == "native"
    {
        for _ in 0..*passes {
            std::hint::black_box(native_pass(100));
        }
        return;
    }
    // (Not when profiling a guest: the profile is of that path alone.)
    for batch in [1usize, 100]
        .into_iter()
        .filter(|_| wanted("native") && profile.is_none())
    {
        let passes: Vec<f64> = (0..PASSES).map(|_| native_pass(batch)).collect();
        println!(
            "native Rust                 batch {batch:>3}: {:>7.2} µs/record",
            median(passes)
        );
    }

    let no_hash = json!({"hashEmail": false});
    for (name, label, config, rounds) in [
        ("rust-transform", "rust-transform", Value::Null, PASSES),
        ("js-transform", "js-transform", Value::Null, 3),
        ("js-transform", "js-transform (no hash)", no_hash.clone(), 3),
        ("python-transform", "python-transform", Value::Null, 3),
        ("python-transform", "python-transform (no hash)", no_hash, 3),
    ] {
        let profiled = profile.as_ref().filter(|(p, _)| p == label);
        if !wanted(label) || profile.is_some() && profiled.is_none() {
            continue;
        }
        let path = guest(name);
        if !path.is_file() {
            println!(
                "{name}: missing ({}); build the guests first",
                path.display()
            );
            continue;
        }
        let started = Instant::now();
        let t = Transform::load(runtime.clone(), &path, &config)
            .await
            .unwrap();
        let compile = started.elapsed();
        // Cold start from the cached artifact: load, instantiate, init.
        let started = Instant::now();
        let warm = Transform::load(runtime.clone(), &path, &config)
            .await
            .unwrap();
        let cold_start = started.elapsed();
        drop(warm);
        assert!(
            matches!(&t.apply(&events[..1]).await[0], TransformOutcome::Emit(list) if list.len() == 1)
        );
        if let Some((_, passes)) = profiled {
            for _ in 0..*passes {
                for chunk in events.chunks(100) {
                    std::hint::black_box(t.apply(chunk).await);
                }
            }
            return;
        }
        for batch in [1usize, 100] {
            let mut passes = Vec::new();
            let mut native_passes = Vec::new();
            for _ in 0..rounds {
                let start = Instant::now();
                for chunk in events.chunks(batch) {
                    std::hint::black_box(t.apply(chunk).await);
                }
                passes.push(per_record(start.elapsed(), events.len()));
                // The Rust guest is compared with native passes taken in turn with its own, so a
                // burst of noise on this shared machine hits both sides alike.
                if name == "rust-transform" {
                    native_passes.push(native_pass(batch));
                }
            }
            let guest = median(passes);
            print!("{label:<27} batch {batch:>3}: {guest:>7.2} µs/record");
            if native_passes.is_empty() {
                println!();
            } else {
                let native = median(native_passes);
                println!(" (native in turn {native:.2}: {:.2}x)", guest / native);
            }
        }
        println!(
            "{label:<27} compile {:>7.1} ms, cold start from the cache {:>6.2} ms",
            compile.as_secs_f64() * 1e3,
            cold_start.as_secs_f64() * 1e3
        );
    }
}
