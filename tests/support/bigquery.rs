//! The BigQuery emulator `tests/run` started (bqemulator, `tests/servers/bigquery.sh`): a
//! dataset per test, and what its tables and views hold, read back with SQL over REST.

use serde_json::{Value, json};
use std::collections::BTreeMap;

pub struct Bq {
    http: reqwest::Client,
    /// REST base, `http://127.0.0.1:9050`.
    pub base: String,
    pub project: String,
}

/// One result row: column -> value as BigQuery returns it (text, or null).
pub type Row = BTreeMap<String, Value>;

impl Bq {
    pub fn connect() -> Bq {
        Bq {
            http: reqwest::Client::new(),
            base: std::env::var("BQ_BASE").expect(
                "BQ_BASE is not set: run the tests with tests/run (it starts the BigQuery emulator)",
            ),
            project: std::env::var("BQ_PROJECT").unwrap_or_else(|_| "test-project".into()),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}/bigquery/v2/projects/{}{path}", self.base, self.project)
    }

    /// A dataset name no other test or earlier run uses.
    pub fn unique_dataset(test: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("{test}_{}_{}", std::process::id(), nanos % 1_000_000_000)
    }

    /// Runs SQL and returns its rows.
    pub async fn query(&self, sql: &str) -> Vec<Row> {
        let r: Value = self
            .http
            .post(self.url("/queries"))
            .json(&json!({"query": sql, "useLegacySql": false}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert!(
            r.get("errors")
                .is_none_or(|e| e.as_array().is_none_or(Vec::is_empty))
                && r.get("error").is_none(),
            "{sql}: {r}"
        );
        let names: Vec<String> = r["schema"]["fields"]
            .as_array()
            .map(|f| {
                f.iter()
                    .map(|x| x["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        r["rows"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .iter()
            .map(|row| {
                names
                    .iter()
                    .cloned()
                    .zip(row["f"].as_array().unwrap().iter().map(|c| c["v"].clone()))
                    .collect()
            })
            .collect()
    }

    /// GETs a REST resource.
    pub async fn get(&self, path: &str) -> Value {
        let r = self.http.get(self.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn delete(&self, path: &str) {
        let r = self.http.delete(self.url(path)).send().await.unwrap();
        assert!(r.status().is_success(), "DELETE {path}: {}", r.status());
    }

    /// POSTs a REST resource (a dataset, a table), panicking on an error answer.
    pub async fn create(&self, path: &str, body: Value) {
        let r = self
            .http
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            r.status().is_success(),
            "POST {path}: {}",
            r.text().await.unwrap()
        );
    }
}
