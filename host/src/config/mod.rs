//! The config file: YAML or JSON with s3db.js ReplicatorPlugin option names.
//!
//! It is read once into typed, validated structures; every problem is reported with its key
//! path, and nothing downstream ever looks at raw config values again.

pub mod cluster;
mod interpolate;
pub mod resources;
pub mod sources;

use serde_json::Value;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use crate::delivery::{ANY_RESOURCE, DeliveryPolicy, RetryStrategy};
use crate::delivery::{ActionSet, Route};
use crate::drivers::s3db::S3dbConfig;
pub use crate::drivers::{DriverConfig, DriverKind};
use crate::options::{Problem, Problems, Section, index, join};
use crate::plugins::PluginsConfig;
pub use crate::redact::Secret;
pub use sources::SourceConfig;

/// Why a config could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {} problem(s):\n{}", problems.len(), problems.iter().map(|p| format!("  {p}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        path: PathBuf,
        problems: Vec<Problem>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub token: Option<Secret>,
    pub max_body_bytes: usize,
    pub log_format: LogFormat,
}

#[derive(Debug, Clone)]
pub struct JournalConfig {
    pub path: PathBuf,
    /// Intake answers 503 once the events not yet delivered everywhere take this much space.
    pub max_bytes: u64,
    /// Delivered events are kept this long so a replicator can be rewound.
    pub retention: Duration,
    /// How many replication-log entries are kept.
    pub log_retention: u64,
    /// Memory the journal may use to cache its file; the backlog itself stays on disk.
    pub cache_bytes: u64,
}

#[derive(Debug, Clone)]
pub struct ReplicatorConfig {
    pub id: String,
    /// A disabled replicator is paused: events are kept for it, nothing is dropped.
    pub enabled: bool,
    pub routes: Vec<Route>,
    pub delivery: DeliveryPolicy,
    pub driver_config: DriverConfig,
}

#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub journal: JournalConfig,
    pub enabled: bool,
    pub verbose: bool,
    pub persist_replicator_log: bool,
    pub replicator_log_resource: String,
    /// Where `persistReplicatorLog` writes (s3db.js writes into its own database; the host
    /// has none, so it is named here).
    pub replicator_log_database: Option<crate::s3db::Connection>,
    pub log_errors: bool,
    pub plugins: PluginsConfig,
    pub replicators: Vec<ReplicatorConfig>,
    /// s3db databases whose changes the host reads from the bucket itself.
    pub sources: Vec<SourceConfig>,
    /// Set in cluster mode: the durable log is SQS FIFO queues shared with other hosts.
    pub cluster: Option<cluster::ClusterConfig>,
}

impl Default for Config {
    /// The embedded default: local journal, local HTTP, no replicators.
    fn default() -> Self {
        Config {
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 7700)),
                token: None,
                max_body_bytes: 16 * 1024 * 1024,
                log_format: LogFormat::Human,
            },
            journal: JournalConfig {
                path: PathBuf::from("./replicator-data"),
                max_bytes: 8 * 1024 * 1024 * 1024,
                retention: Duration::ZERO,
                log_retention: 100_000,
                cache_bytes: 32 * 1024 * 1024,
            },
            enabled: true,
            verbose: false,
            persist_replicator_log: false,
            replicator_log_resource: "replicator_logs".into(),
            replicator_log_database: None,
            log_errors: true,
            plugins: PluginsConfig::default(),
            replicators: Vec::new(),
            sources: Vec::new(),
            cluster: None,
        }
    }
}

impl Config {
    /// `replicator serve` without a config: every resource replicated into an s3db database
    /// in the s3db.js FileSystemClient layout under the journal's directory.
    pub fn embedded() -> Config {
        let mut config = Config::default();
        let replica = config.journal.path.join("replica");
        let connection = crate::s3db::Connection::parse(&format!("file://{}", replica.display()))
            .expect("a file:// connection string parses");
        config.replicators.push(ReplicatorConfig {
            id: "s3db-default".into(),
            enabled: true,
            routes: vec![Route {
                resource: ANY_RESOURCE.into(),
                destination: ANY_RESOURCE.into(),
                named: false,
                actions: ActionSet::ALL,
                transform: None,
                options: Default::default(),
            }],
            delivery: DeliveryPolicy::default(),
            driver_config: DriverConfig::S3db(S3dbConfig {
                connection,
                behavior: crate::s3db::Behavior::BodyOverflow,
                parallelism: 32,
            }),
        });
        config
    }
}

