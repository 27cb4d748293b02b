//! Columns and statements: what type a JSON value needs and whether it fits a column, the
//! columns the host adds per mode, and the SQL of the `_current` views and the MERGE.

use gcp_bigquery_client::model::field_type::FieldType;
use serde_json::Value;

use super::config::Mutability;

/// The column types the driver creates, plus whatever a user-made table has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Int64,
    Float64,
    Numeric,
    Bool,
    Timestamp,
    Json,
    /// Another type (DATE, BYTES, RECORD...): BigQuery itself checks values against it.
    Other,
}

impl ColumnType {
    pub fn field_type(&self) -> FieldType {
        match self {
            ColumnType::String | ColumnType::Other => FieldType::String,
            ColumnType::Int64 => FieldType::Int64,
            ColumnType::Float64 => FieldType::Float64,
            ColumnType::Numeric => FieldType::Numeric,
            ColumnType::Bool => FieldType::Bool,
            ColumnType::Timestamp => FieldType::Timestamp,
            ColumnType::Json => FieldType::Json,
        }
    }

    pub fn sql(&self) -> &'static str {
        match self {
            ColumnType::String | ColumnType::Other => "STRING",
            ColumnType::Int64 => "INT64",
            ColumnType::Float64 => "FLOAT64",
            ColumnType::Numeric => "NUMERIC",
            ColumnType::Bool => "BOOL",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Json => "JSON",
        }
    }

    pub fn from_field(t: &FieldType) -> ColumnType {
        match t {
            FieldType::String => ColumnType::String,
            FieldType::Integer | FieldType::Int64 => ColumnType::Int64,
            FieldType::Float | FieldType::Float64 => ColumnType::Float64,
            FieldType::Numeric | FieldType::Bignumeric => ColumnType::Numeric,
            FieldType::Boolean | FieldType::Bool => ColumnType::Bool,
            FieldType::Timestamp => ColumnType::Timestamp,
            FieldType::Json => ColumnType::Json,
            _ => ColumnType::Other,
        }
    }
}

/// Integers beyond ±2^53 lose digits in a FLOAT64.
fn exact_in_double(n: &serde_json::Number) -> bool {
    const LIMIT: u64 = 1 << 53;
    match (n.as_u64(), n.as_i64()) {
        (Some(u), _) => u <= LIMIT,
        (None, Some(i)) => i.unsigned_abs() <= LIMIT,
        _ => true,
    }
}

fn is_timestamp(s: &str) -> bool {
    s.len() >= 20 && chrono::DateTime::parse_from_rfc3339(s).is_ok()
}

/// The column a first non-null value calls for. Numbers get FLOAT64, as s3db.js's numbers are
/// doubles (an INT64 column would refuse the first fraction); integers a double cannot hold
/// exactly get NUMERIC.
pub fn infer(value: &Value, detect_timestamps: bool) -> Option<ColumnType> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => ColumnType::Bool,
        Value::Number(n) if !exact_in_double(n) => ColumnType::Numeric,
        Value::Number(_) => ColumnType::Float64,
        Value::String(s) if detect_timestamps && is_timestamp(s) => ColumnType::Timestamp,
        Value::String(_) => ColumnType::String,
        Value::Array(_) | Value::Object(_) => ColumnType::Json,
    })
}

/// Whether `value` goes into a column of type `column` without loss.
pub fn fits(column: &ColumnType, value: &Value) -> bool {
    match (column, value) {
        (_, Value::Null) | (ColumnType::Json, _) | (ColumnType::Other, _) => true,
        (ColumnType::String, Value::String(_)) => true,
        (ColumnType::Int64, Value::Number(n)) => n.is_i64() || n.is_u64() && n.as_i64().is_some(),
        (ColumnType::Float64, Value::Number(n)) => exact_in_double(n),
        (ColumnType::Numeric, Value::Number(_)) => true,
        (ColumnType::Bool, Value::Bool(_)) => true,
        (ColumnType::Timestamp, Value::String(s)) => is_timestamp(s),
        _ => false,
    }
}

/// The type a column must become to hold `value`, when BigQuery can widen it so (INT64 to
/// FLOAT64, for a number with a fraction).
pub fn widened(column: &ColumnType, value: &Value) -> Option<ColumnType> {
    match (column, value) {
        (ColumnType::Int64, Value::Number(n)) if n.is_f64() && exact_in_double(n) => {
            Some(ColumnType::Float64)
        }
        _ => None,
    }
}

/// The value as insertAll takes it: JSON columns as text (BigQuery parses it).
pub fn cell(column: &ColumnType, value: &Value) -> Value {
    match (column, value) {
        (ColumnType::Json, Value::Null) => Value::Null,
        (ColumnType::Json, v) => Value::String(v.to_string()),
        (_, v) => v.clone(),
    }
}

/// Prefixes BigQuery reserves for its own columns.
const RESERVED_PREFIXES: [&str; 5] = [
    "_table_",
    "_file_",
    "_partition",
    "_row_timestamp",
    "_change_",
];

