//! Writes batches with insertAll (`insertId` = the idempotency key; requests of at most 500
//! rows and 9 MB), keeps tables, columns and `_current` views in step with the data, and for
//! `mutable` tables merges the staged changes on an interval and a row threshold.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_request_rows::TableDataInsertAllRequestRows;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use super::client::{self, Api, is_duplicate, is_not_found};
use super::config::{BigQueryConfig, Destination, Mutability, table_name_problem};
use super::schema::{self, ColumnType};
use crate::delivery::{ANY_RESOURCE, BackgroundReport, Backoff, DeliveryPolicy, Route, for_outage};
use crate::drivers::util::payload::idempotency_key;
use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver, ErrorKind};

/// BigQuery's advice for one insertAll request, and a margin under its 10 MB limit.
const MAX_ROWS_PER_REQUEST: usize = 500;
const MAX_BYTES_PER_REQUEST: usize = 9 * 1024 * 1024;

/// A table's columns, name -> type.
type Columns = BTreeMap<String, ColumnType>;

/// What the driver knows of the dataset; held while a table's schema changes.
#[derive(Default)]
struct Catalog {
    tables: HashMap<String, Columns>,
    /// Changelog tables whose `_current` view matches their columns.
    views: HashSet<String>,
}

impl Catalog {
    /// Forgets a table (it was dropped): it is read or created again on the next batch.
    fn forget(&mut self, table: &str) {
        self.tables.remove(table);
        self.views.remove(table);
    }
}

/// What the driver and its merger share.
struct Shared {
    config: BigQueryConfig,
    api: OnceCell<Api>,
    catalog: Mutex<Catalog>,
    requests: Arc<AtomicU64>,
    /// `mutable` targets with staged changes not merged yet.
    pending: std::sync::Mutex<HashMap<String, Pending>>,
    staged: Notify,
}

#[derive(Clone, Copy)]
struct Pending {
    rows: u64,
    since: Instant,
}

/// One record as a row of its table.
struct Row<'a> {
    index: usize,
    delivery: &'a Delivery,
    fields: Map<String, Value>,
}

type Verdict = (usize, Result<(), DeliveryError>);

pub struct BigQueryDriver {
    shared: Arc<Shared>,
    /// Each route's table and mode, by (resource, destination).
    destinations: HashMap<(String, String), Destination>,
    report: Arc<dyn BackgroundReport>,
    stop: CancellationToken,
}

impl BigQueryDriver {
    pub fn new(
        config: BigQueryConfig,
        routes: &[Route],
        report: Arc<dyn BackgroundReport>,
    ) -> BigQueryDriver {
        let destinations = routes
            .iter()
            .map(|r| {
                (
                    (r.resource.clone(), r.destination.clone()),
                    config.destination(r),
                )
            })
            .collect();
        BigQueryDriver {
            shared: Arc::new(Shared {
                config,
                api: OnceCell::new(),
                catalog: Mutex::new(Catalog::default()),
                requests: Arc::new(AtomicU64::new(0)),
                pending: std::sync::Mutex::new(HashMap::new()),
                staged: Notify::new(),
            }),
            destinations,
            report,
            stop: CancellationToken::new(),
        }
    }

    /// The table and mode of a delivery (a `*` route writes each resource to its own table).
    fn destination(&self, d: &Delivery) -> Destination {
        let route = &d.route;
        let mut destination = self
            .destinations
            .get(&(route.resource.clone(), route.destination.clone()))
            .cloned()
            .expect("every route was read at build");
        if route.destination == ANY_RESOURCE {
            destination.table = d.destination().to_string();
        }
        destination
    }

    fn mutable_targets(&self) -> impl Iterator<Item = &str> {
        self.destinations
            .values()
            .filter(|d| d.mutability == Mutability::Mutable)
            .map(|d| d.table.as_str())
    }

    /// Starts the merger when a route is `mutable`.
    pub fn start_merger(&self, policy: &DeliveryPolicy) {
        if self.mutable_targets().next().is_some() {
            tokio::spawn(merger(
                self.shared.clone(),
                self.report.clone(),
                self.stop.clone(),
                policy.clone(),
            ));
        }
    }

