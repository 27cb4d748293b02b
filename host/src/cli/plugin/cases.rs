//! `replicator plugin test`: a component against a cases file (input events, config,
//! expected outcome), each mismatch shown as a diff; the exit code fails a CI job.
//! The format is in docs/plugins.md.

use anyhow::{Context, bail};
use serde::Deserialize;
use serde_json::{Map, Value};
use std::collections::HashMap;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::diff;
use super::events::stored;
use super::run::{envelope, error_kind, failure_text};
use crate::event::StoredEvent;
use crate::plugins::driver::DriverPlugin;
use crate::plugins::egress::AllowedHost;
use crate::plugins::{PluginError, Runtime, Transform, TransformOutcome};

/// The timestamp of a case's events unless it gives one, so outputs are the same every run.
const TIMESTAMP: &str = "2026-01-01T00:00:00.000Z";

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct CasesFile {
    /// The plugin's config for every case.
    #[serde(default)]
    config: Option<Value>,
    /// Fields every case's events start from.
    #[serde(default)]
    event: Map<String, Value>,
    #[serde(default)]
    allow_hosts: Vec<String>,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    name: String,
    config: Option<Value>,
    event: Option<Map<String, Value>>,
    events: Option<Vec<Map<String, Value>>>,
    expect: Value,
}

/// What a case expects of one event through a transform.
enum Expected {
    Keep,
    Skip,
    Documents {
        data: Option<Value>,
        before: Option<Value>,
    },
    Many(Vec<Map<String, Value>>),
    Failed {
        code: Option<String>,
        message: Option<String>,
    },
}

/// What a case expects of a driver's `replicate`.
enum DriverExpected {
    Written,
    Failed(Vec<(u32, String, Option<String>)>),
    Refused { kind: String, code: Option<String> },
}

/// Either plugin kind expects `{"invalidConfig": "text"}` when `init` must refuse.
fn invalid_config(expect: &Value) -> Option<&str> {
    expect.get("invalidConfig").and_then(Value::as_str)
}

fn text(v: &Value, key: &str) -> anyhow::Result<Option<String>> {
    match v.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => bail!("\"{key}\" must be a string, found {other}"),
    }
}

fn transform_expectation(v: &Value) -> anyhow::Result<Expected> {
    Ok(match v {
        Value::String(s) if s == "keep" => Expected::Keep,
        Value::String(s) if s == "skip" => Expected::Skip,
        Value::Object(m) if m.contains_key("many") => match &m["many"] {
            Value::Array(list) => Expected::Many(
                list.iter()
                    .map(|e| {
                        e.as_object()
                            .cloned()
                            .context("each of \"many\" is an object of event fields")
                    })
                    .collect::<anyhow::Result<_>>()?,
            ),
            other => bail!("\"many\" must be a list of events, found {other}"),
        },
        Value::Object(m) if m.contains_key("failed") => {
            let f = &m["failed"];
            if !f.is_object() {
                bail!("\"failed\" must be an object ({{}} or {{\"code\": .., \"message\": ..}})");
            }
            Expected::Failed {
                code: text(f, "code")?,
                message: text(f, "message")?,
            }
        }
        Value::Object(m) if m.keys().all(|k| k == "data" || k == "before") && !m.is_empty() => {
            Expected::Documents {
                data: m.get("data").cloned(),
                before: m.get("before").cloned(),
            }
        }
        other => bail!(
            "expect must be \"keep\", \"skip\", {{\"data\", \"before\"}}, {{\"many\"}}, {{\"failed\"}} or {{\"invalidConfig\"}}; found {other}"
        ),
    })
}

fn driver_expectation(v: &Value) -> anyhow::Result<DriverExpected> {
    Ok(match v {
        Value::String(s) if s == "ok" => DriverExpected::Written,
        Value::Object(m) if m.contains_key("failed") => {
            let Value::Array(list) = &m["failed"] else {
                bail!("\"failed\" must be a list of {{\"index\", \"error\", \"code\"}}");
            };
            let mut out = Vec::new();
            for f in list {
                let index = f
                    .get("index")
                    .and_then(Value::as_u64)
                    .context("each failure needs an \"index\"")?;
                let kind = text(f, "error")?
                    .context("each failure needs an \"error\" (rejected, retryable...)")?;
                out.push((index as u32, kind, text(f, "code")?));
            }
            DriverExpected::Failed(out)
        }
        Value::Object(m) if m.contains_key("error") => DriverExpected::Refused {
            kind: text(v, "error")?.unwrap_or_default(),
            code: text(v, "code")?,
        },
        other => bail!(
            "a driver's expect must be \"ok\", {{\"failed\": [...]}}, {{\"error\": ..}} or {{\"invalidConfig\"}}; found {other}"
        ),
    })
}

