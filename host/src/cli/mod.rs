//! The `replicator` command line: `serve` and `validate` run locally; the other commands talk
//! to a running service over its HTTP API (`--url`, `--token`).

mod backfill;
mod client;
mod plugin;

use clap::{Args, Parser, Subcommand};
use std::io::Read;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::config::{self, Config, ConfigError, LogFormat};
use client::Client;
use plugin::PluginAction;

#[derive(Parser)]
#[command(
    name = "replicator",
    version,
    about = "Replication host for s3db: durable intake, ordered delivery, dead letters"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct Remote {
    /// Address of the running service.
    #[arg(
        long,
        env = "REPLICATOR_URL",
        default_value = "http://127.0.0.1:7700",
        global = true
    )]
    url: String,
    /// Bearer token, when the service has `server.token` set.
    #[arg(long, env = "REPLICATOR_TOKEN", hide_env_values = true, global = true)]
    token: Option<String>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service (without --config: journal in ./replicator-data, every resource
    /// replicated to the s3db database file://./replicator-data/replica).
    Serve {
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Listen here instead of `server.listen` (default 127.0.0.1:7700).
        #[arg(long, env = "REPLICATOR_LISTEN")]
        listen: Option<std::net::SocketAddr>,
        /// Keep compiled plugins here instead of `plugins.cacheDir`.
        #[arg(long, env = "REPLICATOR_PLUGIN_CACHE")]
        plugin_cache: Option<PathBuf>,
    },
    /// Check a config file and list every problem with its key path.
    Validate {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Post events from files, stdin (`-`) or --event arguments (JSON, arrays or NDJSON).
    Send {
        files: Vec<PathBuf>,
        /// One event as JSON; repeatable.
        #[arg(long = "event", short = 'e')]
        events: Vec<String>,
        /// Events per request.
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// Show each replicator's progress, backlog, lag and last error.
    Status {
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        remote: Remote,
    },
    /// Inspect and act on the dead-letter queue.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
        #[command(flatten)]
        remote: Remote,
    },
    /// Read the replication log (newest first).
    Log {
        #[command(flatten)]
        filter: LogArgs,
        #[command(flatten)]
        remote: Remote,
    },
    /// Copy the records an s3db database already holds through the replicators (resumable).
    Backfill {
        /// The s3db database to read (s3://, http(s):// or file:// connection string).
        #[arg(long)]
        source: String,
        /// Only these resources (comma separated); default: all but plugin resources.
        #[arg(long, value_delimiter = ',')]
        resources: Vec<String>,
        /// Only to these replicators (comma separated); default: every replicator.
        #[arg(long, value_delimiter = ',')]
        replicators: Vec<String>,
        /// Progress is kept here; run the same command again to resume.
        #[arg(long, default_value = "replicator-backfill.json")]
        checkpoint: PathBuf,
        /// Records per request.
        #[arg(long, default_value_t = 500)]
        page: usize,
        /// Records read at once.
        #[arg(long, default_value_t = 32)]
        parallel: usize,
        #[command(flatten)]
        remote: Remote,
    },
    /// Plugin authors' tools: scaffold, run on real events, test, check, compile, reload.
    Plugin {
        #[command(subcommand)]
        action: PluginAction,
    },
    /// Deliver a replicator's events again from a sequence or a time.
    Replay {
        #[arg(long)]
        replicator: String,
        #[arg(
            long,
            conflicts_with = "from_time",
            required_unless_present = "from_time"
        )]
        from_sequence: Option<u64>,
        /// ISO-8601, e.g. 2026-11-23T10:00:00Z
        #[arg(long)]
        from_time: Option<String>,
        #[command(flatten)]
        remote: Remote,
    },
}

#[derive(Args, Default)]
struct Filter {
    #[arg(long)]
    replicator: Option<String>,
    #[arg(long)]
    resource: Option<String>,
    /// Record id.
    #[arg(long)]
    id: Option<String>,
    /// Substring of the error message.
    #[arg(long)]
    error: Option<String>,
}