    /// Writes the deliveries of one destination table.
    async fn write(
        &self,
        destination: &Destination,
        items: Vec<(usize, &Delivery)>,
    ) -> Vec<Verdict> {
        let s = &self.shared;
        let api = match s.api().await {
            Ok(api) => api,
            Err(e) => return items.iter().map(|(i, _)| (*i, Err(e.clone()))).collect(),
        };
        let mutable = destination.mutability == Mutability::Mutable;
        let table = if mutable {
            format!("{}_changes", destination.table)
        } else {
            destination.table.clone()
        };
        let mut verdicts = Vec::new();
        let mut rows = Vec::new();
        if let Some(problem) = table_name_problem("table", &destination.table) {
            let e = DeliveryError::permanent(problem);
            return items.iter().map(|(i, _)| (*i, Err(e.clone()))).collect();
        }
        for (index, d) in items {
            match row(d, destination.mutability, mutable) {
                Ok(fields) => rows.push(Row {
                    index,
                    delivery: d,
                    fields,
                }),
                Err(e) => verdicts.push((index, Err(e))),
            }
        }
        let mut columns = s.ensure_columns(api, destination, &table, &rows).await;
        if matches!(&columns, Err(e) if e.kind == ErrorKind::Permanent) && rows.len() > 1 {
            // A column BigQuery refuses fails the rows that carry its field, not the others:
            // each row on its own (the columns added so far are known, so this is cheap).
            let mut kept = Vec::with_capacity(rows.len());
            for r in rows {
                match s
                    .ensure_columns(api, destination, &table, std::slice::from_ref(&r))
                    .await
                {
                    Ok(_) => kept.push(r),
                    Err(e) => verdicts.push((r.index, Err(e))),
                }
            }
            rows = kept;
            columns = s.ensure_columns(api, destination, &table, &rows).await;
        }
        let columns = match columns {
            Ok(c) => c,
            Err(e) => {
                verdicts.extend(rows.iter().map(|r| (r.index, Err(e.clone()))));
                return verdicts;
            }
        };
        let shown = s.table_sql(&table);
        let mut requests: Vec<Vec<(usize, TableDataInsertAllRequestRows)>> = vec![Vec::new()];
        let mut request_bytes = 0;
        for r in rows {
            if let Some(problem) = mismatch(&r.fields, &columns, &shown) {
                verdicts.push((r.index, Err(DeliveryError::permanent(problem))));
                continue;
            }
            // A null of a field with no column yet is simply absent.
            let json: Map<String, Value> = r
                .fields
                .iter()
                .filter_map(|(k, v)| columns.get(k).map(|c| (k.clone(), schema::cell(c, v))))
                .collect();
            let json = Value::Object(json);
            let size = json.to_string().len();
            let last = requests.last().expect("one request at least");
            if !last.is_empty()
                && (last.len() >= MAX_ROWS_PER_REQUEST
                    || request_bytes + size > MAX_BYTES_PER_REQUEST)
            {
                requests.push(Vec::new());
                request_bytes = 0;
            }
            request_bytes += size;
            requests.last_mut().expect("one request at least").push((
                r.index,
                TableDataInsertAllRequestRows {
                    insert_id: Some(idempotency_key(r.delivery)),
                    json,
                },
            ));
        }
        for request in requests.into_iter().filter(|r| !r.is_empty()) {
            let sent = self.insert(api, &table, &shown, request).await;
            let accepted = sent.iter().filter(|(_, r)| r.is_ok()).count() as u64;
            if mutable && accepted > 0 {
                s.staged(&destination.table, accepted);
            }
            if sent
                .iter()
                .any(|(_, r)| matches!(r, Err(e) if e.kind == ErrorKind::Unavailable))
            {
                let mut catalog = s.catalog.lock().await;
                catalog.forget(&table);
                catalog.forget(&destination.table);
            }
            verdicts.extend(sent);
        }
        verdicts
    }

