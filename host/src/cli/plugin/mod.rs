//! `replicator plugin`: the plugin author's path. Scaffold a project (`new`), run a component
//! on real events (`run`), check it against expected outcomes (`test`), check or precompile a
//! component (`check`, `compile`), and swap new versions into a running service (`reload`).

mod cases;
mod diff;
mod events;
mod new;
mod run;

use anyhow::Context;
use clap::{Args, Subcommand};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use super::Remote;
use super::client::Client;
use crate::plugins::World;
use crate::plugins::check::{Grant, Report};
use crate::plugins::driver::DriverPlugin;
use crate::plugins::egress::AllowedHost;
use crate::plugins::{PluginsConfig, Runtime, Transform};

#[derive(Subcommand)]
pub enum PluginAction {
    /// Write a plugin project that builds to a component (SDK, README, cases file, build script).
    New {
        /// The plugin's name (lowercase letters, digits, '-'); also its folder.
        name: String,
        #[arg(long, value_enum)]
        lang: new::Lang,
        #[arg(long, value_enum)]
        kind: new::Kind,
        /// Where to create the folder.
        #[arg(long, default_value = ".")]
        dir: PathBuf,
    },
    /// Run a component on events from a file or from a running service's journal, printing
    /// what becomes of each (kept, changed with a diff, skipped, many, failed), its time and
    /// the instance's memory.
    Run {
        file: PathBuf,
        /// The plugin's config: JSON text, or @FILE.
        #[arg(long)]
        config: Option<String>,
        /// Events as a JSON array, NDJSON or {"events": [...]}.
        #[arg(
            long,
            conflicts_with = "replicator",
            required_unless_present = "replicator"
        )]
        events: Option<PathBuf>,
        /// Use the last events of this replicator's routes, read from the running service.
        #[arg(long)]
        replicator: Option<String>,
        #[arg(long, default_value_t = 20)]
        last: usize,
        /// Drivers: show the batches `replicate` would be called with, without calling it.
        #[arg(long)]
        dry_run: bool,
        /// Drivers: a host (or host:port) the driver may reach; repeatable.
        #[arg(long = "allow-host")]
        allow_hosts: Vec<String>,
        /// One JSON object per input instead of text.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        sandbox: Sandbox,
        #[command(flatten)]
        remote: Remote,
    },
    /// Check a component against a cases file (input events, config, expected outcome);
    /// exits 1 with a diff of each mismatch.
    Test {
        file: PathBuf,
        cases: PathBuf,
        #[command(flatten)]
        sandbox: Sandbox,
    },
    /// Say which world a component implements and what it imports; exit 1 if the sandbox
    /// would refuse it.
    Check {
        file: PathBuf,
        #[command(flatten)]
        sandbox: Sandbox,
    },
    /// Compile a component into the cache so the service starts it without compiling.
    Compile {
        file: PathBuf,
        #[command(flatten)]
        sandbox: Sandbox,
    },
    /// Ask a running service to load every plugin whose file changed (it also watches them).
    Reload {
        #[command(flatten)]
        remote: Remote,
    },
}

/// The sandbox a component runs in here: the service's (its `plugins` section) when given.
#[derive(Args)]
pub struct Sandbox {
    /// The service's config file, for its plugin limits (timeout, memoryLimit...).
    #[arg(long)]
    service_config: Option<PathBuf>,
    /// Where compiled components are kept (the service's `plugins.cacheDir`).
    #[arg(long, env = "REPLICATOR_PLUGIN_CACHE")]
    cache_dir: Option<PathBuf>,
}

impl Sandbox {
    fn config(&self) -> anyhow::Result<PluginsConfig> {
        let mut config = match &self.service_config {
            Some(path) => {
                crate::config::load(path)
                    .map_err(|e| anyhow::anyhow!("{e}"))?
                    .plugins
            }
            None => PluginsConfig::default(),
        };
        if let Some(dir) = &self.cache_dir {
            config.cache_dir = dir.clone();
        }
        Ok(config)
    }

    fn runtime(&self) -> anyhow::Result<Arc<Runtime>> {
        Ok(Runtime::new(self.config()?, Default::default())?)
    }
}

/// `--config`: JSON text or @FILE; `{}` when absent.
fn plugin_config(given: Option<&str>) -> anyhow::Result<Value> {
    let Some(given) = given else {
        return Ok(Value::Object(Default::default()));
    };
    let (text, origin) = match given.strip_prefix('@') {
        Some(path) => (
            std::fs::read_to_string(path).with_context(|| format!("cannot read {path}"))?,
            path.to_string(),
        ),
        None => (given.to_string(), "--config".to_string()),
    };
    serde_json::from_str(&text).with_context(|| format!("{origin} is not JSON"))
}

