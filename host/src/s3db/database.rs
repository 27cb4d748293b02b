//! An s3db database: its `s3db.json`, its resources, and reading and writing records
//! (with partition references) as s3db.js does.

use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::RwLock;
use std::time::Duration;

use super::codec::{EncodeError, definition_for};
use super::connection::Connection;
use super::record::{self, lookup};
use super::schema::{Behavior, Catalog, CatalogError, Resource, ResourceEntry};
use super::store::{Put, Stamp, Store, StoreError};
use crate::delivery::ErrorKind;
use sha2::{Digest, Sha256};

const CATALOG: &str = "s3db.json";
const LOCK: &str = "plugin=s3db-core/locks/namespace=metadata/s3db-metadata.json";

#[derive(Debug, thiserror::Error)]
pub enum S3dbError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The database's `s3db.json` cannot be used until someone mends it.
    #[error("{database}: {source}")]
    Catalog {
        database: String,
        source: CatalogError,
    },
    /// A record s3db cannot hold (its id, a value its schema refuses).
    #[error("{0}")]
    Record(String),
}

impl From<EncodeError> for S3dbError {
    fn from(e: EncodeError) -> Self {
        S3dbError::Record(e.0)
    }
}

/// What an object key is in an s3db database's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyKind {
    Record {
        resource: String,
        id: String,
    },
    /// `s3db.json`.
    Catalog,
    PartitionReference,
    PluginStorage,
    /// Under the database's prefix, not s3db's (the pre-5.2 layout, other files).
    Other,
    /// Outside the database's prefix.
    Outside,
}

/// A record as stored now.
#[derive(Debug, Clone)]
pub struct StoredRecord {
    /// As s3db.js would return it, with `id`.
    pub data: Value,
    /// SHA-256 of the stored metadata and body: the same for the same stored content.
    pub digest: String,
    pub stamp: Stamp,
}

#[derive(Debug, Clone)]
pub enum RecordRead {
    Found(StoredRecord),
    Missing,
    /// `s3db.json` has no such resource.
    UnknownResource,
}

pub struct Database {
    pub conn: Connection,
    pub store: Store,
    catalog: RwLock<Catalog>,
    /// One schema change at a time from this process.
    schema_change: tokio::sync::Mutex<()>,
}

impl Database {
    /// Opens the database and reads its `s3db.json` (an empty database has none yet).
    pub async fn connect(conn: Connection) -> Result<Database, S3dbError> {
        let store = Store::open(&conn).await;
        let db = Database {
            catalog: RwLock::new(Catalog::empty()),
            store,
            schema_change: Default::default(),
            conn,
        };
        db.reload().await?;
        Ok(db)
    }

    pub async fn reload(&self) -> Result<(), S3dbError> {
        if let Some(obj) = self.store.get(&self.conn.key(CATALOG)).await? {
            let catalog = Catalog::parse(&obj.body).map_err(|e| self.catalog_error(e))?;
            *self.catalog.write().expect("catalog lock") = catalog;
        }
        Ok(())
    }

    fn catalog_error(&self, source: CatalogError) -> S3dbError {
        S3dbError::Catalog {
            database: self.conn.shown.clone(),
            source,
        }
    }

    pub fn resource_names(&self) -> Vec<String> {
        self.catalog.read().expect("catalog lock").resource_names()
    }

    pub fn resource(&self, name: &str) -> Option<Result<Resource, S3dbError>> {
        let found = self.catalog.read().expect("catalog lock").resource(name);
        found.map(|r| r.map_err(|e| self.catalog_error(e)))
    }

    pub fn is_plugin_resource(&self, name: &str) -> bool {
        self.catalog
            .read()
            .expect("catalog lock")
            .is_plugin_resource(name)
    }

