//! BigQuery options: s3db.js's names (`projectId`, `datasetId`, `location`, `credentials`,
//! `mutability`, `schemaSync`, per destination `table`, `mutability`, `tableOptions`) plus
//! `endpoint` for emulators and the MERGE cadence of `mutable` tables.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use serde_json::Value;

use gcp_bigquery_client::model::clustering::Clustering;
use gcp_bigquery_client::model::time_partitioning::TimePartitioning;

use crate::delivery::{ANY_RESOURCE, Route};
use crate::options::{Problems, Section, join};
use crate::redact::Secret;

/// How changes land in a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mutability {
    /// One row per change, with `_operation_type`, `_operation_timestamp`, `_sequence`.
    AppendOnly,
    /// Exactly the current row per `id`, merged from a staging table.
    Mutable,
    /// As append-only, plus `_is_deleted`.
    Immutable,
}

impl Mutability {
    pub const NAMES: [&'static str; 3] = ["append-only", "mutable", "immutable"];

    fn parse(name: &str) -> Option<Mutability> {
        match name {
            "append-only" => Some(Mutability::AppendOnly),
            "mutable" => Some(Mutability::Mutable),
            "immutable" => Some(Mutability::Immutable),
            _ => None,
        }
    }
}

/// How the driver authenticates.
#[derive(Debug, Clone)]
pub enum Credentials {
    /// A service-account key given as an object (s3db.js's `credentials`), kept as JSON text.
    Key(Secret),
    /// A service-account key file.
    KeyFile(PathBuf),
    /// Application Default Credentials, or nothing at all with an `endpoint` (emulators).
    Default,
}

/// `tableOptions`, for tables the host creates.
#[derive(Debug, Clone, Default)]
pub struct TableOptions {
    /// `timePartitioning`: `{type: DAY|HOUR|MONTH|YEAR, field, expirationMs}`.
    pub time_partitioning: Option<TimePartitioning>,
    /// `clustering`: up to four column names.
    pub clustering: Option<Clustering>,
}

/// Where one route writes and how.
#[derive(Debug, Clone)]
pub struct Destination {
    pub table: String,
    pub mutability: Mutability,
    pub table_options: TableOptions,
}

#[derive(Debug, Clone)]
pub struct BigQueryConfig {
    pub project_id: String,
    pub dataset_id: String,
    pub location: String,
    pub credentials: Credentials,
    /// The REST base (`http://127.0.0.1:9050`); `None` for Google's.
    pub endpoint: Option<String>,
    pub mutability: Mutability,
    pub table_options: TableOptions,
    /// `schemaSync.autoCreateTable`.
    pub create_tables: bool,
    /// `schemaSync.autoCreateColumns`.
    pub create_columns: bool,
    /// `schemaSync.onMismatch: widen`: an INT64 column that meets a fraction becomes FLOAT64
    /// (the one widening BigQuery allows that s3db.js data needs); otherwise the record fails.
    pub widen_columns: bool,
    /// ISO-8601 strings make TIMESTAMP columns (`detectTimestamps`).
    pub detect_timestamps: bool,
    /// `mutable`: merge staged changes this often...
    pub merge_interval: Duration,
    /// ...or as soon as this many are staged.
    pub merge_rows: u64,
    /// `mutable`: staged rows superseded by a newer one of their `id` are deleted once this
    /// old (BigQuery refuses DML on rows still in its streaming buffer, up to ~90 minutes).
    pub staging_retention: Duration,
}

impl BigQueryConfig {
    /// The table, mode and options of a route (checked by [`BigQueryConfig::check_routes`]).
    pub fn destination(&self, route: &Route) -> Destination {
        let problems = Problems::default();
        self.read_destination(route, "", &problems)
    }

    fn read_destination(&self, route: &Route, path: &str, problems: &Problems) -> Destination {
        let options = Value::Object(route.options.clone());
        let mut destination = Destination {
            table: route.destination.clone(),
            mutability: self.mutability,
            table_options: self.table_options.clone(),
        };
        if let Some(mut s) = Section::open(&options, path.to_string(), problems) {
            if let Some(m) = s.choice("mutability", &Mutability::NAMES) {
                destination.mutability = Mutability::parse(m).expect("a listed name");
            }
            if let Some(t) = s.section("tableOptions") {
                destination.table_options = table_options(t);
            }
        }
        destination
    }

