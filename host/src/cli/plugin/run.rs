//! `replicator plugin run`: a component on real events, each input printed with what became
//! of it, its time and the instance's memory, under the service's sandbox limits.

use serde_json::{Value, json};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::diff;
use crate::event::StoredEvent;
use crate::plugins::driver::{DriverPlugin, Failure};
use crate::plugins::driver_types::{DriverError, ErrorInfo};
use crate::plugins::{Transform, TransformFailure, TransformOutcome};

/// What became of one input, in words a plugin author reads.
pub enum Verdict {
    Kept,
    /// The same record with other documents: what changed in `data` and `before`.
    Changed {
        data: Vec<String>,
        before: Vec<String>,
    },
    Skipped,
    /// Other events than the input (several, or another record).
    Many(Vec<StoredEvent>),
    Failed(TransformFailure),
}

impl Verdict {
    pub fn of(input: &StoredEvent, outcome: TransformOutcome) -> Verdict {
        let mut list = match outcome {
            TransformOutcome::Failed(f) => return Verdict::Failed(f),
            TransformOutcome::Emit(list) => list,
        };
        let same_record = |o: &StoredEvent| {
            let (a, b) = (&o.event, &input.event);
            (&a.resource, &a.id, a.action) == (&b.resource, &b.id, b.action)
        };
        match list.len() {
            0 => Verdict::Skipped,
            1 if list[0] == *input => Verdict::Kept,
            1 if same_record(&list[0]) => {
                let out = list.remove(0).event;
                let lines = |a: &Option<Value>, b: &Option<Value>| {
                    diff::lines(
                        a.as_ref().unwrap_or(&Value::Null),
                        b.as_ref().unwrap_or(&Value::Null),
                    )
                };
                Verdict::Changed {
                    data: lines(&input.event.data, &out.data),
                    before: lines(&input.event.before, &out.before),
                }
            }
            _ => Verdict::Many(list),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Verdict::Kept => "kept",
            Verdict::Changed { .. } => "changed",
            Verdict::Skipped => "skipped",
            Verdict::Many(_) => "many",
            Verdict::Failed(_) => "failed",
        }
    }
}

/// `resource/id action #sequence`
pub fn label(e: &StoredEvent) -> String {
    format!(
        "{}/{} {} #{}",
        e.event.resource,
        e.event.id,
        e.event.action.as_str(),
        e.sequence
    )
}

fn mib(bytes: usize) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