#[derive(Args)]
struct LogArgs {
    #[arg(long)]
    replicator: Option<String>,
    #[arg(long)]
    resource: Option<String>,
    /// success, failed or dead_lettered
    #[arg(long)]
    status: Option<String>,
    #[arg(long)]
    id: Option<String>,
    #[arg(long, default_value_t = 50)]
    limit: usize,
}

#[derive(Subcommand)]
enum DlqAction {
    List {
        #[command(flatten)]
        filter: Filter,
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    Show {
        id: u64,
    },
    /// Queue dead letters for delivery again (by id, by filter, or --all).
    Redrive {
        ids: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        #[arg(long)]
        all: bool,
    },
    /// Delete dead letters (by id, by filter, or --all).
    Discard {
        ids: Vec<u64>,
        #[command(flatten)]
        filter: Filter,
        #[arg(long)]
        all: bool,
    },
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    // Colours only for a person at a terminal, never into a log file or journald.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Human => builder.init(),
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Serve {
            config,
            listen,
            plugin_cache,
        } => {
            let mut config = match config {
                Some(path) => match config::load(&path) {
                    Ok(c) => c,
                    Err(e) => return Ok(config_failure(e)),
                },
                None => Config::embedded(),
            };
            if let Some(addr) = listen {
                config.server.listen = addr;
            }
            if let Some(dir) = plugin_cache {
                config.plugins.cache_dir = dir;
            }
            init_logging(config.server.log_format);
            crate::server::serve(config).await?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate { config } => match config::load(&config) {
            Ok(c) => {
                println!(
                    "{}: ok ({} replicator(s))",
                    config.display(),
                    c.replicators.len()
                );
                for r in &c.replicators {
                    let routes: Vec<String> = r
                        .routes
                        .iter()
                        .map(|x| {
                            format!(
                                "{} -> {} [{}]",
                                x.resource,
                                x.destination,
                                x.actions.names().join(",")
                            )
                        })
                        .collect();
                    println!(
                        "  {} ({}{}): {}",
                        r.id,
                        r.driver_config.kind().name(),
                        if r.enabled { "" } else { ", paused" },
                        routes.join("; ")
                    );
                }
                Ok(ExitCode::SUCCESS)
            }
            Err(e) => Ok(config_failure(e)),
        },
        Command::Send {
            files,
            events,
            batch,
            remote,
        } => send(files, events, batch, Client::new(&remote.url, remote.token)).await,
        Command::Status { json, remote } => {
            let status = Client::new(&remote.url, remote.token)
                .get("/v1/status")
                .await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&status)?);
            } else {
                print_status(&status);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Dlq { action, remote } => {
            let client = Client::new(&remote.url, remote.token);
            let out = match action {
                DlqAction::List { filter, limit } => {
                    let mut q = filter.query();
                    q.push(("limit", limit.to_string()));
                    client.get_query("/v1/dlq", &q).await?
                }
                DlqAction::Show { id } => client.get(&format!("/v1/dlq/{id}")).await?,
                DlqAction::Redrive { ids, filter, all } => {
                    client
                        .post("/v1/dlq/redrive", &filter.selection(ids, all))
                        .await?
                }
                DlqAction::Discard { ids, filter, all } => {
                    client
                        .post("/v1/dlq/discard", &filter.selection(ids, all))
                        .await?
                }
            };
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Log { filter, remote } => {
            let mut q = vec![("limit", filter.limit.to_string())];
            for (k, v) in [
                ("replicator", filter.replicator),
                ("resource", filter.resource),
                ("status", filter.status),
                ("id", filter.id),
            ] {
                if let Some(v) = v {
                    q.push((k, v));
                }
            }
            let out = Client::new(&remote.url, remote.token)
                .get_query("/v1/log", &q)
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Plugin { action } => plugin::run(action).await,
        Command::Backfill {
            source,
            resources,
            replicators,
            checkpoint,
            page,
            parallel,
            remote,
        } => {
            let args = backfill::BackfillArgs {
                source,
                resources,
                replicators,
                checkpoint,
                page: page.max(1),
                parallel: parallel.max(1),
            };
            backfill::run(args, Client::new(&remote.url, remote.token)).await
        }
        Command::Replay {
            replicator,
            from_sequence,
            from_time,
            remote,
        } => {
            let body = serde_json::json!({"fromSequence": from_sequence, "fromTime": from_time});
            let body = strip_nulls(body);
            let out = Client::new(&remote.url, remote.token)
                .post(&format!("/v1/replicators/{replicator}/replay"), &body)
                .await?;
            println!("{}", serde_json::to_string_pretty(&out)?);
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn config_failure(e: ConfigError) -> ExitCode {
    eprintln!("{e}");
    ExitCode::FAILURE
}

fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => m.into_iter().filter(|(_, v)| !v.is_null()).collect(),
        other => other,
    }
}

impl Filter {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        [
            ("replicator", &self.replicator),
            ("resource", &self.resource),
            ("id", &self.id),
            ("error", &self.error),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.clone().map(|v| (k, v)))
        .collect()
    }

    fn query(&self) -> Vec<(&'static str, String)> {
        self.pairs()
    }

    fn selection(&self, ids: Vec<u64>, all: bool) -> serde_json::Value {
        let mut m = serde_json::Map::new();
        for (k, v) in self.pairs() {
            m.insert(k.into(), v.into());
        }
        if !ids.is_empty() {
            m.insert("ids".into(), ids.into());
        }
        if all {
            m.insert("all".into(), true.into());
        }
        serde_json::Value::Object(m)
    }
}

fn print_status(status: &serde_json::Value) {
    println!(
        "{:<24} {:<10} {:<9} {:>10} {:>8} {:>8} {:>6} {:>9} {:>8}  last error",
        "replicator",
        "driver",
        "state",
        "delivered",
        "failed",
        "skipped",
        "dlq",
        "backlog",
        "lag s"
    );
    for r in status["replicators"].as_array().into_iter().flatten() {
        println!(
            "{:<24} {:<10} {:<9} {:>10} {:>8} {:>8} {:>6} {:>9} {:>8.1}  {}",
            r["id"].as_str().unwrap_or(""),
            r["driver"].as_str().unwrap_or(""),
            r["state"].as_str().unwrap_or(""),
            r["delivered"].as_u64().unwrap_or(0),
            r["failed"].as_u64().unwrap_or(0),
            r["skipped"].as_u64().unwrap_or(0),
            r["deadLettered"].as_u64().unwrap_or(0),
            r["backlog"].as_u64().unwrap_or(0),
            r["lagSeconds"].as_f64().unwrap_or(0.0),
            r["lastError"].as_str().unwrap_or("-"),
        );
    }
    let sources = status["sources"].as_array().cloned().unwrap_or_default();
    if !sources.is_empty() {
        println!(
            "\n{:<24} {:<18} {:<9} {:>9} {:>9} {:>9} {:>9} {:>8}  last error",
            "source", "mode", "state", "inserts", "updates", "deletes", "skipped", "lag s"
        );
    }
    for s in &sources {
        let skipped: u64 = s["skipped"]
            .as_object()
            .map(|m| m.values().filter_map(serde_json::Value::as_u64).sum())
            .unwrap_or(0);
        println!(
            "{:<24} {:<18} {:<9} {:>9} {:>9} {:>9} {:>9} {:>8.1}  {}",
            s["id"].as_str().unwrap_or(""),
            s["mode"].as_str().unwrap_or(""),
            s["state"].as_str().unwrap_or(""),
            s["captured"]["insert"].as_u64().unwrap_or(0),
            s["captured"]["update"].as_u64().unwrap_or(0),
            s["captured"]["delete"].as_u64().unwrap_or(0),
            skipped,
            s["lagSeconds"].as_f64().unwrap_or(0.0),
            s["lastError"].as_str().unwrap_or("-"),
        );
        if let Some(p) = s.get("lastPass").filter(|p| p.is_object()) {
            println!(
                "{:<24} last pass: {} objects, {} changes, {} requests, {:.2} s",
                "",
                p["objects"],
                p["changes"],
                p["requests"],
                p["seconds"].as_f64().unwrap_or(0.0)
            );
        }
    }
    let plugins = status["plugins"].as_array().cloned().unwrap_or_default();
    if !plugins.is_empty() {
        println!(
            "\n{:<24} {:<10} {:<19} {:<14} {:<25} {:>7}  path, last error",
            "plugin of", "kind", "world", "digest", "loaded at", "reloads"
        );
    }
    for p in &plugins {
        let digest = p["digest"].as_str().unwrap_or("");
        println!(
            "{:<24} {:<10} {:<19} {:<14} {:<25} {:>7}  {}{}",
            p["replicator"].as_str().unwrap_or(""),
            p["kind"].as_str().unwrap_or(""),
            p["world"].as_str().unwrap_or(""),
            &digest[..digest.len().min(12)],
            p["loadedAt"].as_str().unwrap_or(""),
            p["reloads"].as_u64().unwrap_or(0),
            p["path"].as_str().unwrap_or(""),
            p["lastError"]
                .as_str()
                .map(|e| format!("; new version refused: {e}"))
                .unwrap_or_default(),
        );
    }
    let j = &status["journal"];
    println!(
        "journal: head {} oldest kept {} ({} bytes undelivered)",
        j["head"], j["oldestRetained"], j["liveBytes"]
    );
    if let Some(c) = status.get("cluster").filter(|c| c.is_object()) {
        print_cluster(c);
    }
}

/// Cluster mode: the hosts seen and the intake queue.
fn print_cluster(c: &serde_json::Value) {
    println!(
        "\ncluster: this host {}, intake backlog {}{}",
        c["hostId"].as_str().unwrap_or(""),
        c["intakeBacklog"],
        c["lastError"]
            .as_str()
            .map(|e| format!(", last error: {e}"))
            .unwrap_or_default()
    );
    println!(
        "{:<32} {:<6} {:>10} {:<25}  per replicator",
        "host", "alive", "seen s ago", "started at"
    );
    for h in c["hosts"].as_array().into_iter().flatten() {
        let held: Vec<String> = h["replicators"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(r, w)| {
                format!(
                    "{r}: {} held, lag {:.1} s",
                    w["held"],
                    w["lagSeconds"].as_f64().unwrap_or(0.0)
                )
            })
            .collect();
        println!(
            "{:<32} {:<6} {:>10.1} {:<25}  {}",
            h["hostId"].as_str().unwrap_or(""),
            if h["alive"] == true { "yes" } else { "no" },
            h["seenSecondsAgo"].as_f64().unwrap_or(0.0),
            h["startedAt"].as_str().unwrap_or(""),
            held.join(", ")
        );
    }
}

/// One source of events to send, with what to call it in messages.
struct Input {
    name: String,
    text: String,
}

async fn send(
    files: Vec<PathBuf>,
    events: Vec<String>,
    batch: usize,
    client: Client,
) -> anyhow::Result<ExitCode> {
    let mut inputs = Vec::new();
    for (i, e) in events.into_iter().enumerate() {
        inputs.push(Input {
            name: format!("--event #{}", i + 1),
            text: e,
        });
    }
    for f in &files {
        let text = if f.as_os_str() == "-" {
            let mut s = String::new();
            std::io::stdin().read_to_string(&mut s)?;
            s
        } else {
            std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?
        };
        inputs.push(Input {
            name: f.display().to_string(),
            text,
        });
    }
    if inputs.is_empty() {
        anyhow::bail!("nothing to send: give files, '-' for stdin, or --event JSON");
    }
    let mut total = 0usize;
    let mut failed = false;
    for input in inputs {
        // Validate locally first so errors name the file position, and nothing is half-sent.
        let items = match crate::intake::parse_body(input.text.as_bytes(), false) {
            Ok(events) => events,
            Err((msg, items)) => {
                eprintln!("{}: {msg}", input.name);
                for it in items {
                    let at = it
                        .line
                        .map(|l| format!("line {l}"))
                        .unwrap_or_else(|| format!("item {}", it.index));
                    for e in it.errors {
                        eprintln!("  {}:{at}: {e}", input.name);
                    }
                }
                failed = true;
                continue;
            }
        };
        for chunk in items.chunks(batch.max(1)) {
            let out = client
                .post("/v1/events", &serde_json::to_value(chunk)?)
                .await?;
            total += out["accepted"].as_u64().unwrap_or(0) as usize;
        }
    }
    println!("accepted {total} event(s)");
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
