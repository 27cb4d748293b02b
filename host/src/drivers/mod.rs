//! Destinations, and the one list of them. Each driver lives in its own folder with the same
//! shape (`mod.rs`: its [`DriverSpec`]; `config.rs`: its options; `driver.rs`: how a batch is
//! written) and is registered by one line in [`registry!`]. Drivers only write; batching,
//! ordering, retries and dead-lettering live in the pipeline. How to add one: docs/drivers.md.

pub mod bigquery;
pub mod postgresql;
pub mod s3db;
pub mod sqs;
pub mod util;
pub mod wasm;
pub mod webhook;

use std::sync::Arc;

pub use crate::delivery::{BatchOutcome, Delivery, DeliveryError, ErrorKind};
use crate::delivery::{DeliveryPolicy, Route};
use crate::options::{Problems, Section};
use crate::plugins::{PluginError, Plugins};

/// A destination.
#[async_trait::async_trait]
pub trait Driver: Send + Sync {
    /// Connects and checks the destination; retried by the pipeline until it succeeds.
    async fn init(&self) -> Result<(), DeliveryError>;

    /// Writes a batch. Deliveries of one key never appear twice in a batch.
    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome;

    /// Releases connections.
    async fn close(&self) {}

    /// What the destination says of itself when it is not healthy (a Wasm driver's `health`:
    /// "degraded: ..." or "unhealthy: ..."); `None` when it is healthy or does not say.
    async fn health(&self) -> Option<String> {
        None
    }

    /// The largest batch the destination takes, when it says (a Wasm driver's `describe`); the
    /// replicator's `batchSize` is lowered to it.
    fn max_batch_size(&self) -> Option<usize> {
        None
    }

    /// Requests sent to the destination so far (for cost figures), when the driver counts them.
    fn requests_made(&self) -> u64 {
        0
    }
}

/// What the host gives a driver to build it.
pub struct BuildContext<'a> {
    /// The replicator being built.
    pub replicator: &'a str,
    /// The Wasm runtime and its plugins, when a replicator needs them.
    pub plugins: Option<&'a Arc<Plugins>>,
    /// The replicator's delivery policy (its `timeout` is a Wasm driver's deadline per
    /// `replicate` call; BigQuery's merger backs off by it).
    pub policy: &'a DeliveryPolicy,
    /// The replicator's routes (a queue driver looks up their queues at start).
    pub routes: &'a [Route],
    /// Where background work (BigQuery's MERGE) reports its failures.
    pub report: Arc<dyn crate::delivery::BackgroundReport>,
}

/// What each driver folder brings to the registry.
#[async_trait::async_trait]
pub trait DriverSpec {
    /// The driver's options, validated.
    type Config: Clone + std::fmt::Debug + Send + Sync;
    /// Keys of a `resources` entry that name this driver's destination, in preference order.
    const DESTINATION_KEYS: &'static [&'static str] = &["resource"];
    /// The driver's own keys of a `resources` entry; they reach it in [`Route::options`] and
    /// are checked in [`DriverSpec::check_routes`].
    const ROUTE_OPTIONS: &'static [&'static str] = &[];
    /// Reads the driver's options (`config` merged with the replicator's other keys), each
    /// problem named with its key path.
    fn parse(options: &mut Section) -> Option<Self::Config>;
    /// Changes the replicator's delivery policy as the driver's options ask (s3db.js names
    /// some retry options per driver).
    fn adjust_delivery(_config: &Self::Config, _policy: &mut DeliveryPolicy) {}
    /// Checks the routes against the options (a queue driver: every route has a queue), each
    /// problem named under `resources_path`.
    fn check_routes(
        _config: &Self::Config,
        _routes: &[Route],
        _resources_path: &str,
        _problems: &Problems,
    ) {
    }
    /// Whether the driver runs a Wasm component.
    fn needs_plugins(_config: &Self::Config) -> bool {
        false
    }
    /// Where it writes, secrets masked, for the start-up log.
    fn describe(config: &Self::Config) -> String;
    async fn build(
        config: &Self::Config,
        context: &BuildContext<'_>,
    ) -> Result<Arc<dyn Driver>, PluginError>;
}

