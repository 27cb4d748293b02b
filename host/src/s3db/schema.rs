//! `s3db.json`: resource definitions, versions and the schema registry that assigns each
//! attribute its short metadata key (base36 index, never reused once burned).
//!
//! The file is kept as JSON and edited in place, so fields this host does not know survive.

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use super::base62;
use super::codec::{Kind, kind_of};

/// How a resource splits a record between metadata and body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Reads `resources[name]` of an `s3db.json` document.
    pub fn from_catalog(name: &str, entry: &Value) -> Result<Resource, String> {
        let version = entry["currentVersion"].as_str().unwrap_or("v1").to_string();
        let def = &entry["versions"][&version];
        if !def.is_object() {
            return Err(format!(
                "resource {name}: s3db.json has no definition for its current version {version}"
            ));
        }
        let behavior = def["behavior"]
            .as_str()
            .map(|b| {
                Behavior::parse(b).ok_or_else(|| format!("resource {name}: unknown behavior {b}"))
            })
            .transpose()?
            .unwrap_or(Behavior::UserManaged);
        let mut leaves = Vec::new();
        if let Some(attrs) = def["attributes"].as_object() {
            flatten_definition(attrs, "", &mut leaves);
        }
        let mapping = entry["schemaRegistry"]["mapping"].as_object();
        let mut attributes = BTreeMap::new();
        let mut by_key = BTreeMap::new();
        for (i, (path, definition)) in leaves.into_iter().enumerate() {
            // Old databases without a registry use the position in the path list.
            let index = match mapping {
                Some(m) => match m.get(&path).and_then(Value::as_u64) {
                    Some(ix) => ix,
                    None => continue,
                },
                None => i as u64,
            };
            let key = base62::encode_key(index);
            by_key.insert(key.clone(), path.clone());
            attributes.insert(
                path.clone(),
                Attribute {
                    path,
                    key,
                    kind: kind_of(&definition),
                },
            );
        }
        let mut partitions = BTreeMap::new();
        if let Some(parts) = def["partitions"].as_object() {
            for (pname, p) in parts {
                let fields = p["fields"]
                    .as_object()
                    .map(|f| {
                        f.iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("string").to_string()))
                            .collect()
                    })
                    .unwrap_or_default();
                partitions.insert(pname.clone(), fields);
            }
        }
        Ok(Resource {
            name: name.into(),
            version,
            behavior,
            timestamps: def["timestamps"].as_bool().unwrap_or(false),
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

/// The whole `s3db.json` document.
#[derive(Debug, Clone)]
pub struct Catalog(pub Value);

impl Catalog {
    pub fn empty() -> Self {
        Catalog(json!({
            "version": "1",
            "s3dbVersion": "21.6.2",
            "lastUpdated": crate::event::now_rfc3339(),
            "resources": {}
        }))
    }

    pub fn resource_names(&self) -> Vec<String> {
        self.0["resources"]
            .as_object()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    pub fn resource(&self, name: &str) -> Option<Result<Resource, String>> {
        self.0["resources"]
            .get(name)
            .map(|e| Resource::from_catalog(name, e))
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
        let resources = self.0["resources"]
            .as_object_mut()
            .expect("resources is an object");
        let entry = resources.entry(name.to_string()).or_insert_with(|| {
            json!({
                "currentVersion": "v0",
                "partitions": {},
                "createdBy": "replicator",
                "versions": {},
                "schemaRegistry": {"nextIndex": 0, "mapping": {}, "burned": []},
                "pluginSchemaRegistry": {}
            })
        });
        let current = entry["currentVersion"].as_str().unwrap_or("v0").to_string();
        let mut def = entry["versions"].get(&current).cloned().unwrap_or_else(|| {
            json!({
                "attributes": {}, "behavior": behavior.name(), "timestamps": false, "partitions": {},
                "paranoid": true, "allNestedObjectsOptional": true, "autoDecrypt": true, "cache": false,
                "hooks": {}, "idSize": 22, "idGenerator": "default"
            })
        });
        let mut changed = entry["versions"].get(&current).is_none();
        let registry = &mut entry["schemaRegistry"];
        if !registry["mapping"].is_object() {
            *registry = json!({"nextIndex": 0, "mapping": {}, "burned": []});
        }
        for (path, definition) in new_fields {
            if def["attributes"].get(path).is_some() {
                continue;
            }
            def["attributes"][path] = Value::String(definition.to_string());
            if registry["mapping"].get(path).is_none() {
                let next = registry["nextIndex"].as_u64().unwrap_or(0);
                let burned: Vec<u64> = registry["burned"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|b| b["index"].as_u64())
                    .collect();
                let mut index = next;
                while burned.contains(&index) {
                    index += 1;
                }
                registry["mapping"][path] = json!(index);
                registry["nextIndex"] = json!(index + 1);
            }
            changed = true;
        }
        if !changed {
            return false;
        }
        let number: u64 = current.trim_start_matches('v').parse().unwrap_or(0);
        let version = format!("v{}", number + 1);
        def["hash"] = Value::String(definition_hash(&def));
        def["createdAt"] = Value::String(now.clone());
        entry["versions"][&version] = def;
        entry["currentVersion"] = Value::String(version);
        self.0["lastUpdated"] = Value::String(now);
        true
    }
}

impl Catalog {
    /// Sets the partitions of a resource's current definition.
    pub fn set_partitions(&mut self, name: &str, partitions: Value) {
        let entry = &mut self.0["resources"][name];
        let version = entry["currentVersion"].as_str().unwrap_or("v1").to_string();
        let def = &mut entry["versions"][&version];
        def["partitions"] = partitions.clone();
        def["hash"] = Value::String(definition_hash(def));
        entry["partitions"] = partitions;
    }
}

/// `sha256:` of the key-sorted JSON of the parts of a definition that make it different.
fn definition_hash(def: &Value) -> String {
    // serde_json's maps are sorted (no preserve_order), which gives the stable order.
    let basis = json!({"attributes": def["attributes"], "behavior": def["behavior"], "partitions": def["partitions"]});
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
        c.0["resources"]["users"]["schemaRegistry"]["burned"] =
            json!([{"index": 2, "attribute": "old", "reason": "removed"}]);
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

    #[test]
    fn reads_a_definition_written_by_s3db_js() {
        let entry = json!({"currentVersion":"v1","partitions":{},"versions":{"v1":{"attributes":{"title":"string","n":"number","address":{"city":"string"},"tags":{"type":"array","items":"string"}},"behavior":"user-managed","timestamps":true,"partitions":{"byCity":{"fields":{"address.city":"string"}}}}},
            "schemaRegistry":{"nextIndex":5,"mapping":{"title":0,"n":1,"address.city":2,"address":3,"tags":4},"burned":[]}});
        let r = Resource::from_catalog("items", &entry).unwrap();
        assert_eq!(r.attributes["address.city"].key, "2");
        assert_eq!(r.attributes["tags"].kind, Kind::StringArray);
        assert_eq!(r.by_key["1"], "n");
        assert!(r.timestamps);
        assert_eq!(r.partitions["byCity"]["address.city"], "string");
    }
}
