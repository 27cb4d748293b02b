//! s3db destination options.

use crate::options::Section;
use crate::s3db::{Behavior, Connection};

#[derive(Debug, Clone)]
pub struct S3dbConfig {
    pub connection: Connection,
    /// Behavior of resources this host creates (existing ones keep theirs).
    pub behavior: Behavior,
    /// Writes in flight at once within a batch.
    pub parallelism: usize,
}

pub fn parse(s: &mut Section) -> Option<S3dbConfig> {
    let connection = Connection::required(s, "connectionString");
    let region = s.string("region");
    let key_prefix = s.string("keyPrefix");
    let behavior = s
        .choice(
            "behavior",
            &[
                "user-managed",
                "body-overflow",
                "body-only",
                "enforce-limits",
                "truncate-data",
            ],
        )
        .and_then(Behavior::parse)
        .unwrap_or(Behavior::BodyOverflow);
    let parallelism = s.u64_in("parallelism", 1, 1024).unwrap_or(32) as usize;
    let mut connection = connection?;
    if let Some(p) = key_prefix {
        connection = connection.with_prefix(&p);
    }
    if let (Some(r), crate::s3db::connection::Location::S3 { access, .. }) =
        (region, &mut connection.location)
    {
        access.region = r;
    }
    Some(S3dbConfig {
        connection,
        behavior,
        parallelism,
    })
}
