//! s3db destination: writes records into another s3db database (S3, any S3-compatible server,
//! or a directory) so that s3db.js reads them exactly as if it had written them.

pub mod config;
mod sink;

pub use config::S3dbConfig;
pub use sink::S3dbSink;
