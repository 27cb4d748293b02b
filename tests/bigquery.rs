//! The bigquery driver against the BigQuery emulator (bqemulator on 127.0.0.1): every mode with
//! inserts, updates and deletes; replays (`replicator replay` and kill -9 during a stream) that
//! leave the `mutable` table and the `_current` views exactly at the expected state per key; a
//! new field; a row BigQuery refuses; a table the host did not create.

use replicator_tests::bigquery::{Bq, Row};
use replicator_tests::load::{Plan, through_crashes};
use replicator_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

/// A bigquery replicator `id` with `resources`, into `dataset`, plus extra config lines.
fn bq_replicator(bq: &Bq, id: &str, dataset: &str, resources: &str, extra: &str) -> String {
    format!(
        "  - id: {id}\n    driver: bigquery\n    resources: {resources}\n    retryDelay: 50\n    config:\n      projectId: {}\n      datasetId: {dataset}\n      endpoint: {}\n      mergeInterval: 200\n{extra}",
        bq.project, bq.base
    )
}

/// `id -> n` of the rows of `sql` (a table or view with columns `id` and `n`).
async fn state(bq: &Bq, sql: &str) -> BTreeMap<String, i64> {
    bq.query(sql)
        .await
        .iter()
        .map(|r: &Row| {
            (
                r["id"].as_str().unwrap().to_string(),
                r["n"]
                    .as_str()
                    .map_or(-1, |n| n.parse::<f64>().unwrap() as i64),
            )
        })
        .collect()
}

