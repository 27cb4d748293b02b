//! What s3db.js holds, for the change capture tests: writing through it, listing what it
//! holds, and waiting until PostgreSQL (document mode) holds the same.

use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

use crate::{Pg, S3dbTarget, eventually, without_internal};

/// Runs commands with s3db.js; fails on any command's error.
pub fn write(db: &S3dbTarget, commands: Vec<Value>) {
    for (command, result) in commands.iter().zip(db.js(json!(commands))) {
        assert!(result.get("error").is_none(), "s3db.js {command}: {result}");
    }
}

/// What s3db.js holds now: resource -> id -> record (without s3db.js's internal keys).
pub fn holdings(db: &S3dbTarget, resources: &[&str]) -> BTreeMap<String, BTreeMap<String, Value>> {
    let lists = db.js(json!(
        resources
            .iter()
            .map(|r| json!({"op": "list", "resource": r}))
            .collect::<Vec<_>>()
    ));
    resources
        .iter()
        .zip(lists)
        .map(|(r, list)| {
            let records = list
                .as_array()
                .unwrap_or_else(|| panic!("list {r}: {list}"))
                .iter()
                .map(|rec| (rec["id"].as_str().unwrap().to_string(), clean(rec)))
                .collect();
            (r.to_string(), records)
        })
        .collect()
}

/// A record without internal keys and without absent optional fields.
pub fn clean(record: &Value) -> Value {
    match without_internal(record) {
        Value::Object(m) => Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).collect()),
        other => other,
    }
}

/// Waits until the PostgreSQL tables (document mode) hold exactly `expected`.
pub async fn converged(pg: &Pg, expected: &BTreeMap<String, BTreeMap<String, Value>>) {
    eventually(
        Duration::from_secs(60),
        "PostgreSQL to hold what s3db.js holds",
        || async {
            for (resource, records) in expected {
                let rows: BTreeMap<String, Value> = pg
                    .rows(resource)
                    .await
                    .iter()
                    .map(|row| (row["id"].as_str().unwrap().to_string(), clean(&row["data"])))
                    .collect();
                if &rows != records {
                    return None;
                }
            }
            Some(())
        },
    )
    .await;
}