    /// One insertAll; each row gets BigQuery's verdict on it.
    async fn insert(
        &self,
        api: &Api,
        table: &str,
        shown: &str,
        rows: Vec<(usize, TableDataInsertAllRequestRows)>,
    ) -> Vec<Verdict> {
        let c = &self.shared.config;
        let (indexes, rows): (Vec<usize>, Vec<_>) = rows.into_iter().unzip();
        let mut request = TableDataInsertAllRequest::new();
        // Valid rows go in even when another row of the request is refused.
        request.skip_invalid_rows();
        request.add_rows(rows).expect("rows serialize");
        api.count();
        let answer = api
            .client
            .tabledata()
            .insert_all(&c.project_id, &c.dataset_id, table, request)
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(e) => {
                let error = client::error(&format!("insertAll {shown}"), &e);
                return indexes.iter().map(|i| (*i, Err(error.clone()))).collect();
            }
        };
        let mut refused: HashMap<usize, DeliveryError> = HashMap::new();
        for e in answer.insert_errors.unwrap_or_default() {
            if let (Some(position), Some(first)) =
                (e.index, e.errors.as_ref().and_then(|x| x.first()))
                && let Some(index) = indexes.get(position as usize)
            {
                refused.insert(
                    *index,
                    client::proto_error(&format!("{shown} refused the row"), first),
                );
            }
        }
        indexes
            .into_iter()
            .map(|i| (i, refused.remove(&i).map_or(Ok(()), Err)))
            .collect()
    }
}

/// The row of one delivery: the record's fields (for a delete, the last known record), `id`,
/// and the host's columns.
fn row(
    d: &Delivery,
    mutability: Mutability,
    staging: bool,
) -> Result<Map<String, Value>, DeliveryError> {
    let e = &d.event.event;
    let document = e.data.as_ref().or(e.before.as_ref());
    let mut fields = Map::new();
    fields.insert("id".into(), Value::String(e.id.clone()));
    let meta = schema::meta_columns(mutability, staging);
    if let Some(Value::Object(doc)) = document {
        for (k, v) in doc {
            if k == "id" {
                continue;
            }
            if !schema::column_name_ok(k) || meta.iter().any(|(m, _)| m.eq_ignore_ascii_case(k)) {
                return Err(DeliveryError::permanent(format!(
                    "field \"{k}\" cannot be a BigQuery column (letters, digits and '_', not \
                     starting with a digit or a reserved prefix, and not one of the host's \
                     columns); rename it with a transform"
                )));
            }
            fields.insert(k.clone(), v.clone());
        }
    }
    fields.insert("_sequence".into(), Value::from(d.event.sequence));
    fields.insert("_operation_type".into(), Value::from(e.action.as_str()));
    fields.insert(
        "_operation_timestamp".into(),
        Value::from(e.timestamp.clone()),
    );
    if mutability == Mutability::Immutable {
        fields.insert(
            "_is_deleted".into(),
            Value::Bool(e.action == crate::event::Action::Delete),
        );
    }
    if staging {
        fields.insert(
            "_staged_at".into(),
            Value::from(crate::event::now_rfc3339()),
        );
    }
    Ok(fields)
}

/// Why a row does not fit the table's columns, if it does not.
fn mismatch(fields: &Map<String, Value>, columns: &Columns, table: &str) -> Option<String> {
    fields.iter().find_map(|(k, v)| {
        let column = columns.get(k)?;
        (!schema::fits(column, v)).then(|| {
            let mut shown = v.to_string();
            if shown.len() > 60 {
                shown.truncate(60);
                shown.push('…');
            }
            format!(
                "field \"{k}\" ({shown}) does not fit column {k} {} of {table}",
                column.sql()
            )
        })
    })
}

/// The columns `rows` need: the host's, with their declared types, then each record field
/// with the type its first non-null value calls for.
fn needed_columns(host: &[(&str, ColumnType)], rows: &[Row], detect_timestamps: bool) -> Columns {
    let mut needed: Columns = host
        .iter()
        .map(|(n, t)| (n.to_string(), t.clone()))
        .collect();
    needed.insert("id".into(), ColumnType::String);
    for r in rows {
        for (k, v) in &r.fields {
            if !needed.contains_key(k)
                && let Some(t) = schema::infer(v, detect_timestamps)
            {
                needed.insert(k.clone(), t);
            }
        }
    }
    needed
}

