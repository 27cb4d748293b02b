//! `s3db.json`: resource definitions, versions and the schema registry that assigns each
//! attribute its short metadata key (base36 index, never reused once burned).
//!
//! The file is read into typed structures; every level keeps the keys this host does not know
//! (`extra`), so a write puts back what s3db.js wrote.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use super::base62;
use super::codec::{Kind, kind_of};

/// How a resource splits a record between metadata and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behavior {
    UserManaged,
    BodyOverflow,
    BodyOnly,
    EnforceLimits,
    TruncateData,
}

impl Behavior {
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "user-managed" => Behavior::UserManaged,
            "body-overflow" => Behavior::BodyOverflow,
            "body-only" => Behavior::BodyOnly,
            "enforce-limits" => Behavior::EnforceLimits,
            "truncate-data" => Behavior::TruncateData,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Behavior::UserManaged => "user-managed",
            Behavior::BodyOverflow => "body-overflow",
            Behavior::BodyOnly => "body-only",
            Behavior::EnforceLimits => "enforce-limits",
            Behavior::TruncateData => "truncate-data",
        }
    }
}

/// A catalog this host cannot use: what is wrong, and where in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatalogError {
    #[error("s3db.json is not an s3db catalog: {0}")]
    Shape(String),
    #[error(
        "s3db.json: resource \"{resource}\" has no definition for its current version \"{version}\""
    )]
    MissingVersion { resource: String, version: String },
}

/// The whole `s3db.json` document.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    #[serde(default)]
    pub resources: BTreeMap<String, ResourceEntry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_updated: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// `resources[name]`: the resource's versions and its schema registry.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResourceEntry {
    #[serde(default = "first_version")]
    pub current_version: String,
    #[serde(default)]
    pub versions: BTreeMap<String, Definition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_registry: Option<SchemaRegistry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<BTreeMap<String, Partition>>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn first_version() -> String {
    "v1".into()
}

/// One version of a resource's definition.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Definition {
    #[serde(default)]
    pub attributes: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamps: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partitions: Option<BTreeMap<String, Partition>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
    /// The attributes' keys in the order `s3db.json` has them (`attributes` is sorted):
    /// s3db.js gives attributes its registry does not map yet the next indices in that order.
    #[serde(skip)]
    pub written_order: Option<KeyOrder>,
}

/// The keys of a JSON object in the order they were written, each with those of the object
/// it holds, if any.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyOrder(pub Vec<(String, Option<KeyOrder>)>);

impl<'de> Deserialize<'de> for KeyOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(OrderVisitor)? {
            Some(order) => Ok(order),
            None => Err(serde::de::Error::custom("expected an object")),
        }
    }
}

/// Any JSON value: its key order when it is an object.
struct MaybeOrder(Option<KeyOrder>);

impl<'de> Deserialize<'de> for MaybeOrder {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(OrderVisitor).map(MaybeOrder)
    }
}

struct OrderVisitor;

impl<'de> serde::de::Visitor<'de> for OrderVisitor {
    type Value = Option<KeyOrder>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut keys = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let MaybeOrder(inner) = map.next_value()?;
            keys.push((key, inner));
        }
        Ok(Some(KeyOrder(keys)))
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {}
        Ok(None)
    }

    fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
        Ok(None)
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(None)
    }
}

/// Just the attribute key orders of an `s3db.json`.
#[derive(Deserialize)]
struct CatalogOrder {
    #[serde(default)]
    resources: BTreeMap<String, ResourceOrder>,
}

#[derive(Deserialize)]
struct ResourceOrder {
    #[serde(default)]
    versions: BTreeMap<String, VersionOrder>,
}

#[derive(Deserialize)]
struct VersionOrder {
    attributes: Option<KeyOrder>,
}

