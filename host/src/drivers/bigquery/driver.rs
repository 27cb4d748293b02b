//! Writes batches with insertAll (one request per table per batch, `insertId` = the
//! idempotency key), keeps tables, columns and `_current` views in step with the data, and for
//! `mutable` tables merges the staged changes on an interval and a row threshold.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use gcp_bigquery_client::model::clustering::Clustering;
use gcp_bigquery_client::model::dataset::Dataset;
use gcp_bigquery_client::model::table::Table;
use gcp_bigquery_client::model::table_data_insert_all_request::TableDataInsertAllRequest;
use gcp_bigquery_client::model::table_data_insert_all_request_rows::TableDataInsertAllRequestRows;
use gcp_bigquery_client::model::table_field_schema::TableFieldSchema;
use gcp_bigquery_client::model::table_schema::TableSchema;
use serde_json::{Map, Value};
use tokio::sync::{Mutex, Notify, OnceCell};
use tokio_util::sync::CancellationToken;

use super::client::{self, Api};
use super::config::{BigQueryConfig, Destination, Mutability};
use super::schema::{self, ColumnType};
use crate::delivery::{BackgroundReport, DeliveryPolicy, Route, for_outage};
use crate::drivers::util::payload::idempotency_key;
use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver};

/// A table's columns, name -> type.
type Columns = BTreeMap<String, ColumnType>;

/// What the driver and its merger share.
struct Shared {
    config: BigQueryConfig,
    api: OnceCell<Api>,
    /// Columns of every table seen, by table name; held while a table's schema changes.
    tables: Mutex<HashMap<String, Columns>>,
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

/// One record as a row, or why it cannot be one.
struct Row {
    index: usize,
    fields: Map<String, Value>,
}

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
                tables: Mutex::new(HashMap::new()),
                requests: Arc::new(AtomicU64::new(0)),
                pending: std::sync::Mutex::new(HashMap::new()),
                staged: Notify::new(),
            }),
            destinations,
            report,
            stop: CancellationToken::new(),
        }
    }

    fn destination(&self, route: &Route) -> Destination {
        self.destinations
            .get(&(route.resource.clone(), route.destination.clone()))
            .cloned()
            .unwrap_or_else(|| self.shared.config.destination(route))
    }

    /// Writes the deliveries of one destination table.
    async fn write(
        &self,
        destination: &Destination,
        items: Vec<(usize, &Delivery)>,
    ) -> Vec<(usize, Result<(), DeliveryError>)> {
        let s = &self.shared;
        let mut results = Vec::new();
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
        let mut rows = Vec::new();
        for (index, d) in &items {
            match row(d, destination.mutability, mutable) {
                Ok(fields) => rows.push(Row {
                    index: *index,
                    fields,
                }),
                Err(e) => results.push((*index, Err(e))),
            }
        }
        let columns = match s.ensure_columns(api, destination, &table, &rows).await {
            Ok(c) => c,
            Err(e) => {
                results.extend(rows.iter().map(|r| (r.index, Err(e.clone()))));
                return results;
            }
        };
        let shown = schema::table_sql(&s.config.project_id, &s.config.dataset_id, &table);
        let mut request = TableDataInsertAllRequest::new();
        request.skip_invalid_rows();
        let mut sent = Vec::new();
        for r in rows {
            let d = items
                .iter()
                .find(|(i, _)| *i == r.index)
                .expect("a row comes from an item")
                .1;
            if let Some(problem) = mismatch(&r.fields, &columns, &shown) {
                results.push((r.index, Err(DeliveryError::permanent(problem))));
                continue;
            }
            let json: Map<String, Value> = r
                .fields
                .iter()
                .map(|(k, v)| {
                    let column = columns.get(k).unwrap_or(&ColumnType::Other);
                    (k.clone(), schema::cell(column, v))
                })
                .collect();
            request
                .add_rows(vec![TableDataInsertAllRequestRows {
                    insert_id: Some(idempotency_key(d)),
                    json: Value::Object(json),
                }])
                .expect("rows serialize");
            sent.push(r.index);
        }
        if sent.is_empty() {
            return results;
        }
        api.count();
        let answer = api
            .client
            .tabledata()
            .insert_all(&s.config.project_id, &s.config.dataset_id, &table, request)
            .await;
        match answer {
            Err(e) => {
                let error = client::error(&format!("insertAll {shown}"), &e);
                results.extend(sent.iter().map(|i| (*i, Err(error.clone()))));
            }
            Ok(answer) => {
                let mut refused: HashMap<usize, DeliveryError> = HashMap::new();
                for e in answer.insert_errors.unwrap_or_default() {
                    let (Some(position), Some(first)) =
                        (e.index, e.errors.as_ref().and_then(|x| x.first()))
                    else {
                        continue;
                    };
                    if let Some(index) = sent.get(position as usize) {
                        refused.insert(
                            *index,
                            client::proto_error(&format!("{shown} refused the row"), first),
                        );
                    }
                }
                let accepted = sent.len() - refused.len();
                for index in sent {
                    results.push((index, refused.remove(&index).map_or(Ok(()), Err)));
                }
                if mutable && accepted > 0 {
                    s.staged(&destination.table, accepted as u64);
                }
            }
        }
        results
    }
}

