//! replicator: the replication host for s3db.
//!
//! An event's path through the host: `intake` (HTTP) or `capture` (read from the bucket) ->
//! `journal` (durable, ordered) -> `pipeline` (routing, batching, retries, dead letters) ->
//! `drivers` (destinations).
//! `admin` serves monitoring; `config` reads the config file; `cli` is the command line.

pub mod admin;
pub mod capture;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod delivery;
pub mod drivers;
pub mod event;
pub mod http;
pub mod intake;
pub mod journal;
pub mod options;
pub mod pipeline;
pub mod plugins;
pub mod redact;
pub mod s3db;
pub mod server;