/// The registry: one line per driver, `folder::Spec as Variant ["name", "alias"...]`. It makes
/// [`DriverKind`], [`DriverConfig`] and every match over them, so none can miss a driver.
macro_rules! registry {
    ($($folder:ident :: $spec:ident as $variant:ident [$name:literal $(, $alias:literal)*]),+ $(,)?) => {
        /// The drivers a replicator can name.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum DriverKind { $($variant),+ }

        /// A driver's own options, validated.
        #[derive(Debug, Clone)]
        pub enum DriverConfig { $($variant(<$folder::$spec as DriverSpec>::Config)),+ }

        impl DriverKind {
            pub const ALL: &[DriverKind] = &[$(DriverKind::$variant),+];

            pub fn parse(name: &str) -> Option<DriverKind> {
                match name {
                    $($name $(| $alias)* => Some(DriverKind::$variant),)+
                    _ => None,
                }
            }

            pub fn name(self) -> &'static str {
                match self { $(DriverKind::$variant => $name),+ }
            }

            pub fn destination_keys(self) -> &'static [&'static str] {
                match self { $(DriverKind::$variant => <$folder::$spec as DriverSpec>::DESTINATION_KEYS),+ }
            }

            pub fn route_options(self) -> &'static [&'static str] {
                match self { $(DriverKind::$variant => <$folder::$spec as DriverSpec>::ROUTE_OPTIONS),+ }
            }

            /// Reads the options of a driver of this kind and adjusts the delivery policy.
            pub fn parse_options(self, options: &mut Section, policy: &mut DeliveryPolicy) -> Option<DriverConfig> {
                match self {
                    $(DriverKind::$variant => {
                        let config = <$folder::$spec as DriverSpec>::parse(options)?;
                        <$folder::$spec as DriverSpec>::adjust_delivery(&config, policy);
                        Some(DriverConfig::$variant(config))
                    })+
                }
            }
        }

        impl DriverConfig {
            pub fn kind(&self) -> DriverKind {
                match self { $(DriverConfig::$variant(_) => DriverKind::$variant),+ }
            }

            pub fn needs_plugins(&self) -> bool {
                match self { $(DriverConfig::$variant(c) => <$folder::$spec as DriverSpec>::needs_plugins(c)),+ }
            }

            pub fn check_routes(&self, routes: &[Route], resources_path: &str, problems: &Problems) {
                match self { $(DriverConfig::$variant(c) => <$folder::$spec as DriverSpec>::check_routes(c, routes, resources_path, problems)),+ }
            }

            pub fn describe(&self) -> String {
                match self { $(DriverConfig::$variant(c) => <$folder::$spec as DriverSpec>::describe(c)),+ }
            }

            /// Builds the driver (a Wasm driver is compiled and checked here, so a broken
            /// component stops the start with its reason).
            pub async fn build(&self, context: &BuildContext<'_>) -> Result<Arc<dyn Driver>, PluginError> {
                match self { $(DriverConfig::$variant(c) => <$folder::$spec as DriverSpec>::build(c, context).await),+ }
            }
        }
    };
}

registry! {
    s3db::S3db as S3db ["s3db"],
    postgresql::Postgresql as Postgresql ["postgresql", "postgres"],
    sqs::Sqs as Sqs ["sqs"],
    bigquery::BigQuery as BigQuery ["bigquery"],
    webhook::Webhook as Webhook ["webhook"],
    wasm::Wasm as Wasm ["wasm"],
}

/// Why a driver name is refused, naming what is available.
pub fn unknown_driver(name: &str) -> String {
    let available: Vec<&str> = DriverKind::ALL.iter().map(|k| k.name()).collect();
    format!(
        "unknown driver \"{name}\" (expected {})",
        available.join(", ")
    )
}