/// The row of one delivery: the record's fields (its `before` for a delete), `id`, and the
/// host's columns.
fn row(
    d: &Delivery,
    mutability: Mutability,
    staging: bool,
) -> Result<Map<String, Value>, DeliveryError> {
    let e = &d.event.event;
    let document = match e.action {
        crate::event::Action::Delete => e.before.as_ref(),
        _ => e.data.as_ref(),
    };
    let mut fields = Map::new();
    fields.insert("id".into(), Value::String(e.id.clone()));
    let meta = schema::meta_columns(mutability, staging);
    if let Some(Value::Object(doc)) = document {
        for (k, v) in doc {
            if k == "id" {
                continue;
            }
            if !schema::column_name_ok(k) || meta.iter().any(|(m, _)| m == k) {
                return Err(DeliveryError::permanent(format!(
                    "field \"{k}\" cannot be a BigQuery column (letters, digits and '_', not \
                     starting with a digit, and not one of the host's columns); rename it \
                     with a transform"
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
                api.client
                    .dataset()
                    .create(Dataset::new(&c.project_id, &c.dataset_id).location(&c.location))
                    .await
                    .map(|_| ())
                    .or_else(|e| if is_duplicate(&e) { Ok(()) } else { Err(e) })
                    .map_err(|e| client::error(&format!("create dataset {}", c.dataset_id), &e))
            }
            Err(e) => Err(client::error(&format!("dataset {}", c.dataset_id), &e)),
        }
    }

    /// The table's columns: read once, or the table created with `id` and the host's columns.
    async fn table_columns(
        &self,
        api: &Api,
        tables: &mut HashMap<String, Columns>,
        table: &str,
        host_columns: &[(&str, ColumnType)],
        destination: &Destination,
        with_options: bool,
    ) -> Result<(), DeliveryError> {
        if tables.contains_key(table) {
            return Ok(());
        }
        let c = &self.config;
        let shown = self.table_sql(table);
        api.count();
        let columns = match api
            .client
            .table()
            .get(&c.project_id, &c.dataset_id, table, None)
            .await
        {
            Ok(t) => t
                .schema
                .fields
                .unwrap_or_default()
                .iter()
                .map(|f| (f.name.clone(), ColumnType::from_field(&f.r#type)))
                .collect(),
            Err(e) if is_not_found(&e) => {
                if !c.create_tables {
                    return Err(DeliveryError::unavailable(format!(
                        "table {shown} does not exist and schemaSync creates none (create it, or set autoCreateTable)"
                    )));
                }
                let mut columns = Columns::new();
                columns.insert("id".into(), ColumnType::String);
                for (name, t) in host_columns {
                    columns.insert(name.to_string(), t.clone());
                }
                let fields = columns
                    .iter()
                    .map(|(n, t)| TableFieldSchema::new(n, t.field_type()))
                    .collect();
                let mut definition = Table::new(
                    &c.project_id,
                    &c.dataset_id,
                    table,
                    TableSchema::new(fields),
                );
                if with_options {
                    let o = &destination.table_options;
                    if let Some(p) = o
                        .time_partitioning
                        .clone()
                        .and_then(|p| serde_json::from_value(p).ok())
                    {
                        definition = definition.time_partitioning(p);
                    }
                    if !o.clustering.is_empty() {
                        definition = definition.clustering(Clustering {
                            fields: Some(o.clustering.clone()),
                        });
                    }
                }
                api.count();
                match api.client.table().create(definition).await {
                    Ok(_) => {}
                    Err(e) if is_duplicate(&e) => {}
                    Err(e) => return Err(client::error(&format!("create table {shown}"), &e)),
                }
                columns
            }
            Err(e) => return Err(client::error(&format!("table {shown}"), &e)),
        };
        tables.insert(table.to_string(), columns);
        Ok(())
    }

    /// Adds a NULLABLE column. Both the DDL and the schema patch: BigQuery takes either, the
    /// emulator needs both.
    async fn add_column(
        &self,
        api: &Api,
        tables: &mut HashMap<String, Columns>,
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
        if !fields.iter().any(|f| f.name == name) {
            fields.push(TableFieldSchema::new(name, column.field_type()));
            api.count();
            api.client
                .table()
                .patch(&c.project_id, &c.dataset_id, table, current)
                .await
                .map_err(|e| client::error(&format!("add column {name} to {shown}"), &e))?;
        }
        if let Some(columns) = tables.get_mut(table) {
            columns.insert(name.to_string(), column.clone());
        }
        Ok(())
    }

    /// Makes the tables of a destination hold every field of `rows`; returns the columns of
    /// the table written (`table`).
    async fn ensure_columns(
        &self,
        api: &Api,
        destination: &Destination,
        table: &str,
        rows: &[Row],
    ) -> Result<Columns, DeliveryError> {
        let mut tables = self.tables.lock().await;
        let mutable = destination.mutability == Mutability::Mutable;
        let fresh = !tables.contains_key(table);
        self.table_columns(
            api,
            &mut tables,
            table,
            &schema::meta_columns(destination.mutability, mutable),
            destination,
            !mutable,
        )
        .await?;
        if mutable {
            self.table_columns(
                api,
                &mut tables,
                &destination.table,
                &schema::meta_columns(Mutability::AppendOnly, false),
                destination,
                true,
            )
            .await?;
        }
        let mut missing: BTreeMap<String, ColumnType> = BTreeMap::new();
        for r in rows {
            for (k, v) in &r.fields {
                if !tables[table].contains_key(k)
                    && !missing.contains_key(k)
                    && let Some(t) = schema::infer(v, self.config.detect_timestamps)
                {
                    missing.insert(k.clone(), t);
                }
            }
        }
        if !missing.is_empty() && !self.config.create_columns {
            let names: Vec<&String> = missing.keys().collect();
            return Err(DeliveryError::permanent(format!(
                "{} has no column {names:?} and schemaSync adds none (autoCreateColumns is false)",
                self.table_sql(table)
            )));
        }
        for (name, column) in &missing {
            self.add_column(api, &mut tables, table, name, column)
                .await?;
            if mutable && !tables[&destination.table].contains_key(name) {
                self.add_column(api, &mut tables, &destination.table, name, column)
                    .await?;
            }
        }
        if !mutable && (fresh || !missing.is_empty()) {
            let view = self.table_sql(&format!("{}_current", destination.table));
            api.query(&format!(
                "CREATE OR REPLACE VIEW {view} AS {}",
                schema::current_view(&self.table_sql(table), destination.mutability)
            ))
            .await?;
        }
        Ok(tables[table].clone())
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
                p.rows >= self.config.merge_rows
                    || p.rows > 0 && p.since.elapsed() >= self.config.merge_interval
            })
            .map(|(t, _)| t.clone())
            .collect()
    }

    /// Merges one target's staged changes, and now and then prunes the staging table.
    async fn merge(
        &self,
        target: &str,
        last_prune: &mut HashMap<String, Instant>,
    ) -> Result<(), DeliveryError> {
        let api = self.api().await?;
        let staging = format!("{target}_changes");
        let taken = self.pending.lock().expect("not poisoned").remove(target);
        let data_columns: Vec<String> = {
            let tables = self.tables.lock().await;
            match tables.get(&staging) {
                Some(columns) => columns
                    .keys()
                    .filter(|k| *k != "id" && !k.starts_with('_'))
                    .cloned()
                    .collect(),
                // Nothing was staged by this process: the tables are read on the next batch.
                None if taken.is_none_or(|p| p.rows == 0) => return Ok(()),
                None => Vec::new(),
            }
        };
        let result = api
            .query(&schema::merge(
                &self.table_sql(target),
                &self.table_sql(&staging),
                &data_columns,
            ))
            .await;
        if let Err(e) = result {
            // Still to merge: put the rows back.
            if let Some(p) = taken {
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
            return Err(DeliveryError::new(
                e.kind,
                format!("MERGE into {}: {}", self.table_sql(target), e.message),
            ));
        }
        let retention = self.config.staging_retention;
        let prune_every = retention.min(Duration::from_secs(3600));
        if last_prune
            .get(target)
            .is_none_or(|t| t.elapsed() >= prune_every)
        {
            api.query(&schema::prune_staging(
                &self.table_sql(&staging),
                retention.as_secs(),
            ))
            .await?;
            last_prune.insert(target.to_string(), Instant::now());
        }
        Ok(())
    }
}

/// Merges `mutable` targets when due; failures are retried with backoff and reported.
async fn merger(
    shared: Arc<Shared>,
    report: Arc<dyn BackgroundReport>,
    stop: CancellationToken,
    policy: DeliveryPolicy,
) {
    let mut last_prune = HashMap::new();
    let mut failing = false;
    let mut backoff = for_outage(&policy);
    loop {
        let tick = shared.config.merge_interval.min(Duration::from_millis(500));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(tick) => {}
            () = shared.staged.notified() => {}
        }
        for target in shared.due() {
            match shared.merge(&target, &mut last_prune).await {
                Ok(()) => {
                    if failing {
                        report.recovered();
                        failing = false;
                        backoff = for_outage(&policy);
                    }
                }
                Err(e) => {
                    tracing::warn!(table = %target, error = %e.message, "MERGE failed; retrying");
                    report.failed(&e.message);
                    failing = true;
                    let wait = backoff.next().unwrap_or(policy.max_retry_delay);
                    tokio::select! {
                        () = stop.cancelled() => return,
                        () = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

fn is_not_found(e: &gcp_bigquery_client::error::BQError) -> bool {
    matches!(e, gcp_bigquery_client::error::BQError::ResponseError { error } if error.error.code == 404)
}

fn is_duplicate(e: &gcp_bigquery_client::error::BQError) -> bool {
    matches!(e, gcp_bigquery_client::error::BQError::ResponseError { error } if error.error.code == 409)
}

#[async_trait::async_trait]
impl Driver for BigQueryDriver {
    /// Authenticates, makes sure the dataset exists, and marks every `mutable` target for a
    /// merge (changes staged before a restart are merged without waiting for new ones).
    async fn init(&self) -> Result<(), DeliveryError> {
        let s = &self.shared;
        let api = s.api().await?;
        s.ensure_dataset(api).await?;
        let mut pending = s.pending.lock().expect("not poisoned");
        for d in self.destinations.values() {
            if d.mutability == Mutability::Mutable {
                pending.entry(d.table.clone()).or_insert(Pending {
                    rows: 1,
                    since: Instant::now() - s.config.merge_interval,
                });
            }
        }
        Ok(())
    }

    async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
        let mut by_table: BTreeMap<String, (Destination, Vec<(usize, &Delivery)>)> =
            BTreeMap::new();
        for (i, d) in batch.iter().enumerate() {
            let destination = self.destination(&d.route);
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

impl BigQueryDriver {
    /// Starts the merger when a route is `mutable`.
    pub fn start_merger(&self, policy: &DeliveryPolicy) {
        if self
            .destinations
            .values()
            .any(|d| d.mutability == Mutability::Mutable)
        {
            tokio::spawn(merger(
                self.shared.clone(),
                self.report.clone(),
                self.stop.clone(),
                policy.clone(),
            ));
        }
    }
}