    /// Table names BigQuery takes, each route's `mutability` and `tableOptions`, and one mode
    /// per table (a `mutable` table and a changelog cannot share it, nor the names the host
    /// derives from it).
    pub fn check_routes(&self, routes: &[Route], resources_path: &str, problems: &Problems) {
        let mut modes: HashMap<String, Mutability> = HashMap::new();
        for route in routes {
            let at = join(resources_path, &route.resource);
            let d = self.read_destination(route, &at, problems);
            if route.destination == ANY_RESOURCE {
                continue;
            }
            if let Some(problem) = table_name_problem("table", &d.table) {
                problems.add(&at, problem);
            }
            if let Some(first) = modes.insert(d.table.clone(), d.mutability)
                && first != d.mutability
            {
                problems.add(
                    &at,
                    format!("table \"{}\" is written by routes of different mutability; give each its own table", d.table),
                );
            }
        }
        for (table, mutability) in &modes {
            let derived = match mutability {
                Mutability::Mutable => format!("{table}_changes"),
                _ => format!("{table}_current"),
            };
            if modes.contains_key(&derived) {
                problems.add(
                    resources_path,
                    format!("table \"{derived}\" is the one the host keeps beside \"{table}\"; name it otherwise"),
                );
            }
        }
    }
}

fn table_options(mut s: Section) -> TableOptions {
    let time_partitioning = s.value("timePartitioning").and_then(|p| {
        // BigQuery's REST API takes `expirationMs` as text; s3db.js users write a number.
        let mut p = p.clone();
        if let Some(ms) = p.get_mut("expirationMs").filter(|v| v.is_number()) {
            *ms = Value::String(ms.to_string());
        }
        match serde_json::from_value::<TimePartitioning>(p) {
            Ok(t) => Some(t),
            Err(e) => {
                s.problem(
                    "timePartitioning",
                    format!("must be {{type: DAY|HOUR|MONTH|YEAR, field, expirationMs}}: {e}"),
                );
                None
            }
        }
    });
    let clustering = match s.value("clustering") {
        None => None,
        Some(Value::Array(items)) if items.len() <= 4 && items.iter().all(Value::is_string) => {
            Some(
                items
                    .iter()
                    .filter_map(|v| v.as_str().map(str::to_string))
                    .collect(),
            )
        }
        Some(Value::Object(o)) => o.get("fields").and_then(Value::as_array).map(|f| {
            f.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        }),
        Some(_) => {
            s.problem(
                "clustering",
                "must list at most four column names (or {fields: [...]})",
            );
            None
        }
    }
    .map(|fields: Vec<String>| Clustering {
        fields: Some(fields),
    });
    s.finish();
    TableOptions {
        time_partitioning,
        clustering,
    }
}

/// Google Cloud project ids: 6-30 lowercase letters, digits and `-` (with an optional
/// `domain:` prefix); they are written into SQL between backticks.
fn project_id_problem(id: &str) -> Option<String> {
    let name = id.rsplit_once(':').map_or(id, |(_, n)| n);
    let ok = (6..=30).contains(&name.len())
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && id
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '.' | ':'));
    (!ok).then(|| {
        format!(
            "\"{id}\" is not a Google Cloud project id (6-30 lowercase letters, digits and '-')"
        )
    })
}

pub fn parse(s: &mut Section) -> Option<BigQueryConfig> {
    let project_id = s.required_string("projectId");
    if let Some(problem) = project_id.as_deref().and_then(project_id_problem) {
        s.problem("projectId", problem);
    }
    let dataset_id = s.required_string("datasetId");
    if let Some(problem) = dataset_id
        .as_deref()
        .and_then(|d| table_name_problem("dataset", d))
    {
        s.problem("datasetId", problem);
    }
    let location = s.string("location").unwrap_or_else(|| "US".into());
    let credentials = match s.value("credentials") {
        None => Credentials::Default,
        Some(Value::String(path)) => {
            if !std::path::Path::new(path).is_file() {
                s.problem("credentials", format!("no key file {path}"));
            }
            Credentials::KeyFile(PathBuf::from(path))
        }
        Some(key @ Value::Object(map)) => {
            for field in ["client_email", "private_key"] {
                if !map.get(field).is_some_and(Value::is_string) {
                    s.problem(
                        "credentials",
                        format!("a service-account key needs \"{field}\""),
                    );
                }
            }
            Credentials::Key(Secret::from(key.to_string()))
        }
        Some(_) => {
            s.problem(
                "credentials",
                "must be a service-account key object or the path of a key file",
            );
            Credentials::Default
        }
    };
    let endpoint = s.http_url("endpoint");
    let mutability = s
        .choice("mutability", &Mutability::NAMES)
        .and_then(Mutability::parse)
        .unwrap_or(Mutability::AppendOnly);
    let table_options = s
        .section("tableOptions")
        .map(table_options)
        .unwrap_or_default();
    let (mut create_tables, mut create_columns, mut widen_columns) = (true, true, false);
    if let Some(mut sync) = s.section("schemaSync") {
        let enabled = sync.bool("enabled").unwrap_or(true);
        match sync.choice("strategy", &["alter", "validate-only", "drop-create"]) {
            Some("drop-create") => sync.problem(
                "strategy",
                "drop-create would drop the table and its data; use alter (the default) or validate-only",
            ),
            Some("validate-only") => (create_tables, create_columns) = (false, false),
            _ => {}
        }
        // A value that does not fit is that record's error, or widens its column: never
        // dropped without a word.
        widen_columns = sync.choice("onMismatch", &["error", "widen"]) == Some("widen");
        if sync.bool("dropMissingColumns") == Some(true) {
            sync.problem(
                "dropMissingColumns",
                "would drop columns and their data; the host only adds columns",
            );
        }
        create_tables = enabled && sync.bool("autoCreateTable").unwrap_or(create_tables);
        create_columns = enabled && sync.bool("autoCreateColumns").unwrap_or(create_columns);
        sync.finish();
    }
    let detect_timestamps = s.bool("detectTimestamps").unwrap_or(false);
    let merge_interval = s
        .duration("mergeInterval")
        .unwrap_or(Duration::from_secs(2));
    let merge_rows = s.u64_in("mergeRows", 1, 10_000_000).unwrap_or(1000);
    let staging_retention = s
        .duration("stagingRetention")
        .unwrap_or(Duration::from_secs(3 * 3600));
    Some(BigQueryConfig {
        project_id: project_id?,
        dataset_id: dataset_id?,
        location,
        credentials,
        endpoint,
        mutability,
        table_options,
        create_tables,
        create_columns,
        widen_columns,
        detect_timestamps,
        merge_interval,
        merge_rows,
        staging_retention,
    })
}