    /// What `key` (a full object key) is in this database's layout.
    pub fn classify(&self, key: &str) -> KeyKind {
        let inner = if self.conn.prefix.is_empty() {
            Some(key)
        } else {
            key.strip_prefix(self.conn.prefix.as_str())
                .and_then(|k| k.strip_prefix('/'))
        };
        let Some(inner) = inner else {
            return KeyKind::Outside;
        };
        if inner == CATALOG {
            return KeyKind::Catalog;
        }
        if inner.starts_with("plugin=") {
            return KeyKind::PluginStorage;
        }
        let Some((resource, rest)) = inner
            .strip_prefix("resource=")
            .and_then(|r| r.split_once('/'))
        else {
            return KeyKind::Other;
        };
        if let Some(id) = rest.strip_prefix("data/id=")
            && !id.is_empty()
            && !id.contains('/')
        {
            return KeyKind::Record {
                resource: resource.to_string(),
                id: id.to_string(),
            };
        }
        if rest.starts_with("partition=") {
            KeyKind::PartitionReference
        } else if rest.starts_with("plugin=") {
            KeyKind::PluginStorage
        } else {
            KeyKind::Other
        }
    }

    /// Reads a record as it is stored now, decoded with the definition of the version it was
    /// written with (`_v`); `s3db.json` is read again when it names a resource or version this
    /// host has not seen yet (another writer changed the schema).
    pub async fn read_record(&self, resource: &str, id: &str) -> Result<RecordRead, S3dbError> {
        let Some(object) = self.store.get(&self.record_key(resource, id)).await? else {
            return Ok(RecordRead::Missing);
        };
        let version = object
            .metadata
            .get("_v")
            .and_then(|v| super::transport::decode(v).flatten());
        let definition = |db: &Database| {
            let catalog = db.catalog.read().expect("catalog lock");
            match &version {
                Some(v) => catalog.resource_at(resource, v),
                None => catalog.resource(resource),
            }
        };
        let mut found = definition(self);
        if !matches!(found, Some(Ok(_))) {
            self.reload().await?;
            found = definition(self);
        }
        let definition = match found {
            None => return Ok(RecordRead::UnknownResource),
            Some(Ok(r)) => r,
            // A version s3db.json no longer holds: s3db.js reads such records with the
            // current definition, and so do we.
            Some(Err(_)) => match self.resource(resource) {
                Some(r) => r?,
                None => return Ok(RecordRead::UnknownResource),
            },
        };
        let mut digest = Sha256::new();
        for (k, v) in &object.metadata {
            digest.update(k.as_bytes());
            digest.update([0]);
            digest.update(v.as_bytes());
            digest.update([0]);
        }
        digest.update(&object.body);
        Ok(RecordRead::Found(StoredRecord {
            data: record::decode(&definition, id, &object.metadata, &object.body),
            digest: format!("{:x}", digest.finalize()),
            stamp: object.stamp,
        }))
    }

