//! Writes a batch in one transaction: per table, one upsert and one delete statement, each
//! taking the whole batch as a single `jsonb` parameter expanded by `jsonb_to_recordset`.
//!
//! Every write is guarded by `_sequence`, so a replayed older event never overwrites a newer row.

use crate::redact::ExposeSecret;
use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use super::config::{DeleteMode, Mode, PostgresConfig, SchemaEvolution};
use super::schema::{ColumnType, fits, ident, infer, widen};
use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver};
use crate::event::Action;

/// Columns the driver owns; data fields with these names are refused.
const SYSTEM_COLUMNS: [&str; 4] = ["id", "_sequence", "_replicated_at", "_deleted_at"];
/// PostgreSQL truncates longer identifiers, which would merge distinct fields.
const MAX_IDENT_BYTES: usize = 63;

/// What the driver knows of one table's columns (data columns only).
#[derive(Debug, Clone, Default)]
struct Table {
    columns: HashMap<String, ColumnType>,
}

pub struct PostgresDriver {
    config: PostgresConfig,
    pool: Pool,
    tables: Mutex<HashMap<String, Arc<Table>>>,
}

impl PostgresDriver {
    pub fn new(config: PostgresConfig) -> Self {
        let tls =
            tokio_postgres_rustls::MakeRustlsConnect::new(tls_config(&config.ca_certificates));
        let manager = Manager::from_config(
            config.pg.clone(),
            tls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(config.pool_size)
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .create_timeout(Some(std::time::Duration::from_secs(10)))
            .build()
            .expect("a pool with a runtime builds");
        PostgresDriver {
            config,
            pool,
            tables: Mutex::new(HashMap::new()),
        }
    }

    async fn client(&self) -> Result<Object, DeliveryError> {
        self.pool.get().await.map_err(|e| {
            let message = match e {
                deadpool_postgres::PoolError::Backend(pg) => describe(&pg),
                other => other.to_string(),
            };
            DeliveryError::unavailable(format!(
                "cannot connect to PostgreSQL: {}",
                crate::redact::mask(&message, self.config.connection_string.expose_secret())
            ))
        })
    }

    fn qualified(&self, table: &str) -> String {
        format!("{}.{}", ident(&self.config.schema), ident(table))
    }

    /// The table's columns, creating the table (and the system columns) when needed.
    async fn table(&self, client: &Object, name: &str) -> Result<Arc<Table>, DeliveryError> {
        if let Some(t) = self.tables.lock().expect("table cache").get(name) {
            return Ok(t.clone());
        }
        let q = self.qualified(name);
        let mut ddl = match self.config.mode {
            Mode::Columns => format!("CREATE TABLE IF NOT EXISTS {q} (\"id\" text PRIMARY KEY"),
            Mode::Document => {
                format!("CREATE TABLE IF NOT EXISTS {q} (\"id\" text PRIMARY KEY, \"data\" jsonb")
            }
        };
        ddl.push_str(", \"_sequence\" bigint NOT NULL, \"_replicated_at\" timestamptz NOT NULL DEFAULT now()");
        if self.config.delete_mode == DeleteMode::Soft {
            ddl.push_str(", \"_deleted_at\" timestamptz");
        }
        ddl.push(')');
        client
            .batch_execute(&ddl)
            .await
            .map_err(|e| classify(&e, Statement::SchemaChange, &format!("creating table {q}")))?;
        // A table made by someone else may lack the system columns.
        let mut alter = format!(
            "ALTER TABLE {q} ADD COLUMN IF NOT EXISTS \"_sequence\" bigint NOT NULL DEFAULT 0, ADD COLUMN IF NOT EXISTS \"_replicated_at\" timestamptz NOT NULL DEFAULT now()"
        );
        if self.config.delete_mode == DeleteMode::Soft {
            alter.push_str(", ADD COLUMN IF NOT EXISTS \"_deleted_at\" timestamptz");
        }
        client
            .batch_execute(&alter)
            .await
            .map_err(|e| classify(&e, Statement::SchemaChange, &format!("preparing table {q}")))?;
        self.reload(client, name).await
    }

    async fn reload(&self, client: &Object, name: &str) -> Result<Arc<Table>, DeliveryError> {
        let rows = client
            .query(
                "SELECT column_name, data_type, udt_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                &[&self.config.schema, &name],
            )
            .await
            .map_err(|e| classify(&e, Statement::Data, "reading the table's columns"))?;
        let mut table = Table::default();
        for row in rows {
            let column: String = row.get(0);
            if !SYSTEM_COLUMNS.contains(&column.as_str()) {
                table
                    .columns
                    .insert(column, ColumnType::from_catalog(row.get(1), row.get(2)));
            }
        }
        let table = Arc::new(table);
        self.tables
            .lock()
            .expect("table cache")
            .insert(name.to_string(), table.clone());
        Ok(table)
    }

    /// Adds missing columns and widens or refuses values that do not fit. Returns the
    /// records' problems; the others are ready to write.
    async fn evolve(
        &self,
        client: &Object,
        name: &str,
        records: &[(usize, &Delivery)],
    ) -> Result<(Arc<Table>, HashMap<usize, DeliveryError>), DeliveryError> {
        let mut table = self.table(client, name).await?;
        let mut refused = HashMap::new();
        if self.config.mode == Mode::Document {
            return Ok((table, refused));
        }
        let mut changes: Vec<(String, ColumnType, bool)> = Vec::new(); // (column, type, is_new)
        for (i, d) in records {
            let Some(Value::Object(data)) = &d.event.event.data else {
                continue;
            };
            for (field, value) in data {
                if field == "id" {
                    continue;
                }
                if SYSTEM_COLUMNS.contains(&field.as_str()) || field.len() > MAX_IDENT_BYTES {
                    let why = if field.len() > MAX_IDENT_BYTES {
                        format!(
                            "field \"{field}\" is longer than PostgreSQL's 63-byte column names"
                        )
                    } else {
                        format!(
                            "field \"{field}\" collides with the system column of the same name"
                        )
                    };
                    refused.insert(*i, DeliveryError::permanent(why));
                    continue;
                }
                let pending = changes.iter().find(|c| c.0 == *field).map(|c| c.1.clone());
                let current = pending.or_else(|| table.columns.get(field).cloned());
                match current {
                    None => {
                        if let Some(t) = infer(
                            value,
                            self.config.number_type,
                            self.config.detect_timestamps,
                        ) {
                            changes.push((field.clone(), t, true));
                        }
                    }
                    Some(col) if fits(&col, value) => {}
                    Some(col) => match self.config.schema_evolution {
                        SchemaEvolution::Widen => {
                            let wider = widen(&col, value);
                            match changes.iter_mut().find(|c| c.0 == *field) {
                                Some(c) => c.1 = wider,
                                None => changes.push((field.clone(), wider, false)),
                            }
                        }
                        SchemaEvolution::Strict => {
                            refused.insert(
                                *i,
                                DeliveryError::permanent(format!(
                                    "value {} of field \"{field}\" does not fit column {} of type {} (set schemaEvolution: widen to widen the column)",
                                    short(value),
                                    self.qualified(name),
                                    col.sql()
                                )),
                            );
                        }
                    },
                }
            }
        }
        if !changes.is_empty() {
            let q = self.qualified(name);
            let clauses: Vec<String> = changes
                .iter()
                .map(|(column, ty, is_new)| {
                    if *is_new {
                        format!("ADD COLUMN IF NOT EXISTS {} {}", ident(column), ty.sql())
                    } else {
                        let using = match ty {
                            ColumnType::Jsonb => format!("to_jsonb({})", ident(column)),
                            _ => format!("{}::{}", ident(column), ty.sql()),
                        };
                        format!(
                            "ALTER COLUMN {} TYPE {} USING {using}",
                            ident(column),
                            ty.sql()
                        )
                    }
                })
                .collect();
            let sql = format!("ALTER TABLE {q} {}", clauses.join(", "));
            tracing::info!(table = %q, change = %clauses.join(", "), "evolving table schema");
            client.batch_execute(&sql).await.map_err(|e| {
                classify(&e, Statement::SchemaChange, &format!("altering table {q}"))
            })?;
            table = self.reload(client, name).await?;
        }
        Ok((table, refused))
    }

    /// The upsert of rows whose data columns are `columns`, from one jsonb parameter.
    fn upsert_sql(&self, name: &str, table: &Table) -> String {
        let q = self.qualified(name);
        let mut cols: Vec<(String, String)> = vec![("id".into(), "text".into())];
        match self.config.mode {
            Mode::Document => cols.push(("data".into(), "jsonb".into())),
            Mode::Columns => {
                let mut names: Vec<_> = table.columns.iter().collect();
                names.sort_by(|a, b| a.0.cmp(b.0));
                cols.extend(
                    names
                        .into_iter()
                        .map(|(n, t)| (n.clone(), t.sql().to_string())),
                );
            }
        }
        cols.push(("_sequence".into(), "bigint".into()));
        let list = cols
            .iter()
            .map(|(n, _)| ident(n))
            .collect::<Vec<_>>()
            .join(", ");
        let types = cols
            .iter()
            .map(|(n, t)| format!("{} {t}", ident(n)))
            .collect::<Vec<_>>()
            .join(", ");
        let mut sets: Vec<String> = cols
            .iter()
            .skip(1)
            .map(|(n, _)| format!("{0} = EXCLUDED.{0}", ident(n)))
            .collect();
        sets.push("\"_replicated_at\" = now()".into());
        let mut insert_cols = format!("{list}, \"_replicated_at\"");
        let mut select = format!("{list}, now()");
        if self.config.delete_mode == DeleteMode::Soft {
            sets.push("\"_deleted_at\" = NULL".into());
            insert_cols.push_str(", \"_deleted_at\"");
            select.push_str(", NULL");
        }
        format!(
            "INSERT INTO {q} AS t ({insert_cols}) SELECT {select} FROM jsonb_to_recordset($1::text::jsonb) AS x({types}) \
             ON CONFLICT (\"id\") DO UPDATE SET {} WHERE t.\"_sequence\" < EXCLUDED.\"_sequence\"",
            sets.join(", ")
        )
    }

    fn delete_sql(&self, name: &str) -> String {
        let q = self.qualified(name);
        match self.config.delete_mode {
            DeleteMode::Hard => format!(
                "DELETE FROM {q} AS t USING jsonb_to_recordset($1::text::jsonb) AS x(\"id\" text, \"_sequence\" bigint) \
                 WHERE t.\"id\" = x.\"id\" AND t.\"_sequence\" < x.\"_sequence\""
            ),
            DeleteMode::Soft => format!(
                "INSERT INTO {q} AS t (\"id\", \"_sequence\", \"_replicated_at\", \"_deleted_at\") \
                 SELECT x.\"id\", x.\"_sequence\", now(), now() FROM jsonb_to_recordset($1::text::jsonb) AS x(\"id\" text, \"_sequence\" bigint) \
                 ON CONFLICT (\"id\") DO UPDATE SET \"_sequence\" = EXCLUDED.\"_sequence\", \"_replicated_at\" = now(), \"_deleted_at\" = now() \
                 WHERE t.\"_sequence\" < EXCLUDED.\"_sequence\""
            ),
        }
    }

    fn row(&self, d: &Delivery) -> Value {
        let e = &d.event.event;
        let mut row = Map::new();
        row.insert("id".into(), Value::String(e.id.clone()));
        row.insert("_sequence".into(), json!(d.event.sequence));
        match (self.config.mode, &e.data) {
            (Mode::Document, data) => {
                row.insert("data".into(), data.clone().unwrap_or(Value::Null));
            }
            (Mode::Columns, Some(Value::Object(data))) => {
                for (k, v) in data {
                    if k != "id" {
                        row.insert(k.clone(), v.clone());
                    }
                }
            }
            _ => {}
        }
        Value::Object(row)
    }
}

#[async_trait::async_trait]
impl Driver for PostgresDriver {
    async fn init(&self) -> Result<(), DeliveryError> {
        let client = self.client().await?;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                ident(&self.config.schema)
            ))
            .await
            .map_err(|e| classify(&e, Statement::SchemaChange, "creating the schema"))
    }

    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
        let mut client = self.client().await?;
        let mut results: Vec<Result<(), DeliveryError>> = vec![Ok(()); batch.len()];

        // Per table, keep the newest event of each id (two routes may share a table).
        let mut by_table: HashMap<&str, HashMap<&str, (usize, &Delivery)>> = HashMap::new();
        for (i, d) in batch.iter().enumerate() {
            let ids = by_table.entry(d.destination()).or_default();
            let slot = ids.entry(d.event.event.id.as_str()).or_insert((i, d));
            if slot.1.event.sequence < d.event.sequence {
                *slot = (i, d);
            }
        }

        let mut statements: Vec<(String, Value)> = Vec::new();
        for (name, ids) in &by_table {
            let mut upserts: Vec<(usize, &Delivery)> = Vec::new();
            let mut deletes: Vec<(usize, &Delivery)> = Vec::new();
            for (i, d) in ids.values() {
                match d.event.event.action {
                    Action::Delete => deletes.push((*i, d)),
                    Action::Insert | Action::Update => upserts.push((*i, d)),
                }
            }
            // The first value of a new field, in sequence order, decides its column type.
            upserts.sort_by_key(|(_, d)| d.event.sequence);
            let table = if upserts.is_empty() {
                self.table(&client, name).await?
            } else {
                let (table, refused) = self.evolve(&client, name, &upserts).await?;
                for (i, err) in refused {
                    results[i] = Err(err);
                }
                upserts.retain(|(i, _)| results[*i].is_ok());
                table
            };
            if !upserts.is_empty() {
                let rows: Vec<Value> = upserts.iter().map(|(_, d)| self.row(d)).collect();
                statements.push((self.upsert_sql(name, &table), Value::Array(rows)));
            }
            if !deletes.is_empty() {
                let rows: Vec<Value> = deletes
                    .iter()
                    .map(|(_, d)| json!({"id": d.event.event.id, "_sequence": d.event.sequence}))
                    .collect();
                statements.push((self.delete_sql(name), Value::Array(rows)));
            }
        }

        let tx = client
            .transaction()
            .await
            .map_err(|e| classify(&e, Statement::Data, "starting a transaction"))?;
        for (sql, rows) in &statements {
            let param = rows.to_string();
            tx.execute(sql.as_str(), &[&param]).await.map_err(|e| {
                if e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_COLUMN)
                    || e.code() == Some(&tokio_postgres::error::SqlState::UNDEFINED_TABLE)
                {
                    // Someone changed the table behind us; forget what we knew and try again.
                    self.tables.lock().expect("table cache").clear();
                    return DeliveryError::transient(describe(&e));
                }
                classify(&e, Statement::Data, "writing rows")
            })?;
        }
        tx.commit()
            .await
            .map_err(|e| classify(&e, Statement::Data, "committing"))?;
        Ok(results)
    }

    async fn close(&self) {
        self.pool.close();
    }
}