/// What is wrong with a table or dataset name (`what` says which), if anything: letters,
/// digits and `_`, short enough for the `_current` and `_changes` the host adds.
pub fn table_name_problem(what: &str, name: &str) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 1000
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    (!ok).then(|| format!("\"{name}\" is not a BigQuery {what} name: letters, digits and '_' only"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::ActionSet;
    use serde_json::json;

    fn parsed(v: Value) -> (Option<BigQueryConfig>, Vec<String>) {
        let problems = Problems::default();
        let mut s = Section::open(&v, "config".into(), &problems).unwrap();
        let c = parse(&mut s);
        s.finish();
        let p = problems
            .into_vec()
            .iter()
            .map(ToString::to_string)
            .collect();
        (c, p)
    }

    #[test]
    fn s3db_js_options_and_route_overrides() {
        let (c, p) = parsed(json!({
            "projectId": "my-project", "datasetId": "analytics", "location": "EU",
            "mutability": "immutable",
            "credentials": {"client_email": "a@b", "private_key": "-----BEGIN PRIVATE KEY-----"},
            "schemaSync": {"enabled": true, "strategy": "alter", "onMismatch": "error"}
        }));
        assert!(p.is_empty(), "{p:?}");
        let c = c.unwrap();
        assert!(!format!("{c:?}").contains("BEGIN PRIVATE KEY"));
        let route = Route {
            resource: "users".into(),
            destination: "user_rows".into(),
            named: true,
            actions: ActionSet::ALL,
            transform: None,
            options: json!({"mutability": "mutable", "tableOptions": {"clustering": ["id"]}})
                .as_object()
                .unwrap()
                .clone(),
        };
        let d = c.destination(&route);
        assert_eq!(d.mutability, Mutability::Mutable);
        assert_eq!(
            d.table_options.clustering.and_then(|c| c.fields),
            Some(vec!["id".to_string()])
        );
        assert_eq!(d.table, "user_rows");

        let problems = Problems::default();
        let bad = Route {
            destination: "user-rows".into(),
            options: json!({"mutability": "sometimes"})
                .as_object()
                .unwrap()
                .clone(),
            ..route
        };
        c.check_routes(&[bad], "resources", &problems);
        let p: Vec<String> = problems
            .into_vec()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(p.len(), 2, "{p:?}");
        assert!(p[0].starts_with("resources.users.mutability: unknown value \"sometimes\""));
        assert!(p[1].starts_with("resources.users: \"user-rows\" is not a BigQuery table name"));
    }

    #[test]
    fn missing_and_refused_options_are_named() {
        let (_, p) = parsed(
            json!({"projectId": "p`; DROP", "datasetId": "a-b", "schemaSync": {"strategy": "drop-create"}}),
        );
        assert!(
            p[0].starts_with("config.projectId: \"p`; DROP\" is not a Google Cloud project id"),
            "{p:?}"
        );
        let (_, key) = parsed(json!({"datasetId": "d", "credentials": "/nowhere/key.json"}));
        assert_eq!(
            key,
            [
                "config.projectId: is required",
                "config.credentials: no key file /nowhere/key.json"
            ]
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("config.datasetId: \"a-b\" is not a BigQuery dataset name"))
        );
        assert!(
            p.iter()
                .any(|m| m.starts_with("config.schemaSync.strategy: drop-create would drop"))
        );
    }
}
