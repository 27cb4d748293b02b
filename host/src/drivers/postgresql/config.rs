//! PostgreSQL options.

use crate::config::Secret;
use crate::config::section::Section;

/// How records map onto a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One column per top-level field, typed from the data.
    Columns,
    /// `id`, `data jsonb` and the system columns.
    Document,
}

/// What happens when a value no longer fits its column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SchemaEvolution {
    /// The record is dead-lettered with a message naming the column.
    Strict,
    /// The column is widened (to numeric, text or jsonb) and the record written.
    Widen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteMode {
    Hard,
    /// Keep the row and set `_deleted_at`.
    Soft,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NumberType {
    Double,
    Numeric,
}

#[derive(Debug, Clone)]
pub struct PostgresConfig {
    pub connection_string: Secret,
    pub pg: tokio_postgres::Config,
    pub schema: String,
    pub mode: Mode,
    pub schema_evolution: SchemaEvolution,
    pub delete_mode: DeleteMode,
    /// Strings that are ISO-8601 date-times make `timestamptz` columns.
    pub detect_timestamps: bool,
    pub number_type: NumberType,
    pub pool_size: usize,
}

pub fn parse(s: &mut Section) -> Option<PostgresConfig> {
    let cs = s.required_string("connectionString");
    let pg = cs
        .as_deref()
        .and_then(|text| match text.parse::<tokio_postgres::Config>() {
            Ok(c) => Some(c),
            Err(e) => {
                s.problem(
                    "connectionString",
                    format!(
                        "invalid connection string \"{}\": {}",
                        crate::redact::url(text),
                        crate::redact::mask(&e.to_string(), text)
                    ),
                );
                None
            }
        });
    let schema = s.string("schema").unwrap_or_else(|| "public".into());
    let mode = match s.choice("mode", &["columns", "document"]) {
        Some("document") => Mode::Document,
        _ => Mode::Columns,
    };
    let schema_evolution = match s.choice("schemaEvolution", &["strict", "widen"]) {
        Some("widen") => SchemaEvolution::Widen,
        _ => SchemaEvolution::Strict,
    };
    let delete_mode = match s.choice("deleteMode", &["hard", "soft"]) {
        Some("soft") => DeleteMode::Soft,
        _ => DeleteMode::Hard,
    };
    let detect_timestamps = s.bool("detectTimestamps").unwrap_or(false);
    let number_type = match s.choice("numberType", &["double", "numeric"]) {
        Some("numeric") => NumberType::Numeric,
        _ => NumberType::Double,
    };
    let pool_size = s.u64_in("poolSize", 1, 64).unwrap_or(8) as usize;
    Some(PostgresConfig {
        connection_string: Secret::new(cs?),
        pg: pg?,
        schema,
        mode,
        schema_evolution,
        delete_mode,
        detect_timestamps,
        number_type,
        pool_size,
    })
}