/// Which kind of plugin a component is; refuses one the sandbox would not run.
fn world_of(runtime: &Runtime, file: &std::path::Path) -> anyhow::Result<World> {
    let report = crate::plugins::check::inspect(runtime, file)?;
    match report.world {
        Some(w) if report.loads() => Ok(w),
        _ => anyhow::bail!(
            "{} cannot run here (see `replicator plugin check {}`)",
            file.display(),
            file.display()
        ),
    }
}

pub async fn run(action: PluginAction) -> anyhow::Result<ExitCode> {
    match action {
        PluginAction::New {
            name,
            lang,
            kind,
            dir,
        } => {
            let (root, written) = new::scaffold(&name, lang, kind, &dir)?;
            println!("{}: {} files", root.display(), written.len());
            println!(
                "next: cd {} && ./build.sh && replicator plugin test {name}.wasm cases.json",
                root.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginAction::Run {
            file,
            config,
            events,
            replicator,
            last,
            dry_run,
            allow_hosts,
            json,
            sandbox,
            remote,
        } => {
            let runtime = sandbox.runtime()?;
            let config = plugin_config(config.as_deref())?;
            let events = match (events, replicator) {
                (Some(path), _) => events::from_file(&path)?,
                (None, Some(r)) => {
                    events::from_host(&Client::new(&remote.url, remote.token), &r, last).await?
                }
                (None, None) => unreachable!("clap requires one"),
            };
            if events.is_empty() {
                anyhow::bail!("no events to run on");
            }
            let allowed = allow_hosts
                .iter()
                .map(|h| AllowedHost::parse(h).map_err(|e| anyhow::anyhow!("--allow-host {e}")))
                .collect::<anyhow::Result<Vec<_>>>()?;
            let timeout = runtime.config().timeout;
            match world_of(&runtime, &file)? {
                World::SinkDriver => {
                    let d =
                        DriverPlugin::load(runtime, &file, &config, allowed, Default::default())
                            .await?;
                    Ok(if dry_run {
                        run::driver_dry_run(&d, &events)
                    } else {
                        run::driver(d, events, timeout).await
                    })
                }
                World::BatchTransformer | World::RecordTransformer => {
                    let t = Transform::load(runtime, &file, &config).await?;
                    Ok(run::transform(t, events, json).await)
                }
            }
        }
        PluginAction::Test {
            file,
            cases,
            sandbox,
        } => {
            let runtime = sandbox.runtime()?;
            match world_of(&runtime, &file)? {
                World::SinkDriver => {
                    // A driver call's deadline in the service is its replicator's `timeout`.
                    cases::drivers(runtime, &file, &cases, Duration::from_secs(30)).await
                }
                World::BatchTransformer | World::RecordTransformer => {
                    cases::transforms(runtime, &file, &cases).await
                }
            }
        }
        PluginAction::Check { file, sandbox } => {
            let runtime = sandbox.runtime()?;
            let report = crate::plugins::check::inspect(&runtime, &file)?;
            print_check(&file, &report);
            Ok(if report.loads() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        PluginAction::Compile { file, sandbox } => {
            let runtime = sandbox.runtime()?;
            let started = std::time::Instant::now();
            let artifact = runtime.precompile(&file)?;
            println!(
                "{} -> {} ({:.1} s)",
                file.display(),
                artifact.display(),
                started.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginAction::Reload { remote } => {
            let out = Client::new(&remote.url, remote.token)
                .post("/v1/plugins/reload", &Value::Object(Default::default()))
                .await?;
            let mut refused = false;
            for p in out["plugins"].as_array().into_iter().flatten() {
                let result = p["result"].as_str().unwrap_or("");
                refused |= result == "refused";
                println!(
                    "{} ({}): {result} {}{}",
                    p["path"].as_str().unwrap_or(""),
                    p["replicator"].as_str().unwrap_or(""),
                    p["digest"].as_str().unwrap_or(""),
                    p["error"]
                        .as_str()
                        .map(|e| format!(": {e}"))
                        .unwrap_or_default()
                );
            }
            Ok(if refused {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
    }
}

fn print_check(file: &std::path::Path, report: &Report) {
    match report.world {
        Some(w) => println!(
            "{}: implements {} (replicator:plugin@0.1.0)",
            file.display(),
            w.name()
        ),
        None => println!(
            "{}: implements none of the worlds of replicator:plugin@0.1.0",
            file.display()
        ),
    }
    println!("exports:");
    for e in &report.exports {
        println!("  {e}");
    }
    println!("imports:");
    for i in &report.imports {
        match &i.grant {
            Grant::Granted => println!("  {}: granted", i.name),
            Grant::Denied(_) => println!("  {}: linked, every use denied", i.name),
            Grant::Refused(_) => println!("  {}: REFUSED", i.name),
        }
    }
    for i in &report.imports {
        if let Grant::Denied(why) | Grant::Refused(why) = &i.grant {
            println!("note: {}: {why}", i.name);
        }
    }
    if let Some(why) = &report.link_error {
        println!("note: {why}");
    }
}
