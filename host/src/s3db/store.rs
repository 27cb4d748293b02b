//! Where objects live: an S3 bucket (aws-sdk-s3, path style for other servers) or a directory
//! in s3db.js's FileSystemClient layout (body file plus a `.meta.json` sidecar).
//! Every request is counted, so the cost per replicated event can be measured.

use aws_sdk_s3::error::SdkError;
use aws_sdk_s3::primitives::ByteStream;
use md5::{Digest, Md5};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use super::connection::{Connection, Location};
use crate::delivery::{ErrorKind, aws};
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// The underlying failure of a request: the SDK's or the file system's error.
pub type Cause = std::sync::Arc<dyn std::error::Error + Send + Sync>;

/// A failed request: how to treat it, what it was (with the database shown, secrets masked),
/// and its cause when there is one.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StoreError {
    pub kind: ErrorKind,
    pub message: String,
    #[source]
    pub cause: Option<Cause>,
}

impl StoreError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        StoreError {
            kind,
            message: message.into(),
            cause: None,
        }
    }

    fn caused_by(mut self, cause: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.cause = Some(std::sync::Arc::new(cause));
        self
    }
}

/// An object as read back.
#[derive(Debug, Clone, Default)]
pub struct Object {
    pub metadata: BTreeMap<String, String>,
    pub body: Vec<u8>,
    pub stamp: Stamp,
}

/// What tells one write of an object from another, as listing and reading report it: on S3
/// the size and last-modified time, and the ETag where the server gives it; in a directory the
/// sizes and modification times of the body file and its sidecar. Change capture compares
/// stamps to find what changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stamp {
    pub fingerprint: String,
    /// Some S3-compatible servers leave it out of listings.
    pub etag: Option<String>,
    /// Milliseconds since the epoch (S3 keeps whole seconds).
    pub last_modified_ms: i64,
}

impl Stamp {
    /// Whether `self` may be the same write as one stamped `fingerprint` and `etag`: an ETag
    /// missing on either side is no difference.
    pub fn matches(&self, fingerprint: &str, etag: Option<&str>) -> bool {
        self.fingerprint == fingerprint
            && match (self.etag.as_deref(), etag) {
                (Some(a), Some(b)) => a == b,
                _ => true,
            }
    }
}

/// A key found by listing, with its stamp.
#[derive(Debug, Clone)]
pub struct Listed {
    pub key: String,
    pub stamp: Stamp,
}

/// `put` with `create_only` found the key taken.
#[derive(Debug, PartialEq, Eq)]
pub enum Put {
    Written,
    AlreadyExists,
}

enum Backend {
    S3 {
        client: aws_sdk_s3::Client,
        bucket: String,
    },
    File {
        dir: PathBuf,
    },
}

pub struct Store {
    backend: Backend,
    requests: AtomicU64,
    shown: String,
}

impl Store {
    pub async fn open(conn: &Connection) -> Store {
        let backend = match &conn.location {
            Location::File { dir } => Backend::File { dir: dir.clone() },
            Location::S3 { bucket, access } => {
                let config = aws_sdk_s3::config::Builder::from(&access.sdk_config().await)
                    .force_path_style(access.endpoint.is_some())
                    .build();
                Backend::S3 {
                    client: aws_sdk_s3::Client::from_conf(config),
                    bucket: bucket.clone(),
                }
            }
        };
        Store {
            backend,
            requests: AtomicU64::new(0),
            shown: conn.shown.clone(),
        }
    }