/// Runs a transform on each event in turn (one call per record, as its time is measured).
pub async fn transform(t: Arc<Transform>, events: Vec<StoredEvent>, as_json: bool) -> ExitCode {
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    let mut times = Vec::with_capacity(events.len());
    for input in &events {
        let started = Instant::now();
        let outcome = t
            .apply(std::slice::from_ref(input))
            .await
            .pop()
            .expect("one outcome per input");
        let took = started.elapsed();
        let peak = t.memory_peak();
        times.push(took);
        let verdict = Verdict::of(input, outcome);
        *counts.entry(verdict.name()).or_default() += 1;
        if as_json {
            println!("{}", verdict_json(input, &verdict, took, peak));
        } else {
            print_verdict(input, &verdict, took, peak);
        }
    }
    times.sort();
    let total: Duration = times.iter().sum();
    let summary: Vec<String> = counts.iter().map(|(k, n)| format!("{n} {k}")).collect();
    eprintln!(
        "{} record(s): {}; {:.3} ms per record (median {:.3} ms, slowest {:.3} ms); peak memory {}",
        events.len(),
        summary.join(", "),
        total.as_secs_f64() * 1e3 / events.len().max(1) as f64,
        times
            .get(times.len() / 2)
            .map_or(0.0, |d| d.as_secs_f64() * 1e3),
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        mib(t.memory_peak()),
    );
    if counts.contains_key("failed") {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

fn print_verdict(input: &StoredEvent, verdict: &Verdict, took: Duration, peak: usize) {
    let head = format!(
        "{}  {:.3} ms  {}",
        label(input),
        took.as_secs_f64() * 1e3,
        mib(peak)
    );
    match verdict {
        Verdict::Kept => println!("{head}  kept"),
        Verdict::Skipped => println!("{head}  skipped"),
        Verdict::Failed(f) => println!("{head}  FAILED: {f}"),
        Verdict::Changed { data, before } => {
            println!("{head}  changed");
            for l in data {
                println!("    {l}");
            }
            for l in before {
                println!("    before {l}");
            }
        }
        Verdict::Many(list) => {
            println!("{head}  became {} event(s)", list.len());
            for e in list {
                let data = e.event.data.as_ref().map(diff::short).unwrap_or_default();
                println!("    {} {data}", label(e));
            }
        }
    }
}

fn verdict_json(input: &StoredEvent, verdict: &Verdict, took: Duration, peak: usize) -> Value {
    let mut v = json!({
        "input": envelope(input),
        "outcome": verdict.name(),
        "micros": took.as_micros() as u64,
        "memoryPeak": peak,
    });
    match verdict {
        Verdict::Changed { data, before } => {
            v["changes"] = json!({"data": data, "before": before});
        }
        Verdict::Many(list) => v["events"] = list.iter().map(envelope).collect(),
        Verdict::Failed(f) => {
            v["error"] = f.reason.clone().into();
            v["code"] = f.code.clone().into();
        }
        Verdict::Kept | Verdict::Skipped => {}
    }
    v
}

/// An event as senders write it, with its sequence.
pub fn envelope(e: &StoredEvent) -> Value {
    let mut v = serde_json::to_value(&e.event).expect("events serialize");
    v["sequence"] = e.sequence.into();
    v
}

/// The batches a driver's `replicate` would be called with, without calling it.
pub fn driver_dry_run(d: &DriverPlugin, events: &[StoredEvent]) -> ExitCode {
    let info = &d.info;
    let max = if info.max_batch_size == 0 {
        events.len().max(1)
    } else {
        info.max_batch_size as usize
    };
    println!(
        "driver {} {} (world sink-driver): batches of at most {}, {}",
        info.name,
        info.version,
        max,
        if info.idempotent {
            "idempotent"
        } else {
            "not idempotent"
        }
    );
    let batches: Vec<&[StoredEvent]> = events.chunks(max).collect();
    for (i, batch) in batches.iter().enumerate() {
        println!(
            "replicate call {} of {} ({} events):",
            i + 1,
            batches.len(),
            batch.len()
        );
        for e in *batch {
            println!("  {}", envelope(e));
        }
    }
    ExitCode::SUCCESS
}

/// What a driver call's error is called in the WIT.
pub fn error_kind(e: &DriverError) -> (&'static str, &ErrorInfo) {
    match e {
        DriverError::InvalidConfig(i) => ("invalid-config", i),
        DriverError::Unauthorized(i) => ("unauthorized", i),
        DriverError::Retryable(h) => ("retryable", &h.info),
        DriverError::Rejected(i) => ("rejected", i),
        DriverError::Fatal(i) => ("fatal", i),
    }
}

/// Calls a driver for real: `init`, then `replicate` in batches, printing each record's result.
pub async fn driver(d: Arc<DriverPlugin>, events: Vec<StoredEvent>, timeout: Duration) -> ExitCode {
    match d.init().await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            let (kind, info) = error_kind(&e);
            println!(
                "init refused: {kind} ({}): {}",
                info.code,
                d.secrets.mask(&info.message)
            );
            return ExitCode::FAILURE;
        }
        Err(f) => {
            println!("init failed: {}", failure_text(&f));
            return ExitCode::FAILURE;
        }
    }
    let max = (d.info.max_batch_size as usize).max(1);
    let mut failed = false;
    for batch in events.chunks(max) {
        let wit: Vec<_> = batch
            .iter()
            .map(|e| crate::plugins::to_wit(e, &e.event.resource))
            .collect();
        let started = Instant::now();
        let replicated = d.replicate(&wit, timeout).await;
        let took = started.elapsed().as_secs_f64() * 1e3;
        let refused = replicated.refused.join(", ");
        match replicated.result {
            Ok(Ok(result)) => {
                for (i, e) in batch.iter().enumerate() {
                    match result.failed.iter().find(|f| f.index as usize == i) {
                        Some(f) => {
                            failed = true;
                            let (kind, info) = error_kind(&f.error);
                            println!(
                                "{}  {kind} ({}): {}",
                                label(e),
                                info.code,
                                d.secrets.mask(&info.message)
                            );
                        }
                        None => println!("{}  written", label(e)),
                    }
                }
                println!("  batch of {}: {took:.1} ms", batch.len());
            }
            Ok(Err(e)) => {
                failed = true;
                let (kind, info) = error_kind(&e);
                println!(
                    "batch of {} refused: {kind} ({}): {} ({took:.1} ms)",
                    batch.len(),
                    info.code,
                    d.secrets.mask(&info.message)
                );
            }
            Err(f) => {
                failed = true;
                println!(
                    "batch of {} failed: {} ({took:.1} ms)",
                    batch.len(),
                    failure_text(&f)
                );
            }
        }
        if !refused.is_empty() {
            println!("  the sandbox refused requests to {refused} (give --allow-host)");
        }
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

pub fn failure_text(f: &Failure) -> String {
    match f {
        Failure::Call(e) => e.to_string(),
        Failure::NoInstance(m) => format!("no instance could start: {m}"),
    }
}