/// Reads and validates a config file (`.yaml`, `.yml` or `.json`).
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let is_json = path.extension().is_some_and(|e| e == "json");
    parse_text(&text, is_json, &|k| std::env::var(k).ok()).map_err(|e| match e {
        ParseError::Syntax(message) => ConfigError::Syntax {
            path: path.to_path_buf(),
            message,
        },
        ParseError::Invalid(problems) => ConfigError::Invalid {
            path: path.to_path_buf(),
            problems,
        },
    })
}

pub enum ParseError {
    Syntax(String),
    Invalid(Vec<Problem>),
}

/// Parses config text; `env` resolves `${VAR}`.
pub fn parse_text(
    text: &str,
    is_json: bool,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Config, ParseError> {
    let mut value: Value = if is_json {
        serde_json::from_str(text).map_err(|e| ParseError::Syntax(format!("invalid JSON: {e}")))?
    } else {
        serde_yaml_ng::from_str(text)
            .map_err(|e| ParseError::Syntax(format!("invalid YAML: {e}")))?
    };
    let problems = Problems::default();
    interpolate::interpolate(&mut value, "", env, &problems);
    let config = normalise(&value, &problems);
    let list = problems.into_vec();
    match config {
        Some(c) if list.is_empty() => Ok(c),
        _ => Err(ParseError::Invalid(list)),
    }
}

fn normalise(value: &Value, problems: &Problems) -> Option<Config> {
    let mut root = Section::open(value, String::new(), problems)?;
    let mut config = Config::default();
    if let Some(mut s) = root.section("server") {
        server(&mut s, &mut config.server);
        s.finish();
    }
    if let Some(mut s) = root.section("journal") {
        journal(&mut s, &mut config.journal);
        s.finish();
    }
    let journal_dir = config.journal.path.clone();
    config.plugins.cache_dir = journal_dir.join("plugin-cache");
    if let Some(mut s) = root.section("plugins") {
        config.plugins.read(&mut s);
        s.finish();
    }
    config.enabled = root.bool("enabled").unwrap_or(true);
    config.verbose = root.bool("verbose").unwrap_or(false);
    config.persist_replicator_log = root.bool("persistReplicatorLog").unwrap_or(false);
    config.log_errors = root.bool("logErrors").unwrap_or(true);
    if let Some(name) = root.string("replicatorLogResource") {
        config.replicator_log_resource = name;
    }
    if let Some(text) = root.string("replicatorLogDatabase") {
        match crate::s3db::Connection::parse(&text) {
            Ok(c) => config.replicator_log_database = Some(c),
            Err(e) => root.problem("replicatorLogDatabase", e),
        }
    }
    // Accepted so a pasted s3db.js config validates; every replicator already runs on its own.
    root.u64("replicatorConcurrency");
    let mut defaults = DeliveryPolicy::default();
    delivery(&mut root, &mut defaults);
    match root.value("replicators") {
        Some(Value::Array(list)) => {
            for (i, item) in list.iter().enumerate() {
                if let Some(r) = replicator(item, i, &defaults, problems) {
                    config.replicators.push(r);
                }
            }
            for (i, r) in config.replicators.iter().enumerate() {
                if config.replicators[..i].iter().any(|o| o.id == r.id) {
                    problems.add(
                        join(&index("replicators", i), "id"),
                        format!("duplicate replicator id \"{}\"", r.id),
                    );
                }
            }
        }
        Some(other) => root.problem(
            "replicators",
            format!(
                "must be a list of replicators, found {}",
                crate::event::kind_of(other)
            ),
        ),
        None => {}
    }
    if let Some(mut s) = root.section("cluster") {
        config.cluster = cluster::parse(&mut s);
        s.finish();
    }
    // In cluster mode the replication log is shared where the rest of the shared state is.
    if let (None, Some(c)) = (&config.replicator_log_database, &config.cluster) {
        config.replicator_log_database = Some(c.state_database.clone());
    }
    if let Some(v) = root.value("sources") {
        config.sources = sources::parse(v, problems);
        refuse_loops(&config, problems);
    }
    root.finish();
    Some(config)
}

/// A source whose database an s3db replicator writes the captured resources back into would
/// capture its own writes forever.
fn refuse_loops(config: &Config, problems: &Problems) {
    for (i, source) in config.sources.iter().enumerate() {
        for r in &config.replicators {
            let DriverConfig::S3db(target) = &r.driver_config else {
                continue;
            };
            let looping = target.connection.same_database(&source.connection)
                && r.routes.iter().any(|route| {
                    route.resource == ANY_RESOURCE || source.captures(&route.resource)
                });
            if looping {
                problems.add(
                    join(&index("sources", i), "connectionString"),
                    format!(
                        "replicator \"{}\" writes the resources this source captures into the same database: \
                         every change would be captured again, forever; capture another database or \
                         narrow one of the resources lists",
                        r.id
                    ),
                );
            }
        }
    }
}

fn server(s: &mut Section, out: &mut ServerConfig) {
    if let Some(listen) = s.string("listen") {
        match listen.parse() {
            Ok(addr) => out.listen = addr,
            Err(_) => s.problem(
                "listen",
                format!("must be an address like 127.0.0.1:7700, found \"{listen}\""),
            ),
        }
    }
    out.token = s.string("token").map(Secret::from);
    if let Some(n) = s.bytes("maxBodyBytes") {
        out.max_body_bytes = n as usize;
    }
    if let Some(f) = s.choice("logFormat", &["human", "json"]) {
        out.log_format = if f == "json" {
            LogFormat::Json
        } else {
            LogFormat::Human
        };
    }
}

fn journal(s: &mut Section, out: &mut JournalConfig) {
    if let Some(p) = s.string("path") {
        out.path = p.into();
    }
    if let Some(n) = s.bytes("maxBytes") {
        out.max_bytes = n;
    }
    if let Some(d) = s.duration("retention") {
        out.retention = d;
    }
    if let Some(n) = s.u64("logRetention") {
        out.log_retention = n;
    }
    if let Some(n) = s.bytes("cacheBytes") {
        out.cache_bytes = n;
    }
}

/// Pipeline options, valid at the top level (defaults) and per replicator.
fn delivery(s: &mut Section, out: &mut DeliveryPolicy) {
    if let Some(n) = s.u64_in("batchSize", 1, 10_000) {
        out.batch_size = n as usize;
    }
    if let Some(n) = s.u64_in("maxRetries", 0, 1_000) {
        out.max_retries = n as u32;
    }
    if let Some(d) = s.duration("timeout") {
        out.timeout = d;
    }
    if let Some(d) = s.duration("retryDelay") {
        out.retry_delay = d;
    }
    if let Some(d) = s.duration("maxRetryDelay") {
        out.max_retry_delay = d;
    }
    if let Some(r) = s
        .choice("retryStrategy", &RetryStrategy::NAMES)
        .and_then(RetryStrategy::parse)
    {
        out.retry_strategy = r;
    }
    if let Some(n) = s.u64_in("concurrency", 1, 256) {
        out.concurrency = n as usize;
    }
    if let Some(d) = s.duration("linger") {
        out.linger = d;
    }
    if let Some(n) = s.u64_in("bufferEvents", 100, 10_000_000) {
        out.buffer_events = n as usize;
    }
    if let Some(b) = s.bool("logSuccesses") {
        out.log_successes = b;
    }
}

const REPLICATOR_KEYS: [&str; 5] = ["id", "driver", "resources", "config", "enabled"];
const DELIVERY_KEYS: [&str; 10] = [
    "batchSize",
    "maxRetries",
    "timeout",
    "retryDelay",
    "maxRetryDelay",
    "retryStrategy",
    "concurrency",
    "linger",
    "bufferEvents",
    "logSuccesses",
];

fn replicator(
    value: &Value,
    i: usize,
    defaults: &DeliveryPolicy,
    problems: &Problems,
) -> Option<ReplicatorConfig> {
    let path = index("replicators", i);
    let mut s = Section::open(value, path.clone(), problems)?;
    let driver_name = s.required_string("driver");
    let driver = driver_name.as_deref().and_then(|name| {
        let kind = DriverKind::parse(name);
        if kind.is_none() {
            s.problem("driver", crate::drivers::unknown_driver(name));
        }
        kind
    });
    let id = s.id("id", || {
        format!(
            "{}-{i}",
            driver.map(DriverKind::name).unwrap_or("replicator")
        )
    });
    let enabled = s.bool("enabled").unwrap_or(true);
    let mut policy = defaults.clone();
    delivery(&mut s, &mut policy);
    let resources_path = s.path_of("resources");
    let routes = match (s.value("resources"), driver) {
        (Some(v), Some(kind)) => resources::parse(v, &resources_path, kind, problems),
        (None, _) => {
            s.problem("resources", "is required");
            Vec::new()
        }
        _ => Vec::new(),
    };

    // s3db.js merges every other replicator key into `config`; so do we, keeping where it was written.
    let mut merged = match s.value("config") {
        Some(Value::Object(m)) => m.clone(),
        Some(other) => {
            s.problem(
                "config",
                format!("must be an object, found {}", crate::event::kind_of(other)),
            );
            Default::default()
        }
        None => Default::default(),
    };
    let mut origins = std::collections::HashMap::new();
    if let Value::Object(map) = value {
        for (k, v) in map {
            if !REPLICATOR_KEYS.contains(&k.as_str()) && !DELIVERY_KEYS.contains(&k.as_str()) {
                merged.insert(k.clone(), v.clone());
                origins.insert(k.clone(), join(&path, k));
            }
        }
        // Mark them read here; the driver's own reader reports the unknown ones.
        for k in origins.keys() {
            s.value(k);
        }
    }
    s.finish();
    let merged = Value::Object(merged);
    let mut cs = Section::open(&merged, join(&path, "config"), problems)?.with_origins(origins);
    let driver_config = driver?.parse_options(&mut cs, &mut policy);
    cs.finish();
    if let Some(c) = &driver_config {
        c.check_routes(&routes, &resources_path, problems);
    }
    Some(ReplicatorConfig {
        id,
        enabled,
        routes,
        delivery: policy,
        driver_config: driver_config?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(yaml: &str) -> Vec<String> {
        match parse_text(yaml, false, &|_| None) {
            Ok(_) => Vec::new(),
            Err(ParseError::Syntax(s)) => vec![s],
            Err(ParseError::Invalid(p)) => p.iter().map(ToString::to_string).collect(),
        }
    }

    #[test]
    fn reports_every_problem_with_its_path() {
        let p = problems(
            r#"
batchSize: 0
replicators:
  - driver: webhook
    resources: {users: {actions: [inserted]}}
    config: {url: "ftp://x", method: GET}
  - driver: postgres
    resources: [users]
    connectionstring: "postgres://x"
  - driver: mongo
    resources: [a]
"#,
        );
        let expected = [
            "batchSize: must be between 1 and 10000, found 0",
            "replicators[0].resources.users.actions[0]: unknown action \"inserted\" (expected insert, update or delete)",
            "replicators[0].config.url: must be an http:// or https:// URL, found \"ftp://x\"",
            "replicators[0].config.method: unknown value \"GET\" (expected POST, PUT, PATCH)",
            "replicators[1].config.connectionString: is required",
            "replicators[1].connectionstring: unknown option \"connectionstring\" (did you mean \"connectionString\"?)",
            "replicators[2].driver: unknown driver \"mongo\" (expected s3db, postgresql, sqs, bigquery, webhook, wasm)",
        ];
        for e in expected {
            assert!(p.iter().any(|x| x == e), "missing {e:?} in {p:#?}");
        }
        assert_eq!(p.len(), expected.len(), "{p:#?}");
    }

    #[test]
    fn a_source_written_back_into_its_own_database_is_refused() {
        let p = problems(
            r#"
sources:
  - id: app
    connectionString: s3://k:s@bucket/app
    resources: [users]
    poll: 1m
  - id: other
    connectionString: s3://k:s@bucket/other
    poll: 1m
replicators:
  - id: copy
    driver: s3db
    resources: ['*']
    config: {connectionString: "s3://k:s@bucket/app"}
  - id: elsewhere
    driver: s3db
    resources: [orders]
    config: {connectionString: "s3://k:s@bucket/other"}
"#,
        );
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(
            p[0].starts_with("sources[0].connectionString: replicator \"copy\" writes"),
            "{p:#?}"
        );
        assert!(
            p[1].starts_with("sources[1].connectionString: replicator \"elsewhere\""),
            "the other source captures every resource, orders too: {p:#?}"
        );
    }

    #[test]
    fn json_config_with_top_level_driver_keys_and_defaults() {
        let c = parse_text(
            r#"{"maxRetries": 5, "replicators": [{"driver": "webhook", "resources": ["users"], "url": "http://127.0.0.1:9/h", "retries": 2}]}"#,
            true,
            &|_| None,
        )
        .ok()
        .unwrap();
        let r = &c.replicators[0];
        assert_eq!(r.id, "webhook-0");
        assert_eq!(
            r.delivery.max_retries, 2,
            "the driver's retries override maxRetries"
        );
    }
}