    /// Requests made so far.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    fn count(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
    }

    pub async fn put(
        &self,
        key: &str,
        body: &[u8],
        metadata: &BTreeMap<String, String>,
        content_type: Option<&str>,
        create_only: bool,
    ) -> Result<Put, StoreError> {
        self.count();
        match &self.backend {
            Backend::S3 { client, bucket } => {
                let mut req = client
                    .put_object()
                    .bucket(bucket)
                    .key(key)
                    .body(ByteStream::from(body.to_vec()));
                for (k, v) in metadata {
                    req = req.metadata(k, v);
                }
                if let Some(ct) = content_type {
                    req = req.content_type(ct);
                }
                if create_only {
                    req = req.if_none_match("*");
                }
                match req.send().await {
                    Ok(_) => Ok(Put::Written),
                    Err(e) if aws::status(&e) == Some(412) => Ok(Put::AlreadyExists),
                    Err(e) => Err(self.s3_error("PUT", key, e)),
                }
            }
            Backend::File { dir } => {
                let path = dir.join(key);
                if create_only && tokio::fs::try_exists(&path).await.unwrap_or(false) {
                    return Ok(Put::AlreadyExists);
                }
                write_file_object(&path, body, metadata, content_type)
                    .await
                    .map_err(|e| self.io_error("write", key, e))?;
                Ok(Put::Written)
            }
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Object>, StoreError> {
        self.count();
        match &self.backend {
            Backend::S3 { client, bucket } => {
                match client.get_object().bucket(bucket).key(key).send().await {
                    Ok(out) => {
                        let stamp = s3_stamp(
                            out.e_tag(),
                            out.content_length().unwrap_or(0),
                            out.last_modified(),
                        );
                        let metadata = out
                            .metadata()
                            .cloned()
                            .unwrap_or_default()
                            .into_iter()
                            .collect();
                        let body = out.body.collect().await.map_err(|e| {
                            StoreError::new(ErrorKind::Transient, format!("reading {key}: {e}"))
                                .caused_by(e)
                        })?;
                        Ok(Some(Object {
                            metadata,
                            body: body.into_bytes().to_vec(),
                            stamp,
                        }))
                    }
                    Err(e) if aws::status(&e) == Some(404) => Ok(None),
                    Err(e) => Err(self.s3_error("GET", key, e)),
                }
            }
            Backend::File { dir } => {
                let path = dir.join(key);
                let body = match tokio::fs::read(&path).await {
                    Ok(b) => b,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
                    Err(e) => return Err(self.io_error("read", key, e)),
                };
                let stamp = file_stamp(&path).await.unwrap_or_default();
                let sidecar = tokio::fs::read(sidecar_of(&path)).await.unwrap_or_default();
                let meta: Value = serde_json::from_slice(&sidecar).unwrap_or(Value::Null);
                let metadata = meta["metadata"]
                    .as_object()
                    .map(|m| {
                        m.iter()
                            .filter_map(|(k, v)| v.as_str().map(|s| (k.clone(), s.to_string())))
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Some(Object {
                    metadata,
                    body,
                    stamp,
                }))
            }
        }
    }

    pub async fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.count();
        match &self.backend {
            Backend::S3 { client, bucket } => {
                match client.delete_object().bucket(bucket).key(key).send().await {
                    Ok(_) => Ok(()),
                    Err(e) if aws::status(&e) == Some(404) => Ok(()),
                    Err(e) => Err(self.s3_error("DELETE", key, e)),
                }
            }
            Backend::File { dir } => {
                let path = dir.join(key);
                for p in [sidecar_of(&path), path] {
                    match tokio::fs::remove_file(&p).await {
                        Ok(()) => {}
                        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                        Err(e) => return Err(self.io_error("delete", key, e)),
                    }
                }
                Ok(())
            }
        }
    }

    /// Keys under `prefix`, in order, after `start_after`, at most `max`, with their stamps.
    pub async fn list(
        &self,
        prefix: &str,
        start_after: Option<&str>,
        max: usize,
    ) -> Result<Vec<Listed>, StoreError> {
        self.count();
        match &self.backend {
            Backend::S3 { client, bucket } => {
                let mut req = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(prefix)
                    .max_keys(max.min(1000) as i32);
                if let Some(after) = start_after {
                    req = req.start_after(after);
                }
                let out = req
                    .send()
                    .await
                    .map_err(|e| self.s3_error("LIST", prefix, e))?;
                Ok(out
                    .contents()
                    .iter()
                    .filter_map(|o| {
                        Some(Listed {
                            key: o.key()?.to_string(),
                            stamp: s3_stamp(o.e_tag(), o.size().unwrap_or(0), o.last_modified()),
                        })
                    })
                    .collect())
            }
            Backend::File { dir } => {
                let dir = dir.clone();
                let prefix = prefix.to_string();
                let after = start_after.map(str::to_string);
                let keys = tokio::task::spawn_blocking(move || {
                    list_files(&dir, &prefix, after.as_deref(), max)
                })
                .await
                .map_err(|e| StoreError::new(ErrorKind::Transient, e.to_string()).caused_by(e))?;
                keys.map_err(|e| self.io_error("list", "", e))
            }
        }
    }

    fn s3_error<E>(
        &self,
        op: &str,
        key: &str,
        e: SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> StoreError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        StoreError::new(
            aws::error_kind(&e),
            format!("{op} {key} on {}: {}", self.shown, aws::describe(&e)),
        )
        .caused_by(e)
    }

    fn io_error(&self, op: &str, key: &str, e: std::io::Error) -> StoreError {
        let kind = match e.kind() {
            std::io::ErrorKind::PermissionDenied => ErrorKind::Permanent,
            _ => ErrorKind::Transient,
        };
        StoreError::new(kind, format!("{op} {key} in {}: {e}", self.shown)).caused_by(e)
    }
}

fn s3_stamp(
    etag: Option<&str>,
    size: i64,
    last_modified: Option<&aws_smithy_types::DateTime>,
) -> Stamp {
    // Whole seconds: what S3 keeps, and what every server agrees on between a listing (which
    // some give in milliseconds) and a read's Last-Modified header (always seconds).
    let last_modified_ms = last_modified.map_or(0, |t| t.secs() * 1000);
    Stamp {
        fingerprint: format!("{size}/{last_modified_ms}"),
        etag: etag.map(|e| e.trim_matches('"').to_string()),
        last_modified_ms,
    }
}

/// The stamp of a body file and its sidecar (a metadata-only change rewrites just the sidecar).
async fn file_stamp(path: &Path) -> std::io::Result<Stamp> {
    let body = tokio::fs::metadata(path).await?;
    let sidecar = tokio::fs::metadata(sidecar_of(path)).await.ok();
    Ok(stamp_of(&body, sidecar.as_ref()))
}

fn stamp_of(body: &std::fs::Metadata, sidecar: Option<&std::fs::Metadata>) -> Stamp {
    let nanos = |m: &std::fs::Metadata| {
        m.modified()
            .ok()
            .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
            .map_or(0, |d| d.as_nanos())
    };
    let latest = nanos(body).max(sidecar.map_or(0, nanos));
    Stamp {
        fingerprint: format!(
            "{}/{}/{}/{}",
            body.len(),
            nanos(body),
            sidecar.map_or(0, |m| m.len()),
            sidecar.map_or(0, nanos)
        ),
        etag: None,
        last_modified_ms: (latest / 1_000_000) as i64,
    }
}

fn sidecar_of(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".meta.json");
    PathBuf::from(s)
}