/// The events of a case, over the file's defaults.
fn case_events(file: &CasesFile, case: &Case, number: usize) -> anyhow::Result<Vec<StoredEvent>> {
    let given: Vec<&Map<String, Value>> = match (&case.event, &case.events) {
        (Some(e), None) => vec![e],
        (None, Some(list)) => list.iter().collect(),
        (None, None) => bail!("give \"event\" or \"events\""),
        (Some(_), Some(_)) => bail!("give \"event\" or \"events\", not both"),
    };
    given
        .into_iter()
        .enumerate()
        .map(|(i, fields)| {
            let mut merged = file.event.clone();
            merged.extend(fields.clone());
            stored(Value::Object(merged), number as u64, TIMESTAMP)
                .map_err(|e| anyhow::anyhow!("event {i}: {}", e.join("; ")))
        })
        .collect()
}

/// One failed check: what was expected and what came.
struct Mismatch(Vec<String>);

fn compare(
    input: &StoredEvent,
    expected: &Expected,
    got: &TransformOutcome,
) -> Result<(), Mismatch> {
    let outputs = match got {
        TransformOutcome::Failed(f) => {
            return match expected {
                Expected::Failed { code, message } => {
                    let mut problems = Vec::new();
                    if code.is_some() && code != &f.code {
                        problems.push(format!(
                            "expected code {code:?}, got {:?} ({})",
                            f.code, f.reason
                        ));
                    }
                    if let Some(m) = message.as_ref().filter(|m| !f.reason.contains(m.as_str())) {
                        problems.push(format!(
                            "expected the reason to contain {m:?}, got {:?}",
                            f.reason
                        ));
                    }
                    if problems.is_empty() {
                        Ok(())
                    } else {
                        Err(Mismatch(problems))
                    }
                }
                _ => Err(Mismatch(vec![format!("the record failed: {f}")])),
            };
        }
        TransformOutcome::Emit(list) => list,
    };
    let got_text = || match outputs.len() {
        0 => "skipped".to_string(),
        1 if outputs[0] == *input => "kept".to_string(),
        n => format!(
            "{n} event(s): {}",
            outputs
                .iter()
                .map(|e| envelope(e).to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let doc_lines = |what: &str, want: &Value, have: &Option<Value>| {
        diff::lines(want, have.as_ref().unwrap_or(&Value::Null))
            .into_iter()
            .map(|l| format!("{what} {l}"))
            .collect::<Vec<_>>()
    };
    match expected {
        Expected::Keep if outputs.len() == 1 && outputs[0] == *input => Ok(()),
        Expected::Skip if outputs.is_empty() => Ok(()),
        Expected::Documents { data, before } if outputs.len() == 1 => {
            let out = &outputs[0].event;
            let mut lines = Vec::new();
            if let Some(want) = data {
                lines.extend(doc_lines("data", want, &out.data));
            }
            if let Some(want) = before {
                lines.extend(doc_lines("before", want, &out.before));
            }
            if lines.is_empty() {
                return Ok(());
            }
            lines.insert(0, "documents differ (~ /path: expected -> got, + only in what came, - missing from it):".into());
            Err(Mismatch(lines))
        }
        Expected::Many(want) if want.len() == outputs.len() => {
            let mut lines = Vec::new();
            for (i, (w, o)) in want.iter().zip(outputs).enumerate() {
                let have = envelope(o);
                for (k, v) in w {
                    let got = have.get(k).cloned().unwrap_or(Value::Null);
                    for l in diff::lines(v, &got) {
                        lines.push(format!("event {i} {k} {l}"));
                    }
                }
            }
            if lines.is_empty() {
                Ok(())
            } else {
                Err(Mismatch(lines))
            }
        }
        Expected::Keep => Err(Mismatch(vec![format!(
            "expected the event kept as it came, got {}",
            got_text()
        )])),
        Expected::Skip => Err(Mismatch(vec![format!("expected skip, got {}", got_text())])),
        Expected::Documents { .. } => Err(Mismatch(vec![format!(
            "expected one event, got {}",
            got_text()
        )])),
        Expected::Many(want) => Err(Mismatch(vec![format!(
            "expected {} event(s), got {}",
            want.len(),
            got_text()
        )])),
        Expected::Failed { .. } => Err(Mismatch(vec![format!(
            "expected the record to fail, got {}",
            got_text()
        )])),
    }
}

/// The instances of a plugin per config, loaded once each: `Err` keeps why `init` refused.
struct PerConfig<T>(HashMap<String, Result<Arc<T>, PluginError>>);

impl<T> PerConfig<T> {
    async fn get<F, Fut>(&mut self, config: &Value, load: F) -> &Result<Arc<T>, PluginError>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<Arc<T>, PluginError>>,
    {
        let key = config.to_string();
        if !self.0.contains_key(&key) {
            let loaded = load().await;
            self.0.insert(key.clone(), loaded);
        }
        &self.0[&key]
    }
}

fn read(path: &Path) -> anyhow::Result<CasesFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let de = &mut serde_json::Deserializer::from_str(&text);
    serde_path_to_error::deserialize(de)
        .map_err(|e| anyhow::anyhow!("{}: at {}: {}", path.display(), e.path(), e.inner()))
}

/// Tallies and prints the cases' results.
#[derive(Default)]
struct Tally {
    passed: usize,
    failed: usize,
}

impl Tally {
    fn record(&mut self, name: &str, result: Result<(), Mismatch>) {
        match result {
            Ok(()) => {
                self.passed += 1;
                println!("ok    {name}");
            }
            Err(Mismatch(lines)) => {
                self.failed += 1;
                println!("FAIL  {name}");
                for l in lines {
                    println!("      {l}");
                }
            }
        }
    }

    fn finish(self) -> ExitCode {
        println!("{} passed, {} failed", self.passed, self.failed);
        if self.failed == 0 {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    }
}

/// The loaded plugin when the case goes on to call it; otherwise the case's verdict: whether
/// `init` refused the config as it expects.
fn ready<'a, T>(
    loaded: &'a Result<Arc<T>, PluginError>,
    expect: &Value,
) -> Result<&'a Arc<T>, Result<(), Mismatch>> {
    let want = invalid_config(expect);
    match (loaded, want) {
        (Ok(plugin), None) => Ok(plugin),
        (Err(PluginError::Config(_, why)), Some(want)) if why.contains(want) => Err(Ok(())),
        (Err(PluginError::Config(_, why)), Some(want)) => Err(Err(Mismatch(vec![format!(
            "init refused the config as expected, but its reason does not contain {want:?}: {why}"
        )]))),
        (Err(e), _) => Err(Err(Mismatch(vec![format!("the plugin did not load: {e}")]))),
        (Ok(_), Some(want)) => Err(Err(Mismatch(vec![format!(
            "expected init to refuse the config ({want:?}), it accepted it"
        )]))),
    }
}

impl CasesFile {
    /// A case's config: its own, else the file's, else `{}`.
    fn config_of(&self, case: &Case) -> Value {
        case.config
            .clone()
            .or_else(|| self.config.clone())
            .unwrap_or(Value::Object(Map::new()))
    }
}

/// A problem in a case, named by its place in the file.
fn at(cases: &Path, n: usize, case: &Case) -> impl Fn(anyhow::Error) -> anyhow::Error {
    let place = format!("{}: cases[{n}] ({})", cases.display(), case.name);
    move |e| anyhow::anyhow!("{place}: {e}")
}

pub async fn transforms(
    runtime: Arc<Runtime>,
    component: &Path,
    cases: &Path,
) -> anyhow::Result<ExitCode> {
    let file = read(cases)?;
    let mut loaded = PerConfig(HashMap::new());
    let mut tally = Tally::default();
    for (n, case) in file.cases.iter().enumerate() {
        let config = file.config_of(case);
        let t = loaded
            .get(&config, || {
                Transform::load(runtime.clone(), component, &config)
            })
            .await;
        let t = match ready(t, &case.expect) {
            Ok(t) => t,
            Err(verdict) => {
                tally.record(&case.name, verdict);
                continue;
            }
        };
        let at = at(cases, n, case);
        let events = case_events(&file, case, n + 1).map_err(&at)?;
        let expected: Vec<Expected> = match (&case.events, &case.expect) {
            (Some(_), Value::Array(list)) => list
                .iter()
                .map(transform_expectation)
                .collect::<anyhow::Result<_>>()
                .map_err(&at)?,
            (Some(_), _) => {
                return Err(at(anyhow::anyhow!(
                    "with \"events\", expect is a list: one outcome per event"
                )));
            }
            (None, e) => vec![transform_expectation(e).map_err(&at)?],
        };
        if expected.len() != events.len() {
            return Err(at(anyhow::anyhow!(
                "{} event(s) but {} expected outcome(s)",
                events.len(),
                expected.len()
            )));
        }
        let outcomes = t.apply(&events).await;
        let mut problems = Vec::new();
        for (i, ((input, want), got)) in events.iter().zip(&expected).zip(&outcomes).enumerate() {
            if let Err(Mismatch(lines)) = compare(input, want, got) {
                if events.len() > 1 {
                    problems.push(format!("event {i}:"));
                }
                problems.extend(lines);
            }
        }
        tally.record(
            &case.name,
            if problems.is_empty() {
                Ok(())
            } else {
                Err(Mismatch(problems))
            },
        );
    }
    Ok(tally.finish())
}

pub async fn drivers(
    runtime: Arc<Runtime>,
    component: &Path,
    cases: &Path,
    timeout: Duration,
) -> anyhow::Result<ExitCode> {
    let file = read(cases)?;
    let allowed = file
        .allow_hosts
        .iter()
        .map(|h| {
            AllowedHost::parse(h)
                .map_err(|e| anyhow::anyhow!("{}: allowHosts: {e}", cases.display()))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut loaded = PerConfig(HashMap::new());
    let mut tally = Tally::default();
    for (n, case) in file.cases.iter().enumerate() {
        let config = file.config_of(case);
        let d = loaded
            .get(&config, || async {
                let d = DriverPlugin::load(
                    runtime.clone(),
                    component,
                    &config,
                    allowed.clone(),
                    Default::default(),
                )
                .await?;
                // `init` refusing is what a config case looks for.
                match d.init().await {
                    Ok(Ok(())) => Ok(d),
                    Ok(Err(e)) => {
                        let (kind, info) = error_kind(&e);
                        Err(PluginError::Config(
                            d.name.to_string(),
                            d.secrets
                                .mask(&format!("{kind} ({}): {}", info.code, info.message)),
                        ))
                    }
                    Err(f) => Err(PluginError::Trap(d.name.to_string(), failure_text(&f))),
                }
            })
            .await;
        let d = match ready(d, &case.expect) {
            Ok(d) => d,
            Err(verdict) => {
                tally.record(&case.name, verdict);
                continue;
            }
        };
        let at = at(cases, n, case);
        let events = case_events(&file, case, n + 1).map_err(&at)?;
        let expected = driver_expectation(&case.expect).map_err(&at)?;
        let wit: Vec<_> = events
            .iter()
            .map(|e| crate::plugins::to_wit(e, &e.event.resource))
            .collect();
        let replicated = d.replicate(&wit, timeout).await;
        let result = match (replicated.result, expected) {
            (Ok(Ok(r)), DriverExpected::Written) if r.failed.is_empty() => Ok(()),
            (Ok(Ok(r)), DriverExpected::Failed(want)) => {
                let got: Vec<(u32, String, Option<String>)> = r
                    .failed
                    .iter()
                    .map(|f| {
                        let (kind, info) = error_kind(&f.error);
                        (f.index, kind.to_string(), Some(info.code.clone()))
                    })
                    .collect();
                let matches = want.len() == got.len()
                    && want
                        .iter()
                        .zip(&got)
                        .all(|(w, g)| w.0 == g.0 && w.1 == g.1 && (w.2.is_none() || w.2 == g.2));
                if matches {
                    Ok(())
                } else {
                    Err(Mismatch(vec![format!(
                        "expected failures {want:?}, got {got:?} (index, error, code)"
                    )]))
                }
            }
            (Ok(Err(e)), DriverExpected::Refused { kind, code }) => {
                let (got_kind, info) = error_kind(&e);
                if got_kind == kind
                    && (code.is_none() || code.as_deref() == Some(info.code.as_str()))
                {
                    Ok(())
                } else {
                    Err(Mismatch(vec![format!(
                        "expected the batch refused as {kind} {code:?}, got {got_kind} ({}): {}",
                        info.code,
                        d.secrets.mask(&info.message)
                    )]))
                }
            }
            (Ok(Ok(r)), _) => Err(Mismatch(vec![format!(
                "got per-record failures {:?}",
                r.failed
                    .iter()
                    .map(|f| (f.index, error_kind(&f.error).0))
                    .collect::<Vec<_>>()
            )])),
            (Ok(Err(e)), _) => {
                let (kind, info) = error_kind(&e);
                Err(Mismatch(vec![format!(
                    "the batch was refused: {kind} ({}): {}",
                    info.code,
                    d.secrets.mask(&info.message)
                )]))
            }
            (Err(f), _) => Err(Mismatch(vec![format!(
                "the call failed: {}",
                failure_text(&f)
            )])),
        };
        tally.record(&case.name, result);
    }
    Ok(tally.finish())
}