/// Certificates are always verified: against the web PKI and the configured `caCertificate`.
fn tls_config(extra_roots: &[rustls::pki_types::CertificateDer<'static>]) -> rustls::ClientConfig {
    let mut roots =
        rustls::RootCertStore::from_iter(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    roots.add_parsable_certificates(extra_roots.iter().cloned());
    rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth()
}

/// The server's message with its SQLSTATE, or the client error.
fn describe(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(detail) = db.detail() {
                s.push_str(": ");
                s.push_str(detail);
            }
            s
        }
        None => {
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(e);
            while let Some(inner) = cur {
                s.push_str(": ");
                s.push_str(&inner.to_string());
                cur = inner.source();
            }
            s
        }
    }
}

/// What a failed statement was doing: a schema change may lose a race with another writer
/// making the same change, which is worth another attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Statement {
    SchemaChange,
    Data,
}

/// Connection trouble waits, contention and resource limits retry, the rest is permanent.
fn classify(e: &tokio_postgres::Error, statement: Statement, doing: &str) -> DeliveryError {
    let message = format!("{doing}: {}", describe(e));
    let Some(code) = e.code() else {
        let io = std::error::Error::source(e).is_some_and(|s| s.is::<std::io::Error>());
        return if e.is_closed() || io {
            DeliveryError::unavailable(message)
        } else {
            // Encoding and protocol errors on our side would fail the same way again.
            DeliveryError::permanent(message)
        };
    };
    let code = code.code();
    match &code[..2] {
        "08" => DeliveryError::unavailable(message),
        "40" | "53" | "55" | "57" | "58" => DeliveryError::transient(message),
        // Concurrent CREATE/ALTER of the same table.
        "42P07" | "42701" | "23505" if statement == Statement::SchemaChange => {
            DeliveryError::transient(message)
        }
        _ => DeliveryError::permanent(message),
    }
}

/// A value for a message, cut short.
fn short(value: &Value) -> String {
    let s = value.to_string();
    if s.len() > 80 {
        format!("{}...", &s[..s.floor_char_boundary(77)])
    } else {
        s
    }
}