/// Writes the body file and its sidecar as FileSystemClient does, each atomically, in one
/// trip to the blocking pool.
async fn write_file_object(
    path: &Path,
    body: &[u8],
    metadata: &BTreeMap<String, String>,
    content_type: Option<&str>,
) -> std::io::Result<()> {
    let sidecar = json!({
        "metadata": metadata,
        "contentType": content_type.unwrap_or("application/octet-stream"),
        "etag": format!("{:x}", Md5::digest(body)),
        "lastModified": crate::event::now_rfc3339(),
        "size": body.len(),
        "contentLength": body.len(),
        "compressed": false,
        "expiresAt": null,
        "body": {"type": "Buffer", "data": body},
    })
    .to_string();
    let (path, body) = (path.to_path_buf(), body.to_vec());
    tokio::task::spawn_blocking(move || {
        if let Some(parent) = path.parent().filter(|p| !p.is_dir()) {
            std::fs::create_dir_all(parent)?;
        }
        if body.is_empty() {
            // Most records live in metadata: an empty body file needs no temporary copy.
            std::fs::File::create(&path)?;
        } else {
            atomic_write(&path, &body)?;
        }
        atomic_write(&sidecar_of(&path), sidecar.as_bytes())
    })
    .await
    .map_err(std::io::Error::other)?
}

fn atomic_write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(format!(
        ".tmp-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn list_files(
    dir: &Path,
    prefix: &str,
    after: Option<&str>,
    max: usize,
) -> std::io::Result<Vec<Listed>> {
    // Walk only the directory the prefix names, then filter by the rest of it.
    let start = match prefix.rfind('/') {
        Some(i) => dir.join(&prefix[..i]),
        None => dir.to_path_buf(),
    };
    let mut keys = Vec::new();
    let mut stack = vec![start];
    while let Some(d) = stack.pop() {
        let entries = match std::fs::read_dir(&d) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        for entry in entries {
            let entry = entry?;
            let path = entry.path();
            if entry.file_type()?.is_dir() {
                stack.push(path);
                continue;
            }
            let Ok(rel) = path.strip_prefix(dir) else {
                continue;
            };
            let key = rel.to_string_lossy().replace('\\', "/");
            if key.ends_with(".meta.json") || key.contains(".tmp-") || !key.starts_with(prefix) {
                continue;
            }
            if after.is_some_and(|a| key.as_str() <= a) {
                continue;
            }
            keys.push(key);
        }
    }
    keys.sort();
    keys.truncate(max);
    let mut listed = Vec::with_capacity(keys.len());
    for key in keys {
        let path = dir.join(&key);
        let body = match std::fs::metadata(&path) {
            Ok(m) => m,
            // Deleted since the walk: no longer there to list.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let sidecar = std::fs::metadata(sidecar_of(&path)).ok();
        listed.push(Listed {
            stamp: stamp_of(&body, sidecar.as_ref()),
            key,
        });
    }
    Ok(listed)
}