/// Waits until `sql` shows `expected` (a merge runs every 200 ms).
async fn converges(bq: &Bq, sql: &str, expected: &BTreeMap<String, i64>) {
    let mut last = BTreeMap::new();
    let start = std::time::Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        last = state(bq, sql).await;
        if &last == expected {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("{sql} never reached the expected state:\nexpected {expected:?}\nfound    {last:?}");
}

fn changes() -> Vec<Value> {
    vec![
        insert("users", "u1", json!({"n": 1, "name": "Ana"})),
        update("users", "u1", json!({"n": 2, "name": "Ana"})),
        insert("users", "u2", json!({"n": 1})),
        json!({"resource": "users", "action": "delete", "id": "u2", "before": {"id": "u2", "n": 1}}),
        insert("users", "u3", json!({"n": 5})),
        update("users", "u3", json!({"n": 6, "tags": ["a", "b"]})),
    ]
}

fn expected() -> BTreeMap<String, i64> {
    [("u1".to_string(), 2), ("u3".to_string(), 6)].into()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changelogs_keep_every_change_and_current_views_fold_replays() {
    let bq = Bq::connect();
    let dataset = Bq::unique_dataset("changelog");
    let config = format!(
        "replicators:\n{}",
        bq_replicator(
            &bq,
            "bq",
            &dataset,
            "{users: [users_log, {table: users_versions, mutability: immutable}]}",
            ""
        )
    );
    let host = Host::start_with(&config, "", "  retention: 1h\n").await;
    host.send(json!(changes())).await;
    host.drained("bq").await;

    let table = |t: &str| format!("`{}.{dataset}.{t}`", bq.project);
    let log = bq
        .query(&format!(
            "SELECT id, _operation_type, _sequence, tags FROM {} ORDER BY _sequence",
            table("users_log")
        ))
        .await;
    let kinds: Vec<&str> = log
        .iter()
        .map(|r| r["_operation_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        ["insert", "update", "insert", "delete", "insert", "update"]
    );
    assert_eq!(
        log[5]["tags"], "[\"a\",\"b\"]",
        "a new field became a JSON column"
    );
    let deleted = bq
        .query(&format!(
            "SELECT _is_deleted FROM {} WHERE id = 'u2' ORDER BY _sequence",
            table("users_versions")
        ))
        .await;
    assert_eq!(deleted.len(), 2);
    assert_eq!(deleted[1]["_is_deleted"], "true");

    for view in ["users_log_current", "users_versions_current"] {
        assert_eq!(
            state(&bq, &format!("SELECT id, n FROM {}", table(view))).await,
            expected()
        );
    }

    // A replay writes every change again; the views still show each key once, as it is.
    let (code, out) = host
        .post("/v1/replicators/bq/replay", json!({"fromSequence": 1}))
        .await;
    assert_eq!(code, 200, "{out}");
    host.drained("bq").await;
    let count = bq
        .query(&format!("SELECT COUNT(*) AS c FROM {}", table("users_log")))
        .await;
    assert_eq!(count[0]["c"], "12", "the emulator keeps duplicate rows");
    for view in ["users_log_current", "users_versions_current"] {
        assert_eq!(
            state(&bq, &format!("SELECT id, n FROM {}", table(view))).await,
            expected()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mutable_table_holds_exactly_the_current_rows_through_replays() {
    let bq = Bq::connect();
    let dataset = Bq::unique_dataset("mutable");
    let config = format!(
        "replicators:\n{}",
        bq_replicator(
            &bq,
            "bq",
            &dataset,
            "{users: {table: users, mutability: mutable}}",
            "      stagingRetention: 0s\n"
        )
    );
    let host = Host::start_with(&config, "", "  retention: 1h\n").await;
    host.send(json!(changes())).await;
    host.drained("bq").await;
    let target = format!("`{}.{dataset}.users`", bq.project);
    let current = format!("SELECT id, n FROM {target}");
    converges(&bq, &current, &expected()).await;
    let rows = bq
        .query(&format!(
            "SELECT id, name, _sequence FROM {target} ORDER BY id"
        ))
        .await;
    assert_eq!(rows[0]["name"], "Ana");
    assert_eq!(rows[0]["_sequence"], "2");

    // Replaying everything stages old changes again: the guard keeps the newer rows, and
    // the delete of u2 keeps it deleted.
    let (code, out) = host
        .post("/v1/replicators/bq/replay", json!({"fromSequence": 1}))
        .await;
    assert_eq!(code, 200, "{out}");
    host.drained("bq").await;
    tokio::time::sleep(Duration::from_millis(1000)).await; // at least one merge
    converges(&bq, &current, &expected()).await;

    // Superseded staged rows are pruned (retention 0 s here): only the latest change of each
    // id stays (and its replayed copy), deletes included.
    let staged = bq
        .query(&format!(
            "SELECT id, COUNT(DISTINCT _sequence) AS c, MAX(_operation_type) AS op FROM `{}.{dataset}.users_changes` GROUP BY id ORDER BY id",
            bq.project
        ))
        .await;
    assert_eq!(staged.len(), 3, "{staged:?}");
    assert!(
        staged.iter().all(|r| r["c"] == "1"),
        "staging keeps the latest change per id once pruned: {staged:?}"
    );
    assert_eq!(staged[1]["op"], "delete", "{staged:?}");
    let status = host.replicator("bq").await;
    assert_eq!(status["state"], "running", "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_merge_shows_in_status_and_metrics_until_it_recovers() {
    let bq = Bq::connect();
    let dataset = Bq::unique_dataset("merge_fails");
    let config = format!(
        "replicators:\n{}",
        bq_replicator(
            &bq,
            "bq",
            &dataset,
            "{users: {table: users, mutability: mutable}}",
            ""
        )
    );
    let host = Host::start(&config).await;
    host.send(json!(changes())).await;
    host.drained("bq").await;
    let target = format!("`{}.{dataset}.users`", bq.project);
    let current = format!("SELECT id, n FROM {target}");
    converges(&bq, &current, &expected()).await;

    // The target disappears: staging still takes the change, the MERGE cannot run.
    let path = format!("/datasets/{dataset}/tables/users");
    let definition = bq.get(&path).await;
    bq.delete(&path).await;
    host.send(json!([update(
        "users",
        "u1",
        json!({"n": 3, "name": "Ana"})
    )]))
    .await;
    let status = eventually(
        Duration::from_secs(20),
        "the failing MERGE in the status",
        || async {
            let r = host.replicator("bq").await;
            (r["state"] == "failing").then_some(r)
        },
    )
    .await;
    let error = status["lastError"].as_str().unwrap();
    assert!(
        error.contains("MERGE into") && error.contains("users"),
        "{status}"
    );
    let metrics = host.metrics().await;
    assert!(
        !metrics.contains("replicator_events_failed_total{replicator=\"bq\"} 0"),
        "{metrics}"
    );

    // Someone recreates it: the next MERGE fills it from staging, and the state clears.
    bq.create(
        &format!("/datasets/{dataset}/tables"),
        json!({"tableReference": definition["tableReference"], "schema": definition["schema"]}),
    )
    .await;
    let mut now = expected();
    now.insert("u1".into(), 3);
    converges(&bq, &current, &now).await;
    eventually(Duration::from_secs(10), "the state to clear", || async {
        (host.replicator("bq").await["state"] == "running").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kill_9_during_a_stream_leaves_every_table_at_the_last_state() {
    let bq = Bq::connect();
    let dataset = Bq::unique_dataset("crash");
    let config = format!(
        "replicators:\n{}",
        bq_replicator(
            &bq,
            "bq",
            &dataset,
            "{items: [{table: items, mutability: mutable}, items_log]}",
            ""
        )
    );
    let mut host = Host::start(&config).await;
    let plan = Plan {
        base: host.url(""),
        resource: "items",
        index: 0,
        keys: 10,
        batch: 10,
        pause: Duration::from_millis(100),
    };
    let ledger = through_crashes(&mut host, plan, 2, 3, Duration::from_millis(500)).await;
    host.drained("bq").await;
    let expected: BTreeMap<String, i64> = ledger
        .last
        .iter()
        .filter(|(_, e)| e["action"] == "update")
        .map(|(k, e)| (k.clone(), e["data"]["n"].as_i64().unwrap()))
        .collect();
    assert!(expected.len() >= 5, "{expected:?}");
    converges(
        &bq,
        &format!("SELECT id, n FROM `{}.{dataset}.items`", bq.project),
        &expected,
    )
    .await;
    converges(
        &bq,
        &format!(
            "SELECT id, n FROM `{}.{dataset}.items_log_current`",
            bq.project
        ),
        &expected,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rows_that_do_not_fit_are_dead_lettered_with_the_reason() {
    let bq = Bq::connect();
    let dataset = Bq::unique_dataset("refused");
    // A table made by someone else: an INT64 and a DATE column the host would never create.
    bq.create(
        "/datasets",
        json!({"datasetReference": {"projectId": bq.project, "datasetId": dataset}}),
    )
    .await;
    bq.create(
        &format!("/datasets/{dataset}/tables"),
        json!({
            "tableReference": {"projectId": bq.project, "datasetId": dataset, "tableId": "events"},
            "schema": {"fields": [
                {"name": "id", "type": "STRING"},
                {"name": "qty", "type": "INT64"},
                {"name": "day", "type": "DATE"},
                {"name": "_sequence", "type": "INT64"},
                {"name": "_operation_type", "type": "STRING"},
                {"name": "_operation_timestamp", "type": "TIMESTAMP"}
            ]}
        }),
    )
    .await;
    let config = format!(
        "replicators:\n{}",
        bq_replicator(&bq, "bq", &dataset, "[events]", "")
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("events", "ok", json!({"qty": 3, "day": "2026-12-02"})),
        insert("events", "fraction", json!({"qty": 3.5})),
        insert("events", "bad-day", json!({"day": "someday"})),
        insert("events", "bad-name", json!({"first-name": "x"})),
        insert("events", "new-field", json!({"qty": 1, "note": "hi"})),
    ]))
    .await;
    host.drained("bq").await;
    let reasons = host.dead_letter_reasons("replicator=bq").await;
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(
        reasons["fraction"].contains("does not fit column qty INT64"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-day"].contains("refused the row"),
        "{reasons:?}"
    );
    assert!(
        reasons["bad-name"].contains("cannot be a BigQuery column"),
        "{reasons:?}"
    );
    let rows = bq
        .query(&format!(
            "SELECT id, qty, note FROM `{}.{dataset}.events` ORDER BY id",
            bq.project
        ))
        .await;
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["new-field", "ok"]);
    assert_eq!(rows[0]["note"], "hi");
    assert_eq!(rows[1]["qty"], "3");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_mismatch_widen_turns_an_int64_column_into_float64() {
    let bq = Bq::connect();
    let dataset = Bq::unique_dataset("widen");
    bq.create(
        "/datasets",
        json!({"datasetReference": {"projectId": bq.project, "datasetId": dataset}}),
    )
    .await;
    bq.create(
        &format!("/datasets/{dataset}/tables"),
        json!({
            "tableReference": {"projectId": bq.project, "datasetId": dataset, "tableId": "events"},
            "schema": {"fields": [{"name": "id", "type": "STRING"}, {"name": "qty", "type": "INT64"}]}
        }),
    )
    .await;
    let config = format!(
        "replicators:\n{}",
        bq_replicator(
            &bq,
            "bq",
            &dataset,
            "[events]",
            "      schemaSync: {onMismatch: widen}\n"
        )
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("events", "a", json!({"qty": 3})),
        insert("events", "b", json!({"qty": 3.5})),
    ]))
    .await;
    host.drained("bq").await;
    let dead = host.dead_letter_reasons("").await;
    assert!(dead.is_empty(), "{dead:?}");
    let table = bq.get(&format!("/datasets/{dataset}/tables/events")).await;
    let qty = table["schema"]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "qty")
        .unwrap()
        .clone();
    assert_eq!(qty["type"], "FLOAT64", "{table}");
    let rows = bq
        .query(&format!(
            "SELECT id, qty FROM `{}.{dataset}.events` ORDER BY id",
            bq.project
        ))
        .await;
    let qty: Vec<f64> = rows
        .iter()
        .map(|r| r["qty"].as_str().unwrap().parse().unwrap())
        .collect();
    assert_eq!(qty, [3.0, 3.5]);
}