    /// Makes sure `name` exists and has attributes for every field of `samples`; new ones are
    /// typed from their first value and registered under the registry's rules.
    pub async fn ensure(
        &self,
        name: &str,
        samples: &[&Value],
        behavior: Behavior,
    ) -> Result<Resource, S3dbError> {
        let missing = |catalog: &Catalog| -> Vec<(String, &'static str)> {
            let known = catalog.resource(name).and_then(Result::ok);
            let mut out: Vec<(String, &'static str)> = Vec::new();
            for data in samples {
                for (field, value) in data.as_object().into_iter().flatten() {
                    if field == "id" || out.iter().any(|(f, _)| f == field) {
                        continue;
                    }
                    let defined = known.as_ref().is_some_and(|r| {
                        r.attributes.contains_key(field)
                            || r.attributes
                                .keys()
                                .any(|p| p.starts_with(&format!("{field}.")))
                    });
                    if !defined && !value.is_null() {
                        out.push((field.clone(), definition_for(value)));
                    }
                }
            }
            out
        };
        let known = {
            let catalog = self.catalog.read().expect("catalog lock");
            match catalog.resource(name) {
                Some(resource) if missing(&catalog).is_empty() => Some(resource),
                _ => None,
            }
        };
        if let Some(resource) = known {
            return resource.map_err(|e| self.catalog_error(e));
        }
        self.change_catalog(|catalog| {
            let fields = missing(catalog);
            catalog.extend(name, &fields, behavior)
        })
        .await?;
        self.resource(name).unwrap_or_else(|| {
            Err(self.catalog_error(CatalogError::Shape(format!(
                "resource \"{name}\" is missing right after it was written (another writer removed it)"
            ))))
        })
    }

    /// Adds a complete resource entry to `s3db.json` unless a resource of that name exists.
    pub async fn define(&self, name: &str, entry: ResourceEntry) -> Result<(), S3dbError> {
        self.change_catalog(|catalog| {
            let absent = !catalog.resources.contains_key(name);
            if absent {
                catalog.resources.insert(name.to_string(), entry);
            }
            absent
        })
        .await
    }

    /// Changes `s3db.json` under s3db.js's lock, on a copy read again under it (another writer
    /// may have changed the file), and saves it when `change` says it changed something.
    async fn change_catalog(
        &self,
        change: impl FnOnce(&mut Catalog) -> bool,
    ) -> Result<(), S3dbError> {
        let _one = self.schema_change.lock().await;
        let locked = self.lock().await?;
        let result = async {
            self.reload().await?;
            let mut catalog = self.catalog.read().expect("catalog lock").clone();
            if change(&mut catalog) {
                self.save(&catalog).await?;
            }
            Ok(())
        }
        .await;
        if locked {
            let _ = self.store.delete(&self.conn.key(LOCK)).await;
        }
        result
    }

    async fn save(&self, catalog: &Catalog) -> Result<(), S3dbError> {
        let body = catalog.to_json();
        self.store
            .put(
                &self.conn.key(CATALOG),
                &body,
                &BTreeMap::new(),
                Some("application/json"),
                false,
            )
            .await?;
        *self.catalog.write().expect("catalog lock") = catalog.clone();
        Ok(())
    }

    /// Takes s3db.js's metadata lock on S3 (a create-only object); stale locks expire.
    async fn lock(&self) -> Result<bool, S3dbError> {
        if matches!(self.conn.location, super::connection::Location::File { .. }) {
            return Ok(false); // s3db.js does not lock file databases either
        }
        let key = self.conn.key(LOCK);
        for attempt in 0..100 {
            let expires = chrono::Utc::now().timestamp_millis() + 30_000;
            let body = serde_json::json!({"owner": "replicator", "expiresAt": expires}).to_string();
            match self
                .store
                .put(
                    &key,
                    body.as_bytes(),
                    &BTreeMap::new(),
                    Some("application/json"),
                    true,
                )
                .await?
            {
                Put::Written => return Ok(true),
                Put::AlreadyExists => {
                    let stale = match self.store.get(&key).await? {
                        Some(o) => serde_json::from_slice::<Value>(&o.body)
                            .ok()
                            .and_then(|v| v["expiresAt"].as_i64())
                            .is_none_or(|t| t < chrono::Utc::now().timestamp_millis()),
                        None => true,
                    };
                    if stale && attempt > 0 {
                        self.store.delete(&key).await?;
                    } else {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
        Err(StoreError::new(
            ErrorKind::Transient,
            format!("{}: the s3db.json lock stays taken", self.conn.shown),
        )
        .into())
    }

    pub fn record_key(&self, resource: &str, id: &str) -> String {
        self.conn.key(&format!("resource={resource}/data/id={id}"))
    }

    /// Partition reference keys for a record, for every partition whose fields it has.
    pub fn partition_keys(&self, resource: &Resource, id: &str, data: &Value) -> Vec<String> {
        let mut out = Vec::new();
        'partitions: for (name, fields) in &resource.partitions {
            let mut path = format!("resource={}/partition={name}", resource.name);
            for (field, rule) in fields {
                let Some(v) = lookup(data, field).filter(|v| !v.is_null()) else {
                    continue 'partitions;
                };
                path.push_str(&format!("/{field}={}", partition_value(v, rule)));
            }
            path.push_str(&format!("/id={id}"));
            out.push(self.conn.key(&path));
        }
        out
    }

    /// Writes a record (insert and update alike: the object is replaced) and its partition
    /// references; removes references `before` had that `data` no longer has.
    pub async fn put_record(
        &self,
        resource: &Resource,
        id: &str,
        data: &Value,
        before: Option<&Value>,
    ) -> Result<(), S3dbError> {
        check_id(id)?;
        let fields = record::map_fields(resource, data)?;
        let encoded = record::encode(resource, fields, self.conn.metadata_limit)?;
        let (body, content_type) = match &encoded.body {
            Some(b) => (b.as_bytes(), Some("application/json")),
            None => (&b""[..], None),
        };
        self.store
            .put(
                &self.record_key(&resource.name, id),
                body,
                &encoded.metadata,
                content_type,
                false,
            )
            .await?;
        let now = self.partition_keys(resource, id, data);
        let reference = BTreeMap::from([("_v".to_string(), resource.version.clone())]);
        for key in &now {
            self.store.put(key, b"", &reference, None, false).await?;
        }
        if let Some(old) = before {
            for key in self.partition_keys(resource, id, old) {
                if !now.contains(&key) {
                    self.store.delete(&key).await?;
                }
            }
        }
        Ok(())
    }

    /// Deletes a record and the partition references its last known values point to.
    pub async fn delete_record(
        &self,
        resource: &Resource,
        id: &str,
        known: &[&Value],
    ) -> Result<(), S3dbError> {
        check_id(id)?;
        self.store
            .delete(&self.record_key(&resource.name, id))
            .await?;
        let mut keys: Vec<String> = known
            .iter()
            .flat_map(|d| self.partition_keys(resource, id, d))
            .collect();
        keys.dedup();
        for key in keys {
            self.store.delete(&key).await?;
        }
        Ok(())
    }

    /// A record as s3db.js would return it, or `None`.
    pub async fn get_record(
        &self,
        resource: &Resource,
        id: &str,
    ) -> Result<Option<Value>, S3dbError> {
        Ok(self
            .store
            .get(&self.record_key(&resource.name, id))
            .await?
            .map(|o| record::decode(resource, id, &o.metadata, &o.body)))
    }

    /// Record ids of a resource in key order, after `after`, at most `max`.
    pub async fn list_ids(
        &self,
        resource: &str,
        after: Option<&str>,
        max: usize,
    ) -> Result<Vec<String>, S3dbError> {
        let prefix = self.conn.key(&format!("resource={resource}/data/id="));
        let start = after.map(|id| format!("{prefix}{id}"));
        let keys = self.store.list(&prefix, start.as_deref(), max).await?;
        Ok(keys
            .into_iter()
            .filter_map(|k| k.key.strip_prefix(&prefix).map(str::to_string))
            .collect())
    }
}

/// s3db.js refuses ids with these characters: they would break the key layout.
fn check_id(id: &str) -> Result<(), S3dbError> {
    if id.is_empty() || id.contains(['\\', '/', '=', '%']) {
        return Err(S3dbError::Record(format!(
            "id \"{id}\" cannot be stored in s3db (no empty ids, '\\', '/', '=' or '%')"
        )));
    }
    Ok(())
}

/// A partition value: raw text, `date` rules keep `YYYY-MM-DD`, `maxlength:N` cuts.
fn partition_value(v: &Value, rule: &str) -> String {
    let mut text = match v {
        Value::String(s) => s.clone(),
        Value::Number(n) if rule.contains("date") => n
            .as_i64()
            .and_then(chrono::DateTime::from_timestamp_millis)
            .map(|d| d.format("%Y-%m-%d").to_string())
            .unwrap_or_else(|| n.to_string()),
        Value::Number(n) => super::base62::js_number(n.as_f64().unwrap_or(0.0)),
        other => other.to_string(),
    };
    if rule.contains("date") && text.len() > 10 && text.as_bytes()[4] == b'-' {
        text.truncate(10);
    }
    if let Some(n) = rule
        .split('|')
        .find_map(|p| p.strip_prefix("maxlength:"))
        .and_then(|n| n.parse::<usize>().ok())
    {
        text = text.chars().take(n).collect();
    }
    text
}
