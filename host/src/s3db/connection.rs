//! s3db connection strings: `s3://KEY:SECRET@bucket/prefix` (AWS),
//! `http(s)://KEY:SECRET@host:port/bucket/prefix` (any S3-compatible server, path style) and
//! `file://path` (s3db.js's FileSystemClient layout).

use std::path::PathBuf;

use crate::delivery::aws::{AwsAccess, AwsCredentials};
use crate::redact::Secret;

#[derive(Debug, Clone)]
pub enum Location {
    S3 { bucket: String, access: AwsAccess },
    File { dir: PathBuf },
}

#[derive(Debug, Clone)]
pub struct Connection {
    pub location: Location,
    /// Key prefix inside the bucket (no leading or trailing `/`).
    pub prefix: String,
    /// Metadata budget in bytes (s3db.js: 2047, 8192 on R2).
    pub metadata_limit: usize,
    /// The string with its secret masked, for messages.
    pub shown: String,
}

fn decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

fn clean_prefix(parts: &[&str]) -> String {
    parts
        .iter()
        .filter(|p| !p.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join("/")
}

impl Connection {
    pub fn parse(text: &str) -> Result<Connection, String> {
        let shown = crate::redact::url(text);
        if let Some(path) = text.strip_prefix("file://") {
            let (path, _) = path.split_once('?').unwrap_or((path, ""));
            if path.is_empty() {
                return Err(format!(
                    "\"{shown}\" names no directory (use file:///abs/path or file://./relative)"
                ));
            }
            return Ok(Connection {
                location: Location::File {
                    dir: PathBuf::from(decode(path)),
                },
                prefix: String::new(),
                metadata_limit: super::record::METADATA_LIMIT,
                shown,
            });
        }
        let url = url::Url::parse(text)
            .map_err(|e| format!("\"{shown}\" is not a connection string: {e}"))?;
        let query: std::collections::HashMap<String, String> = url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect();
        let region = query
            .get("region")
            .cloned()
            .unwrap_or_else(|| "us-east-1".into());
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            (user, Some(pass)) if !user.is_empty() => Some(AwsCredentials {
                access_key_id: decode(user),
                secret_access_key: Secret::from(decode(pass)),
                session_token: None,
            }),
            _ => {
                return Err(format!(
                    "\"{shown}\": give both KEY and SECRET (KEY:SECRET@...), or neither"
                ));
            }
        };
        let segments: Vec<&str> = url.path().split('/').filter(|s| !s.is_empty()).collect();
        let (location, prefix) = match url.scheme() {
            "s3" => {
                let bucket = url
                    .host_str()
                    .filter(|h| !h.is_empty())
                    .ok_or_else(|| format!("\"{shown}\" names no bucket"))?;
                (
                    Location::S3 {
                        bucket: bucket.into(),
                        access: AwsAccess {
                            region,
                            endpoint: None,
                            credentials,
                        },
                    },
                    clean_prefix(&segments),
                )
            }
            "http" | "https" => {
                let host = url
                    .host_str()
                    .ok_or_else(|| format!("\"{shown}\" names no host"))?;
                let endpoint = match url.port() {
                    Some(p) => format!("{}://{host}:{p}", url.scheme()),
                    None => format!("{}://{host}", url.scheme()),
                };
                let bucket = segments.first().copied().unwrap_or("s3db").to_string();
                let prefix = clean_prefix(segments.get(1..).unwrap_or_default());
                (
                    Location::S3 {
                        bucket,
                        access: AwsAccess {
                            region,
                            endpoint: Some(endpoint),
                            credentials,
                        },
                    },
                    prefix,
                )
            }
            other => {
                return Err(format!(
                    "\"{shown}\": unknown scheme {other}:// (use s3://, http(s):// or file://)"
                ));
            }
        };
        let metadata_limit = match query.get("metadataLimit") {
            Some(v) => v
                .parse()
                .map_err(|_| format!("\"{shown}\": metadataLimit must be a number of bytes"))?,
            None if url
                .host_str()
                .is_some_and(|h| h.contains(".r2.cloudflarestorage.com")) =>
            {
                8192
            }
            None => super::record::METADATA_LIMIT,
        };
        Ok(Connection {
            location,
            prefix,
            metadata_limit,
            shown,
        })
    }

    /// The connection string at `key` of a config section, which must be there; problems are
    /// reported at its key path.
    pub fn required(s: &mut crate::options::Section, key: &str) -> Option<Connection> {
        let text = s.required_string(key)?;
        Connection::parse(&text).map_err(|e| s.problem(key, e)).ok()
    }

    /// Adds a sub-prefix (the driver's `keyPrefix`).
    pub fn with_prefix(mut self, extra: &str) -> Self {
        self.prefix = clean_prefix(&[self.prefix.as_str(), extra.trim_matches('/')]);
        self
    }

    /// Whether both name the same database: the same bucket on the same server, or the same
    /// directory, and the same prefix.
    pub fn same_database(&self, other: &Connection) -> bool {
        let place = match (&self.location, &other.location) {
            (
                Location::S3 {
                    bucket: a,
                    access: x,
                },
                Location::S3 {
                    bucket: b,
                    access: y,
                },
            ) => a == b && x.endpoint == y.endpoint,
            (Location::File { dir: a }, Location::File { dir: b }) => {
                let canonical = |d: &PathBuf| d.canonicalize().unwrap_or_else(|_| d.clone());
                canonical(a) == canonical(b)
            }
            _ => false,
        };
        place && self.prefix == other.prefix
    }

    /// `prefix/key`, or `key` without a prefix.
    pub fn key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redact::ExposeSecret;

    #[test]
    fn parses_the_three_forms() {
        let c = Connection::parse(
            "http://test:test%2Bsecret@127.0.0.1:8014/s3db/databases/app?region=eu-west-1",
        )
        .unwrap();
        match &c.location {
            Location::S3 { bucket, access } => {
                assert_eq!(access.endpoint.as_deref(), Some("http://127.0.0.1:8014"));
                assert_eq!(bucket, "s3db");
                assert_eq!(access.region, "eu-west-1");
                let credentials = access.credentials.as_ref().unwrap();
                assert_eq!(credentials.secret_access_key.expose_secret(), "test+secret");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(c.prefix, "databases/app");
        assert_eq!(c.key("s3db.json"), "databases/app/s3db.json");
        assert!(!c.shown.contains("secret"));

        let c = Connection::parse("s3://AK:SK@my-bucket/backups").unwrap();
        assert!(matches!(&c.location, Location::S3 { access, .. } if access.endpoint.is_none()));
        assert_eq!(c.prefix, "backups");

        let c = Connection::parse("file://./replicator-data/replica").unwrap();
        assert!(
            matches!(&c.location, Location::File { dir } if dir == &PathBuf::from("./replicator-data/replica"))
        );
        assert_eq!(c.key("s3db.json"), "s3db.json");
        assert!(Connection::parse("ftp://x/y").is_err());
    }
}