/// BigQuery column names: letters, digits and `_`, not starting with a digit or a prefix
/// BigQuery reserves.
pub fn column_name_ok(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    !name.is_empty()
        && name.len() <= 300
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        && !RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// The columns the host adds to every row, per mode, after `id` and the record's fields.
pub fn meta_columns(mutability: Mutability, staging: bool) -> Vec<(&'static str, ColumnType)> {
    let mut columns = vec![
        ("_sequence", ColumnType::Int64),
        ("_operation_type", ColumnType::String),
        ("_operation_timestamp", ColumnType::Timestamp),
    ];
    if mutability == Mutability::Immutable {
        columns.push(("_is_deleted", ColumnType::Bool));
    }
    if staging {
        columns.push(("_staged_at", ColumnType::Timestamp));
    }
    columns
}

/// A table path as SQL takes it.
pub fn table_sql(project: &str, dataset: &str, table: &str) -> String {
    format!("`{project}.{dataset}.{table}`")
}

/// The latest row per `id` by `_sequence` of `source`, duplicates (a replayed change) folded.
fn latest_per_id(source: &str) -> String {
    format!(
        "SELECT * EXCEPT(_row) FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY id ORDER BY _sequence DESC) AS _row FROM {source}) WHERE _row = 1"
    )
}

/// The `<table>_current` view of a changelog table: the latest non-deleted row per `id`.
pub fn current_view(changelog: &str, mutability: Mutability) -> String {
    let deleted = match mutability {
        Mutability::Immutable => "_is_deleted",
        _ => "_operation_type = 'delete'",
    };
    format!(
        "SELECT * FROM ({}) WHERE NOT ({deleted})",
        latest_per_id(changelog)
    )
}

/// Merges the latest staged change of every `id` into the target: newer changes only (the
/// `_sequence` guard, so a replay never moves a row back), deletes remove the row.
pub fn merge(target: &str, staging: &str, columns: &[String]) -> String {
    let mut all: Vec<&str> = vec!["id"];
    all.extend(columns.iter().map(String::as_str));
    all.extend(["_sequence", "_operation_type", "_operation_timestamp"]);
    let set: Vec<String> = all[1..]
        .iter()
        .map(|c| format!("`{c}` = S.`{c}`"))
        .collect();
    let names: Vec<String> = all.iter().map(|c| format!("`{c}`")).collect();
    let values: Vec<String> = all.iter().map(|c| format!("S.`{c}`")).collect();
    format!(
        "MERGE {target} T USING ({}) S ON T.id = S.id \
         WHEN MATCHED AND S._sequence > T._sequence AND S._operation_type = 'delete' THEN DELETE \
         WHEN MATCHED AND S._sequence > T._sequence THEN UPDATE SET {} \
         WHEN NOT MATCHED AND S._operation_type != 'delete' THEN INSERT ({}) VALUES ({})",
        latest_per_id(staging),
        set.join(", "),
        names.join(", "),
        values.join(", ")
    )
}

/// Deletes staged rows a newer row of their `id` supersedes, once older than the streaming
/// buffer (the latest row of every `id`, deletes included, stays: it is what the guard needs).
pub fn prune_staging(staging: &str, older_than_seconds: u64) -> String {
    format!(
        "DELETE FROM {staging} S WHERE S._staged_at < TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {older_than_seconds} SECOND) \
         AND EXISTS (SELECT 1 FROM {staging} N WHERE N.id = S.id AND N._sequence > S._sequence)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inference_and_fit() {
        assert_eq!(infer(&json!(1), false), Some(ColumnType::Float64));
        assert_eq!(infer(&json!(1.5), false), Some(ColumnType::Float64));
        assert_eq!(
            infer(&json!(9007199254740993u64), false),
            Some(ColumnType::Numeric)
        );
        assert_eq!(
            infer(&json!("2026-12-02T10:00:00.000Z"), true),
            Some(ColumnType::Timestamp)
        );
        assert_eq!(infer(&json!({"a": 1}), false), Some(ColumnType::Json));
        assert!(fits(&ColumnType::Int64, &json!(3)));
        assert!(!fits(&ColumnType::Int64, &json!(3.5)));
        assert!(!fits(&ColumnType::Float64, &json!("x")));
        assert!(fits(&ColumnType::String, &json!(null)));
        assert_eq!(
            cell(&ColumnType::Json, &json!({"a": 1})),
            json!("{\"a\":1}")
        );
        assert!(column_name_ok("first_name") && !column_name_ok("first-name"));
    }

    #[test]
    fn merge_guards_by_sequence_and_deletes() {
        let sql = merge("`p.d.t`", "`p.d.t_changes`", &["name".into()]);
        assert!(sql.contains("WHEN MATCHED AND S._sequence > T._sequence AND S._operation_type = 'delete' THEN DELETE"));
        assert!(sql.contains("UPDATE SET `name` = S.`name`, `_sequence` = S.`_sequence`"));
        assert!(sql.contains("PARTITION BY id ORDER BY _sequence DESC"));
    }
}
