//! `replicator backfill`: copies the records an s3db database already holds through the
//! running service's replicators, as the insert events live traffic would produce.
//!
//! Resumable: a checkpoint file keeps, per resource, the last id sent; it is written after
//! each page is durable in the service. Live events win over copies (see pipeline/backfill).

use anyhow::{Context, bail};
use futures::StreamExt;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use super::client::Client;
use crate::s3db::{Connection, Database};

pub struct BackfillArgs {
    pub source: String,
    pub resources: Vec<String>,
    pub replicators: Vec<String>,
    pub checkpoint: PathBuf,
    pub page: usize,
    pub parallel: usize,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Checkpoint {
    source: String,
    backfill: u64,
    /// Resource -> last id sent.
    after: BTreeMap<String, String>,
    done: Vec<String>,
    copied: u64,
}

impl Checkpoint {
    fn load(path: &Path) -> anyhow::Result<Option<Checkpoint>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(Some(serde_json::from_slice(&bytes).with_context(|| {
                format!("{} is not a backfill checkpoint", path.display())
            })?)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("cannot read {}", path.display())),
        }
    }

    fn save(&self, path: &Path) -> anyhow::Result<()> {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, serde_json::to_vec_pretty(self)?)?;
        std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))
    }
}

pub async fn run(args: BackfillArgs, client: Client) -> anyhow::Result<ExitCode> {
    let conn = Connection::parse(&args.source).map_err(anyhow::Error::msg)?;
    let shown = conn.shown.clone();
    let db = Database::connect(conn)
        .await
        .with_context(|| format!("cannot open {shown}"))?;
    let all = db.resource_names();
    let resources: Vec<String> = if args.resources.is_empty() {
        // Plugin resources (the replication log among them) are not user data.
        all.iter()
            .filter(|n| !n.starts_with("plg_"))
            .cloned()
            .collect()
    } else {
        if let Some(missing) = args.resources.iter().find(|r| !all.contains(r)) {
            bail!(
                "{shown} has no resource \"{missing}\" (it has: {})",
                all.join(", ")
            );
        }
        args.resources.clone()
    };

    let mut checkpoint = match Checkpoint::load(&args.checkpoint)? {
        Some(c) if c.source == shown => {
            eprintln!(
                "resuming backfill {} from {}",
                c.backfill,
                args.checkpoint.display()
            );
            c
        }
        Some(c) => bail!(
            "{} belongs to a backfill of {}; remove it or choose another --checkpoint",
            args.checkpoint.display(),
            c.source
        ),
        None => {
            let started = client
                .post(
                    "/v1/backfills",
                    &json!({"replicators": args.replicators, "source": args.source}),
                )
                .await?;
            let c = Checkpoint {
                source: shown.clone(),
                backfill: started["id"].as_u64().unwrap_or(0),
                ..Default::default()
            };
            c.save(&args.checkpoint)?;
            c
        }
    };

    // Count first so the progress bar knows its length.
    let mut total = 0u64;
    for r in resources.iter().filter(|r| !checkpoint.done.contains(r)) {
        let mut after = checkpoint.after.get(r).cloned();
        loop {
            let ids = db.list_ids(r, after.as_deref(), 1000).await?;
            total += ids.len() as u64;
            match ids.last() {
                Some(last) if ids.len() == 1000 => after = Some(last.clone()),
                _ => break,
            }
        }
    }
    let bar = ProgressBar::new(total).with_style(
        ProgressStyle::with_template(
            "{msg:>16} [{bar:30}] {pos}/{len} records, {per_sec}, eta {eta}",
        )
        .expect("a valid template")
        .progress_chars("=> "),
    );
    let started = Instant::now();
    let mut copied = 0u64;
    for r in &resources {
        if checkpoint.done.contains(r) {
            continue;
        }
        let resource = db
            .resource(r)
            .ok_or_else(|| anyhow::anyhow!("resource {r} is no longer in s3db.json"))??;
        bar.set_message(r.clone());
        loop {
            let ids = db
                .list_ids(r, checkpoint.after.get(r).map(String::as_str), args.page)
                .await?;
            let Some(last) = ids.last().cloned() else {
                break;
            };
            let reads: Vec<_> = ids.iter().map(|id| db.get_record(&resource, id)).collect();
            let records: Vec<Value> = futures::stream::iter(reads)
                .buffered(args.parallel)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten() // deleted since listed
                .collect();
            let events: Vec<Value> = records.into_iter().map(|record| event(r, record)).collect();
            if !events.is_empty() {
                client
                    .post(
                        &format!("/v1/events?backfill={}", checkpoint.backfill),
                        &Value::Array(events.clone()),
                    )
                    .await
                    .with_context(|| {
                        format!("sending {r} records after {:?}", checkpoint.after.get(r))
                    })?;
            }
            copied += events.len() as u64;
            checkpoint.copied += events.len() as u64;
            checkpoint.after.insert(r.clone(), last);
            checkpoint.save(&args.checkpoint)?;
            bar.inc(ids.len() as u64);
        }
        checkpoint.done.push(r.clone());
        checkpoint.save(&args.checkpoint)?;
    }
    bar.finish_and_clear();
    client
        .post(
            &format!("/v1/backfills/{}/finish", checkpoint.backfill),
            &json!({}),
        )
        .await?;
    std::fs::remove_file(&args.checkpoint).ok();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "backfill {}: {} records from {} resource(s) accepted ({} this run, {:.0} records/s)",
        checkpoint.backfill,
        checkpoint.copied,
        resources.len(),
        copied,
        copied as f64 / secs.max(1e-9)
    );
    Ok(ExitCode::SUCCESS)
}

/// The insert event live traffic would have produced for this record.
fn event(resource: &str, record: Value) -> Value {
    let id = record["id"].clone();
    let timestamp = ["updatedAt", "createdAt"]
        .iter()
        .find_map(|f| {
            record[*f]
                .as_str()
                .filter(|t| chrono::DateTime::parse_from_rfc3339(t).is_ok())
                .map(str::to_string)
        })
        .unwrap_or_else(crate::event::now_rfc3339);
    json!({"resource": resource, "action": "insert", "id": id, "data": record, "timestamp": timestamp, "source": "backfill"})
}