/// A partition: field path -> rule (`string`, `date`, `maxlength:N`...).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Partition {
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// Attribute path -> registry index; burned indices are never given again.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SchemaRegistry {
    #[serde(default)]
    pub next_index: u64,
    #[serde(default)]
    pub mapping: BTreeMap<String, u64>,
    #[serde(default)]
    pub burned: Vec<BurnedIndex>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BurnedIndex {
    pub index: u64,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

/// One attribute leaf: its dotted path, short key and type.
#[derive(Debug, Clone, PartialEq)]
pub struct Attribute {
    pub path: String,
    pub key: String,
    pub kind: Kind,
}

/// A resource as the current version of its definition describes it.
#[derive(Debug, Clone)]
pub struct Resource {
    pub name: String,
    pub version: String,
    pub behavior: Behavior,
    pub timestamps: bool,
    /// Partition name -> (field path -> rule), fields in name order.
    pub partitions: BTreeMap<String, BTreeMap<String, String>>,
    /// Leaf attributes by path.
    pub attributes: BTreeMap<String, Attribute>,
    /// Short key -> path, for reading.
    pub by_key: BTreeMap<String, String>,
}

impl Resource {
    /// Reads `resources[name]` of an `s3db.json` document, as its current version describes it.
    pub fn from_catalog(name: &str, entry: &ResourceEntry) -> Result<Resource, CatalogError> {
        Resource::at_version(name, entry, &entry.current_version)
    }

    /// As [`Resource::from_catalog`], as version `version` describes it (records keep the
    /// version they were written with in `_v`).
    pub fn at_version(
        name: &str,
        entry: &ResourceEntry,
        version: &str,
    ) -> Result<Resource, CatalogError> {
        let version = version.to_string();
        let def = entry
            .versions
            .get(&version)
            .ok_or_else(|| CatalogError::MissingVersion {
                resource: name.into(),
                version: version.clone(),
            })?;
        let mut leaves = Vec::new();
        flatten_definition(&def.attributes, "", &mut leaves);
        let definitions: BTreeMap<String, String> = leaves.into_iter().collect();
        let (leaf_order, object_paths) = key_order(def);
        let mut attributes = BTreeMap::new();
        let mut by_key = BTreeMap::new();
        let mut add = |path: &str, index: u64| {
            let Some(definition) = definitions.get(path) else {
                return;
            };
            let key = base62::encode_key(index);
            by_key.insert(key.clone(), path.to_string());
            attributes.insert(
                path.to_string(),
                Attribute {
                    path: path.to_string(),
                    key,
                    kind: kind_of(definition),
                },
            );
        };
        match &entry.schema_registry {
            // What the registry does not map yet, s3db.js numbers from its next index on:
            // leaves, then object paths, in the order the definition was written.
            Some(registry) => {
                let highest = registry
                    .mapping
                    .values()
                    .chain(registry.burned.iter().map(|b| &b.index))
                    .max()
                    .map_or(0, |m| m + 1);
                let mut next = registry.next_index.max(highest);
                for path in leaf_order.iter().chain(&object_paths) {
                    let index = match registry.mapping.get(path) {
                        Some(ix) => *ix,
                        None => {
                            next += 1;
                            next - 1
                        }
                    };
                    add(path, index);
                }
            }
            // Old databases without a registry use the position in the leaf list.
            None => {
                for (i, path) in leaf_order.iter().enumerate() {
                    add(path, i as u64);
                }
            }
        }
        let partitions = def
            .partitions
            .iter()
            .flatten()
            .map(|(name, p)| (name.clone(), p.fields.clone()))
            .collect();
        Ok(Resource {
            name: name.into(),
            version,
            behavior: def.behavior.unwrap_or(Behavior::UserManaged),
            timestamps: def.timestamps.unwrap_or(false),
            partitions,
            attributes,
            by_key,
        })
    }

    /// The schema registry's map as s3db.js writes it in `_map` (path -> key).
    pub fn key_map(&self) -> String {
        let m: Map<String, Value> = self
            .attributes
            .values()
            .map(|a| (a.path.clone(), Value::String(a.key.clone())))
            .collect();
        Value::Object(m).to_string()
    }
}

/// A definition's leaf paths and nested-object paths, each in the order s3db.js lists them:
/// as written when that is known, else sorted.
fn key_order(def: &Definition) -> (Vec<String>, Vec<String>) {
    let (mut leaves, mut objects) = (Vec::new(), Vec::new());
    let sorted;
    let order = match &def.written_order {
        Some(order) => order,
        None => {
            sorted = sorted_order(&def.attributes);
            &sorted
        }
    };
    walk_order(order, &def.attributes, "", &mut leaves, &mut objects);
    (leaves, objects)
}

fn sorted_order(attrs: &Map<String, Value>) -> KeyOrder {
    KeyOrder(
        attrs
            .iter()
            .map(|(k, v)| (k.clone(), v.as_object().map(sorted_order)))
            .collect(),
    )
}

/// Leaves as [`flatten_definition`] finds them; object paths before the paths inside them.
fn walk_order(
    order: &KeyOrder,
    attrs: &Map<String, Value>,
    prefix: &str,
    leaves: &mut Vec<String>,
    objects: &mut Vec<String>,
) {
    for (name, inner) in &order.0 {
        let Some(def) = attrs.get(name).filter(|_| !name.contains("$$")) else {
            continue;
        };
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match (def, inner) {
            (Value::Object(o), Some(inner)) if !o.get("type").is_some_and(Value::is_string) => {
                objects.push(path.clone());
                walk_order(inner, o, &path, leaves, objects);
            }
            _ => leaves.push(path),
        }
    }
}

/// Leaf paths of an attribute definition: strings, or objects with a `type`; other objects
/// nest. Keys containing `$$` are validator options, not attributes.
fn flatten_definition(attrs: &Map<String, Value>, prefix: &str, out: &mut Vec<(String, String)>) {
    for (name, def) in attrs {
        if name.contains("$$") {
            continue;
        }
        let path = if prefix.is_empty() {
            name.clone()
        } else {
            format!("{prefix}.{name}")
        };
        match def {
            Value::String(s) => out.push((path, s.clone())),
            Value::Object(o) if o.get("type").is_some_and(Value::is_string) => {
                let mut d = o["type"].as_str().unwrap_or_default().to_string();
                if let Some(items) = o.get("items").and_then(Value::as_str) {
                    d.push_str(&format!("|items:{items}"));
                }
                out.push((path, d));
            }
            Value::Object(o) => flatten_definition(o, &path, out),
            other => out.push((path, other.to_string())),
        }
    }
}

impl Catalog {
    pub fn empty() -> Self {
        let mut extra = Map::new();
        extra.insert("version".into(), json!("1"));
        extra.insert("s3dbVersion".into(), json!("21.6.2"));
        Catalog {
            resources: BTreeMap::new(),
            last_updated: Some(crate::event::now_rfc3339()),
            extra,
        }
    }

    /// Reads an `s3db.json` body; an error names the key path at fault.
    pub fn parse(body: &[u8]) -> Result<Catalog, CatalogError> {
        let de = &mut serde_json::Deserializer::from_slice(body);
        let mut catalog: Catalog = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            let inner = e.into_inner();
            CatalogError::Shape(if path == "." {
                inner.to_string()
            } else {
                format!("{path}: {inner}")
            })
        })?;
        if let Ok(order) = serde_json::from_slice::<CatalogOrder>(body) {
            for (name, resource) in order.resources {
                let Some(entry) = catalog.resources.get_mut(&name) else {
                    continue;
                };
                for (version, v) in resource.versions {
                    if let Some(def) = entry.versions.get_mut(&version) {
                        def.written_order = v.attributes;
                    }
                }
            }
        }
        Ok(catalog)
    }

    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a catalog serializes")
    }

    pub fn resource_names(&self) -> Vec<String> {
        self.resources.keys().cloned().collect()
    }

    pub fn resource(&self, name: &str) -> Option<Result<Resource, CatalogError>> {
        self.resources
            .get(name)
            .map(|e| Resource::from_catalog(name, e))
    }

    /// The resource as `version` describes it; `None` when the resource is unknown.
    pub fn resource_at(&self, name: &str, version: &str) -> Option<Result<Resource, CatalogError>> {
        self.resources
            .get(name)
            .map(|e| Resource::at_version(name, e, version))
    }

    /// Resources s3db.js plugins made for themselves (`plg_` names, `createdBy` a plugin).
    pub fn is_plugin_resource(&self, name: &str) -> bool {
        name.starts_with("plg_")
            || self.resources.get(name).is_some_and(|e| {
                e.extra
                    .get("createdBy")
                    .and_then(Value::as_str)
                    .is_some_and(|by| by != "user")
            })
    }

    /// Adds attributes for new fields (creating the resource if needed): each new path takes
    /// the registry's next index, and the definition gets a new version. Returns whether
    /// anything changed.
    pub fn extend(
        &mut self,
        name: &str,
        new_fields: &[(String, &'static str)],
        behavior: Behavior,
    ) -> bool {
        let now = crate::event::now_rfc3339();
        let entry = self
            .resources
            .entry(name.to_string())
            .or_insert_with(|| ResourceEntry {
                current_version: "v0".into(),
                versions: BTreeMap::new(),
                schema_registry: Some(SchemaRegistry::default()),
                partitions: Some(BTreeMap::new()),
                extra: json!({"createdBy": "replicator", "pluginSchemaRegistry": {}})
                    .as_object()
                    .cloned()
                    .unwrap_or_default(),
            });
        let current = entry.current_version.clone();
        let existing = entry.versions.get(&current);
        let mut changed = existing.is_none();
        let mut def = existing.cloned().unwrap_or_else(|| Definition {
            behavior: Some(behavior),
            timestamps: Some(false),
            partitions: Some(BTreeMap::new()),
            extra: json!({
                "paranoid": true, "allNestedObjectsOptional": true, "autoDecrypt": true, "cache": false,
                "hooks": {}, "idSize": 22, "idGenerator": "default"
            })
            .as_object()
            .cloned()
            .unwrap_or_default(),
            ..Definition::default()
        });
        let registry = entry.schema_registry.get_or_insert_with(Default::default);
        for (path, definition) in new_fields {
            if def.attributes.contains_key(path) {
                continue;
            }
            def.attributes
                .insert(path.clone(), Value::String(definition.to_string()));
            if !registry.mapping.contains_key(path) {
                let mut index = registry.next_index;
                while registry.burned.iter().any(|b| b.index == index) {
                    index += 1;
                }
                registry.mapping.insert(path.clone(), index);
                registry.next_index = index + 1;
            }
            changed = true;
        }
        if !changed {
            return false;
        }
        let number: u64 = current.trim_start_matches('v').parse().unwrap_or(0);
        let version = format!("v{}", number + 1);
        def.hash = Some(definition_hash(&def));
        def.created_at = Some(now.clone());
        entry.versions.insert(version.clone(), def);
        entry.current_version = version;
        self.last_updated = Some(now);
        true
    }

    /// Sets the partitions of a resource's current definition (a resource `extend` made).
    pub fn set_partitions(&mut self, name: &str, partitions: BTreeMap<String, Partition>) {
        let Some(entry) = self.resources.get_mut(name) else {
            return;
        };
        if let Some(def) = entry.versions.get_mut(&entry.current_version) {
            def.partitions = Some(partitions.clone());
            def.hash = Some(definition_hash(def));
        }
        entry.partitions = Some(partitions);
    }
}

/// `sha256:` of the key-sorted JSON of the parts of a definition that make it different.
fn definition_hash(def: &Definition) -> String {
    // serde_json's maps are sorted (no preserve_order), which gives the stable order.
    let basis = json!({"attributes": def.attributes, "behavior": def.behavior, "partitions": def.partitions});
    format!("sha256:{:x}", Sha256::digest(basis.to_string().as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registry_assigns_indices_and_skips_burned_ones() {
        let mut c = Catalog::empty();
        assert!(c.extend(
            "users",
            &[
                ("name".into(), "string|optional"),
                ("age".into(), "number|optional")
            ],
            Behavior::BodyOverflow
        ));
        let r = c.resource("users").unwrap().unwrap();
        assert_eq!(r.version, "v1");
        assert_eq!(r.behavior, Behavior::BodyOverflow);
        assert_eq!(r.attributes["name"].key, "0");
        assert_eq!(r.attributes["age"].key, "1");
        assert!(!c.extend(
            "users",
            &[("name".into(), "string|optional")],
            Behavior::BodyOverflow
        ));
        c.resources
            .get_mut("users")
            .unwrap()
            .schema_registry
            .as_mut()
            .unwrap()
            .burned =
            serde_json::from_value(json!([{"index": 2, "attribute": "old", "reason": "removed"}]))
                .unwrap();
        assert!(c.extend(
            "users",
            &[("email".into(), "string|optional")],
            Behavior::BodyOverflow
        ));
        let r = c.resource("users").unwrap().unwrap();
        assert_eq!(
            r.attributes["email"].key, "3",
            "burned index 2 is never reused"
        );
        assert_eq!(r.version, "v2");
    }

    /// s3db.js 21.6.2 may write a new version before its registry maps the new attributes;
    /// its readers number them from `nextIndex` on, in the order the definition lists them.
    #[test]
    fn attributes_the_registry_does_not_map_yet_follow_the_written_order() {
        let body = br#"{"resources": {"users": {"currentVersion": "v2",
            "versions": {"v1": {"attributes": {"name": "string"}},
                         "v2": {"attributes": {"name": "string", "zeta": "string", "box": {"w": "number"}, "alpha": "number"}}},
            "schemaRegistry": {"nextIndex": 1, "mapping": {"name": 0}, "burned": []}}}}"#;
        let c = Catalog::parse(body).unwrap();
        let r = c.resource("users").unwrap().unwrap();
        let keys: Vec<(&str, &str)> = r
            .attributes
            .values()
            .map(|a| (a.path.as_str(), a.key.as_str()))
            .collect();
        assert_eq!(
            keys,
            [("alpha", "3"), ("box.w", "2"), ("name", "0"), ("zeta", "1")],
            "leaves in written order, then the object path box (4)"
        );
        let old = c.resource_at("users", "v1").unwrap().unwrap();
        assert_eq!(old.attributes.len(), 1);
    }

    #[test]
    fn reads_a_definition_written_by_s3db_js() {
        let entry = json!({"currentVersion":"v1","partitions":{},"versions":{"v1":{"attributes":{"title":"string","n":"number","address":{"city":"string"},"tags":{"type":"array","items":"string"}},"behavior":"user-managed","timestamps":true,"partitions":{"byCity":{"fields":{"address.city":"string"}}}}},
            "schemaRegistry":{"nextIndex":5,"mapping":{"title":0,"n":1,"address.city":2,"address":3,"tags":4},"burned":[]}});
        let r = Resource::from_catalog("items", &serde_json::from_value(entry).unwrap()).unwrap();
        assert_eq!(r.attributes["address.city"].key, "2");
        assert_eq!(r.attributes["tags"].kind, Kind::StringArray);
        assert_eq!(r.by_key["1"], "n");
        assert!(r.timestamps);
        assert_eq!(r.partitions["byCity"]["address.city"], "string");
    }

    #[test]
    fn a_catalog_it_cannot_use_is_an_error_naming_the_key() {
        let e = Catalog::parse(br#"{"version":"1","s3dbVersion":"21.6.2","resources":[]}"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("resources: invalid type: sequence"), "{e}");
        let e = Catalog::parse(
            br#"{"resources":{"u":{"currentVersion":"v1","versions":{"v1":{"behavior":"odd"}}}}}"#,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("resources.u.versions.v1.behavior: unknown variant `odd`"),
            "{e}"
        );
        let c =
            Catalog::parse(br#"{"resources":{"u":{"currentVersion":"v2","versions":{"v1":{}}}}}"#)
                .unwrap();
        assert_eq!(
            c.resource("u").unwrap().unwrap_err(),
            CatalogError::MissingVersion {
                resource: "u".into(),
                version: "v2".into()
            }
        );
    }

    #[test]
    fn keys_it_does_not_know_are_written_back() {
        let text = br#"{"version":"1","s3dbVersion":"21.6.2","future":{"a":1},"resources":{"u":{"currentVersion":"v1","hooks":["x"],"versions":{"v1":{"attributes":{"name":"string"},"paranoid":false,"partitions":{"p":{"fields":{"name":"string"},"note":"n"}}}},"schemaRegistry":{"nextIndex":1,"mapping":{"name":0},"burned":[{"index":7,"reason":"r"}],"x":2}}}}"#;
        let c = Catalog::parse(text).unwrap();
        let back: Value = serde_json::from_slice(&c.to_json()).unwrap();
        let original: Value = serde_json::from_slice(text).unwrap();
        assert_eq!(back, original);
    }
}
