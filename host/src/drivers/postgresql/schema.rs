//! Column types: what a JSON value needs, whether it fits a column, and how to widen one.

use serde_json::Value;

use super::config::NumberType;

/// The types the driver creates, plus whatever a user-made table already has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnType {
    Text,
    Double,
    Numeric,
    Boolean,
    Jsonb,
    Timestamptz,
    /// A type the driver did not create; PostgreSQL itself checks values against it.
    Other(String),
}

impl ColumnType {
    pub fn sql(&self) -> &str {
        match self {
            ColumnType::Text => "text",
            ColumnType::Double => "double precision",
            ColumnType::Numeric => "numeric",
            ColumnType::Boolean => "boolean",
            ColumnType::Jsonb => "jsonb",
            ColumnType::Timestamptz => "timestamptz",
            ColumnType::Other(t) => t,
        }
    }

    /// From `information_schema.columns.data_type` (and `udt_name` for user types).
    pub fn from_catalog(data_type: &str, udt_name: &str) -> Self {
        match data_type {
            "text" => ColumnType::Text,
            "double precision" => ColumnType::Double,
            "numeric" => ColumnType::Numeric,
            "boolean" => ColumnType::Boolean,
            "jsonb" => ColumnType::Jsonb,
            "timestamp with time zone" => ColumnType::Timestamptz,
            "USER-DEFINED" | "ARRAY" => ColumnType::Other(udt_name.to_string()),
            other => ColumnType::Other(other.to_string()),
        }
    }
}

/// Integers beyond ±2^53 lose digits in a double.
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

/// The column type a first non-null value calls for.
pub fn infer(value: &Value, numbers: NumberType, detect_timestamps: bool) -> Option<ColumnType> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(_) => ColumnType::Boolean,
        Value::Number(n) if numbers == NumberType::Numeric || !exact_in_double(n) => {
            ColumnType::Numeric
        }
        Value::Number(_) => ColumnType::Double,
        Value::String(s) if detect_timestamps && is_timestamp(s) => ColumnType::Timestamptz,
        Value::String(_) => ColumnType::Text,
        Value::Array(_) | Value::Object(_) => ColumnType::Jsonb,
    })
}

/// Whether `value` can be stored in a column of type `column` without loss.
pub fn fits(column: &ColumnType, value: &Value) -> bool {
    match (column, value) {
        (_, Value::Null) | (ColumnType::Jsonb, _) | (ColumnType::Other(_), _) => true,
        (ColumnType::Text, Value::String(_)) => true,
        (ColumnType::Double, Value::Number(n)) => exact_in_double(n),
        (ColumnType::Numeric, Value::Number(_)) => true,
        (ColumnType::Boolean, Value::Bool(_)) => true,
        (ColumnType::Timestamptz, Value::String(s)) => is_timestamp(s),
        _ => false,
    }
}

/// The narrowest type that holds both what `column` holds and `value`.
pub fn widen(column: &ColumnType, value: &Value) -> ColumnType {
    match (column, value) {
        (ColumnType::Double, Value::Number(_)) => ColumnType::Numeric,
        (ColumnType::Timestamptz, Value::String(_)) => ColumnType::Text,
        _ => ColumnType::Jsonb,
    }
}

/// A double-quoted identifier.
pub fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn inference_fit_and_widening() {
        let d = NumberType::Double;
        assert_eq!(infer(&json!(1.5), d, false), Some(ColumnType::Double));
        assert_eq!(
            infer(&json!(9007199254740993u64), d, false),
            Some(ColumnType::Numeric)
        );
        assert_eq!(
            infer(&json!("2026-11-23T10:00:00.000Z"), d, true),
            Some(ColumnType::Timestamptz)
        );
        assert_eq!(
            infer(&json!("2026-11-23T10:00:00.000Z"), d, false),
            Some(ColumnType::Text)
        );
        assert_eq!(infer(&json!([1]), d, false), Some(ColumnType::Jsonb));
        assert!(!fits(&ColumnType::Double, &json!("x")));
        assert!(fits(&ColumnType::Text, &json!(null)));
        assert_eq!(
            widen(&ColumnType::Double, &json!(9007199254740993u64)),
            ColumnType::Numeric
        );
        assert_eq!(
            widen(&ColumnType::Boolean, &json!("yes")),
            ColumnType::Jsonb
        );
        assert_eq!(ident("we\"ird"), "\"we\"\"ird\"");
    }
}
