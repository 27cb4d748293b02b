//! The events `plugin run` feeds a component: from a file (a JSON array, NDJSON, one object,
//! or the API's `{"events": [...]}`), checked with intake's rules, or from a running host's
//! journal through the API.

use anyhow::{Context, bail};
use serde_json::Value;
use std::path::Path;

use crate::cli::client::Client;
use crate::event::{StoredEvent, now_rfc3339, parse_event};

/// Fields of an envelope that intake does not take but a saved one may carry.
const HOST_FIELDS: [&str; 2] = ["sequence", "destinations"];

/// One event as a component sees it: `sequence` kept when given, else `fallback`.
pub fn stored(value: Value, fallback: u64, now: &str) -> Result<StoredEvent, Vec<String>> {
    let Value::Object(mut map) = value else {
        return Err(vec![format!("expected a JSON object, found {value}")]);
    };
    let sequence = match map.remove("sequence") {
        None | Some(Value::Null) => fallback,
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .ok_or_else(|| vec![format!("\"sequence\" must be a u64, found {v}")])?,
    };
    for field in HOST_FIELDS {
        map.remove(field);
    }
    let event = parse_event(Value::Object(map), now)?;
    Ok(StoredEvent {
        sequence,
        received_at_ms: chrono::Utc::now().timestamp_millis(),
        event,
        backfill: None,
    })
}

/// The events of a file; every invalid one is named by its line or place.
pub fn from_file(path: &Path) -> anyhow::Result<Vec<StoredEvent>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let shown = path.display();
    let items: Vec<(String, Result<Value, String>)> = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Array(list)) => list
            .into_iter()
            .enumerate()
            .map(|(i, v)| (format!("{shown}: item {i}"), Ok(v)))
            .collect(),
        Ok(Value::Object(mut m)) if matches!(m.get("events"), Some(Value::Array(_))) => {
            let Some(Value::Array(list)) = m.remove("events") else {
                unreachable!("matched above")
            };
            list.into_iter()
                .enumerate()
                .map(|(i, v)| (format!("{shown}: events[{i}]"), Ok(v)))
                .collect()
        }
        Ok(single) => vec![(shown.to_string(), Ok(single))],
        // NDJSON: one event per non-empty line.
        Err(_) => text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(n, l)| {
                (
                    format!("{shown}:{}", n + 1),
                    serde_json::from_str(l).map_err(|e| format!("not JSON: {e}")),
                )
            })
            .collect(),
    };
    if items.is_empty() {
        bail!("{shown}: no events");
    }
    let now = now_rfc3339();
    let mut events = Vec::with_capacity(items.len());
    let mut problems = Vec::new();
    for (i, (place, item)) in items.into_iter().enumerate() {
        match item
            .map_err(|e| vec![e])
            .and_then(|v| stored(v, i as u64 + 1, &now))
        {
            Ok(e) => events.push(e),
            Err(errs) => problems.extend(errs.into_iter().map(|e| format!("  {place}: {e}"))),
        }
    }
    if !problems.is_empty() {
        bail!("invalid events:\n{}", problems.join("\n"));
    }
    Ok(events)
}

/// The last `last` events of a replicator's routes, read from a running host.
pub async fn from_host(
    client: &Client,
    replicator: &str,
    last: usize,
) -> anyhow::Result<Vec<StoredEvent>> {
    let mut answer = client
        .get_query(
            &format!("/v1/replicators/{replicator}/events"),
            &[("last", last.to_string())],
        )
        .await?;
    let Some(Value::Array(list)) = answer.get_mut("events").map(Value::take) else {
        bail!("the host answered without an \"events\" list: {answer}");
    };
    let now = now_rfc3339();
    list.into_iter()
        .map(|v| {
            stored(v, 0, &now).map_err(|e| {
                anyhow::anyhow!("the host sent an event I cannot read: {}", e.join("; "))
            })
        })
        .collect()
}
