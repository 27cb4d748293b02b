//! PostgreSQL options.

use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::options::Section;
use crate::redact::Secret;

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
    /// Extra trusted roots for TLS (a private CA such as Amazon RDS's), besides the web PKI.
    pub ca_certificates: Vec<CertificateDer<'static>>,
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
    let ca_certificates =
        s.string("caCertificate").map(|path| {
            match CertificateDer::pem_file_iter(&path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
            {
                Ok(certs) if !certs.is_empty() => certs,
                Ok(_) => {
                    s.problem("caCertificate", format!("{path} holds no PEM certificate"));
                    Vec::new()
                }
                Err(e) => {
                    s.problem(
                        "caCertificate",
                        format!("cannot read certificates from {path}: {e}"),
                    );
                    Vec::new()
                }
            }
        });
    // libpq's default `prefer` is not a request for TLS; only `require` is.
    let mut pg = pg;
    if let Some(c) = pg
        .as_mut()
        .filter(|c| c.get_ssl_mode() != tokio_postgres::config::SslMode::Require)
    {
        c.ssl_mode(tokio_postgres::config::SslMode::Disable);
    }
    Some(PostgresConfig {
        connection_string: Secret::from(cs?),
        pg: pg?,
        schema,
        mode,
        schema_evolution,
        delete_mode,
        detect_timestamps,
        number_type,
        pool_size,
        ca_certificates: ca_certificates.unwrap_or_default(),
    })
}
