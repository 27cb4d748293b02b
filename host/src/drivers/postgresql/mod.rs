//! PostgreSQL destination: one table per destination name, batched upserts guarded by
//! sequence so an older event never overwrites a newer one, and schema that follows the data.

pub mod config;
mod schema;
mod sink;

pub use config::PostgresConfig;
pub use sink::PostgresSink;
