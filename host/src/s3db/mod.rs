//! s3db storage, both directions: reads and writes s3db.js 21.x databases (`s3db.json`, the
//! schema registry, value encoders, behaviors, transport encoding, partitions) on S3 or in a
//! directory. The s3db driver, backfill and the replication log share it.

pub mod base62;
pub mod codec;
pub mod connection;
pub mod database;
pub mod record;
pub mod schema;
pub mod store;
pub mod transport;

pub use connection::Connection;
pub use database::{Database, KeyKind, RecordRead, S3dbError, StoredRecord};
pub use schema::{Behavior, Resource};