impl Shared {
    async fn api(&self) -> Result<&Api, DeliveryError> {
        self.api
            .get_or_try_init(|| async {
                let client = client::connect(&self.config).await?;
                Ok(Api::new(
                    client,
                    self.config.project_id.clone(),
                    self.requests.clone(),
                ))
            })
            .await
    }

    fn table_sql(&self, table: &str) -> String {
        schema::table_sql(&self.config.project_id, &self.config.dataset_id, table)
    }

    /// The dataset, created when missing (in `location`).
    async fn ensure_dataset(&self, api: &Api) -> Result<(), DeliveryError> {
        let c = &self.config;
        api.count();
        match api.client.dataset().get(&c.project_id, &c.dataset_id).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) && c.create_tables => {
                api.count();
                match api
                    .client
                    .dataset()
                    .create(Dataset::new(&c.project_id, &c.dataset_id).location(&c.location))
                    .await
                {
                    Ok(_) => Ok(()),
                    Err(e) if is_duplicate(&e) => Ok(()),
                    Err(e) => Err(client::error(
                        &format!("create dataset {}", c.dataset_id),
                        &e,
                    )),
                }
            }
            Err(e) => Err(client::error(&format!("dataset {}", c.dataset_id), &e)),
        }
    }

    /// Reads a table's columns once; `None` when it does not exist.
    async fn read_table(&self, api: &Api, table: &str) -> Result<Option<Columns>, DeliveryError> {
        let c = &self.config;
        api.count();
        match api
            .client
            .table()
            .get(&c.project_id, &c.dataset_id, table, None)
            .await
        {
            Ok(t) => Ok(Some(
                t.schema
                    .fields
                    .unwrap_or_default()
                    .iter()
                    .map(|f| (f.name.clone(), ColumnType::from_field(&f.r#type)))
                    .collect(),
            )),
            Err(e) if is_not_found(&e) => Ok(None),
            Err(e) => Err(client::error(
                &format!("table {}", self.table_sql(table)),
                &e,
            )),
        }
    }

    /// Makes `table` exist with at least the `needed` columns (created with all of them, so
    /// `tableOptions` may name record fields); returns its columns.
    async fn ensure_table(
        &self,
        api: &Api,
        catalog: &mut Catalog,
        table: &str,
        needed: &Columns,
        destination: Option<&Destination>,
    ) -> Result<Columns, DeliveryError> {
        let c = &self.config;
        let shown = self.table_sql(table);
        if !catalog.tables.contains_key(table) {
            let columns = match self.read_table(api, table).await? {
                Some(columns) => columns,
                None if !c.create_tables => {
                    return Err(DeliveryError::unavailable(format!(
                        "table {shown} does not exist and schemaSync creates none (create it, or set autoCreateTable)"
                    )));
                }
                None => {
                    let fields = needed
                        .iter()
                        .map(|(n, t)| TableFieldSchema::new(n, t.field_type()))
                        .collect();
                    let mut definition = Table::new(
                        &c.project_id,
                        &c.dataset_id,
                        table,
                        TableSchema::new(fields),
                    );
                    if let Some(o) = destination.map(|d| &d.table_options) {
                        if let Some(p) = &o.time_partitioning {
                            definition = definition.time_partitioning(p.clone());
                        }
                        if let Some(clustering) = &o.clustering {
                            definition = definition.clustering(clustering.clone());
                        }
                    }
                    api.count();
                    match api.client.table().create(definition).await {
                        Ok(_) => needed.clone(),
                        // Made meanwhile by another host or replicator: read what it has.
                        Err(e) if is_duplicate(&e) => {
                            self.read_table(api, table).await?.unwrap_or_default()
                        }
                        Err(e) => return Err(client::error(&format!("create table {shown}"), &e)),
                    }
                }
            };
            catalog.tables.insert(table.to_string(), columns);
        }
        let have = &catalog.tables[table];
        let missing: Vec<(String, ColumnType)> = needed
            .iter()
            .filter(|(n, _)| !have.keys().any(|h| h.eq_ignore_ascii_case(n)))
            .map(|(n, t)| (n.clone(), t.clone()))
            .collect();
        if !missing.is_empty() && !c.create_columns {
            let names: Vec<&String> = missing.iter().map(|(n, _)| n).collect();
            return Err(DeliveryError::permanent(format!(
                "{shown} has no column {names:?} and schemaSync adds none (autoCreateColumns is false)"
            )));
        }
        for (name, column) in &missing {
            self.add_column(api, table, name, column).await?;
            catalog
                .tables
                .get_mut(table)
                .expect("read above")
                .insert(name.clone(), column.clone());
            catalog.views.remove(table);
        }
        Ok(catalog.tables[table].clone())
    }

    /// Widens the columns of `table` that values of `rows` do not fit, where BigQuery allows
    /// it (`onMismatch: widen`); the rest stay mismatches, each its record's error.
    async fn widen_columns(
        &self,
        api: &Api,
        catalog: &mut Catalog,
        table: &str,
        rows: &[Row<'_>],
    ) -> Result<(), DeliveryError> {
        let mut wider: BTreeMap<String, ColumnType> = BTreeMap::new();
        for r in rows {
            for (k, v) in &r.fields {
                if let Some(column) = catalog.tables[table].get(k)
                    && !schema::fits(column, v)
                    && let Some(t) = schema::widened(column, v)
                {
                    wider.insert(k.clone(), t);
                }
            }
        }
        let c = &self.config;
        let shown = self.table_sql(table);
        for (name, column) in wider {
            api.query(&format!(
                "ALTER TABLE {shown} ALTER COLUMN `{name}` SET DATA TYPE {}",
                column.sql()
            ))
            .await?;
            api.count();
            let mut current = api
                .client
                .table()
                .get(&c.project_id, &c.dataset_id, table, None)
                .await
                .map_err(|e| client::error(&format!("table {shown}"), &e))?;
            if let Some(field) = current
                .schema
                .fields
                .get_or_insert_with(Vec::new)
                .iter_mut()
                .find(|f| f.name == name)
                && ColumnType::from_field(&field.r#type) != column
            {
                field.r#type = column.field_type();
                api.count();
                api.client
                    .table()
                    .patch(&c.project_id, &c.dataset_id, table, current)
                    .await
                    .map_err(|e| client::error(&format!("widen column {name} of {shown}"), &e))?;
            }
            tracing::info!(table = %shown, column = %name, to = column.sql(), "column widened");
            catalog
                .tables
                .get_mut(table)
                .expect("read before")
                .insert(name, column);
            catalog.views.remove(table);
        }
        Ok(())
    }

    /// Adds a NULLABLE column. Both the DDL and the schema patch: BigQuery takes either, the
    /// emulator needs both.
    async fn add_column(
        &self,
        api: &Api,
        table: &str,
        name: &str,
        column: &ColumnType,
    ) -> Result<(), DeliveryError> {
        let c = &self.config;
        let shown = self.table_sql(table);
        api.query(&format!(
            "ALTER TABLE {shown} ADD COLUMN IF NOT EXISTS `{name}` {}",
            column.sql()
        ))
        .await?;
        api.count();
        let mut current = api
            .client
            .table()
            .get(&c.project_id, &c.dataset_id, table, None)
            .await
            .map_err(|e| client::error(&format!("table {shown}"), &e))?;
        let fields = current.schema.fields.get_or_insert_with(Vec::new);
        if !fields.iter().any(|f| f.name.eq_ignore_ascii_case(name)) {
            fields.push(TableFieldSchema::new(name, column.field_type()));
            api.count();
            api.client
                .table()
                .patch(&c.project_id, &c.dataset_id, table, current)
                .await
                .map_err(|e| client::error(&format!("add column {name} to {shown}"), &e))?;
        }
        Ok(())
    }

    /// Makes the tables of a destination hold every field of `rows` (for `mutable`, the
    /// staging table and the target each); returns the columns of the table written.
    async fn ensure_columns(
        &self,
        api: &Api,
        destination: &Destination,
        table: &str,
        rows: &[Row<'_>],
    ) -> Result<Columns, DeliveryError> {
        let mut catalog = self.catalog.lock().await;
        let mutable = destination.mutability == Mutability::Mutable;
        let detect = self.config.detect_timestamps;
        let needed = needed_columns(
            &schema::meta_columns(destination.mutability, mutable),
            rows,
            detect,
        );
        let widen = self.config.widen_columns;
        if mutable {
            self.ensure_table(api, &mut catalog, table, &needed, None)
                .await?;
            let target_host = schema::meta_columns(Mutability::AppendOnly, false);
            let target = needed_columns(&target_host, rows, detect);
            self.ensure_table(
                api,
                &mut catalog,
                &destination.table,
                &target,
                Some(destination),
            )
            .await?;
            if widen {
                self.widen_columns(api, &mut catalog, table, rows).await?;
                self.widen_columns(api, &mut catalog, &destination.table, rows)
                    .await?;
            }
            return Ok(catalog.tables[table].clone());
        }
        self.ensure_table(api, &mut catalog, table, &needed, Some(destination))
            .await?;
        if widen {
            self.widen_columns(api, &mut catalog, table, rows).await?;
        }
        let columns = catalog.tables[table].clone();
        if !catalog.views.contains(table) {
            let view = self.table_sql(&format!("{table}_current"));
            api.query(&format!(
                "CREATE OR REPLACE VIEW {view} AS {}",
                schema::current_view(&self.table_sql(table), destination.mutability)
            ))
            .await?;
            catalog.views.insert(table.to_string());
        }
        Ok(columns)
    }

    /// Notes rows staged for a `mutable` target.
    fn staged(&self, target: &str, rows: u64) {
        let mut pending = self.pending.lock().expect("not poisoned");
        let p = pending.entry(target.to_string()).or_insert(Pending {
            rows: 0,
            since: Instant::now(),
        });
        p.rows += rows;
        if p.rows >= self.config.merge_rows {
            self.staged.notify_one();
        }
    }

    /// The targets whose staged rows are due: enough of them, or waiting long enough.
    fn due(&self) -> Vec<String> {
        let pending = self.pending.lock().expect("not poisoned");
        pending
            .iter()
            .filter(|(_, p)| {
                p.rows >= self.config.merge_rows || p.since.elapsed() >= self.config.merge_interval
            })
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Merges one target's staged changes. The column list is the staging table's as
    /// BigQuery has it (read when this process has not seen it), never a guess.
    async fn merge(&self, target: &str) -> Result<(), DeliveryError> {
        let api = self.api().await?;
        let staging = format!("{target}_changes");
        let taken = self.pending.lock().expect("not poisoned").remove(target);
        let result = self.run_merge(api, target, &staging).await;
        if result.is_err()
            && let Some(p) = taken
        {
            // Still to merge: put the rows back.
            self.pending
                .lock()
                .expect("not poisoned")
                .entry(target.to_string())
                .and_modify(|q| {
                    q.rows += p.rows;
                    q.since = q.since.min(p.since);
                })
                .or_insert(p);
        }
        result
    }

    async fn run_merge(&self, api: &Api, target: &str, staging: &str) -> Result<(), DeliveryError> {
        let mut catalog = self.catalog.lock().await;
        if !catalog.tables.contains_key(staging) {
            match self.read_table(api, staging).await? {
                Some(columns) => {
                    catalog.tables.insert(staging.to_string(), columns);
                }
                // Nothing was ever staged.
                None => return Ok(()),
            }
        }
        let meta = schema::meta_columns(Mutability::Mutable, true);
        let data_columns: Vec<String> = catalog.tables[staging]
            .keys()
            .filter(|k| *k != "id" && !meta.iter().any(|(m, _)| m == k))
            .cloned()
            .collect();
        drop(catalog);
        let started = Instant::now();
        api.query(&schema::merge(
            &self.table_sql(target),
            &self.table_sql(staging),
            &data_columns,
        ))
        .await
        .map_err(|e| {
            DeliveryError::new(
                e.kind,
                format!("MERGE into {}: {}", self.table_sql(target), e.message),
            )
        })?;
        tracing::info!(
            table = %target,
            ms = started.elapsed().as_millis() as u64,
            "merged"
        );
        Ok(())
    }

    /// Deletes superseded staged rows; a failure only waits for the next time.
    async fn prune(&self, target: &str) {
        let Ok(api) = self.api().await else { return };
        let staging = self.table_sql(&format!("{target}_changes"));
        let sql = schema::prune_staging(&staging, self.config.staging_retention.as_secs());
        if let Err(e) = api.query(&sql).await {
            tracing::warn!(table = %target, error = %e.message, "pruning the staging table failed; trying again later");
        }
    }
}

/// Merges `mutable` targets when due, each with its own backoff after a failure, reported
/// until every target merges again; prunes staging tables now and then.
async fn merger(
    shared: Arc<Shared>,
    report: Arc<dyn BackgroundReport>,
    stop: CancellationToken,
    policy: DeliveryPolicy,
) {
    let mut failing: HashMap<String, (Backoff, Instant)> = HashMap::new();
    let mut pruned: HashMap<String, Instant> = HashMap::new();
    let prune_every = shared
        .config
        .staging_retention
        .min(Duration::from_secs(3600));
    loop {
        let tick = shared.config.merge_interval.min(Duration::from_millis(500));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
            () = shared.staged.notified() => {}
        }
        for target in shared.due() {
            if failing
                .get(&target)
                .is_some_and(|(_, retry_at)| Instant::now() < *retry_at)
            {
                continue;
            }
            match shared.merge(&target).await {
                Ok(()) => {
                    if failing.remove(&target).is_some() && failing.is_empty() {
                        report.recovered();
                    }
                    if pruned
                        .get(&target)
                        .is_none_or(|t| t.elapsed() >= prune_every)
                    {
                        shared.prune(&target).await;
                        pruned.insert(target, Instant::now());
                    }
                }
                Err(e) => {
                    tracing::warn!(table = %target, error = %e.message, "MERGE failed; retrying");
                    report.failed(&e);
                    let (backoff, retry_at) = failing
                        .entry(target)
                        .or_insert_with(|| (for_outage(&policy), Instant::now()));
                    *retry_at = Instant::now() + backoff.next().unwrap_or(policy.max_retry_delay);
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Driver for BigQueryDriver {
    /// Authenticates, makes sure the dataset exists, and queues a merge of every `mutable`
    /// target, so changes staged before a restart are merged without waiting for new ones.
    async fn init(&self) -> Result<(), DeliveryError> {
        let s = &self.shared;
        let api = s.api().await?;
        s.ensure_dataset(api).await?;
        let mut pending = s.pending.lock().expect("not poisoned");
        for target in self.mutable_targets() {
            pending.entry(target.to_string()).or_insert(Pending {
                rows: 0,
                since: Instant::now(),
            });
        }
        Ok(())
    }

    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
        let mut by_table: BTreeMap<String, (Destination, Vec<(usize, &Delivery)>)> =
            BTreeMap::new();
        for (i, d) in batch.iter().enumerate() {
            let destination = self.destination(d);
            by_table
                .entry(destination.table.clone())
                .or_insert_with(|| (destination, Vec::new()))
                .1
                .push((i, d));
        }
        let writes: Vec<_> = by_table
            .values()
            .map(|(destination, items)| self.write(destination, items.clone()))
            .collect();
        let mut results: Vec<Result<(), DeliveryError>> = vec![Ok(()); batch.len()];
        for written in futures::future::join_all(writes).await {
            for (i, r) in written {
                results[i] = r;
            }
        }
        Ok(results)
    }

    async fn close(&self) {
        self.stop.cancel();
    }

    fn requests_made(&self) -> u64 {
        self.shared.requests.load(Ordering::Relaxed)
    }
}

impl Drop for BigQueryDriver {
    /// The merger ends with its driver, however the replicator stopped.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}
