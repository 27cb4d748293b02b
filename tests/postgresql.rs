//! The PostgreSQL driver against the real server `tests/run` starts.

use replicator_tests::*;
use serde_json::{Value, json};
use std::time::Duration;

fn ids(rows: &[Value]) -> Vec<&str> {
    rows.iter().map(|r| r["id"].as_str().unwrap()).collect()
}

#[tokio::test]
async fn every_resources_syntax() {
    let pg = Pg::connect("syntax").await;
    let config = format!(
        "replicators:\n{}{}{}",
        pg.replicator("list", "[users]", ""),
        pg.replicator("map", "{orders: order_rows, carts: {table: cart_rows, actions: [insert]}, tags: true, notes: {}}", ""),
        pg.replicator("multi", "{events: [events_a, {table: events_b, actions: [insert, update]}, {resource: events_c}]}", ""),
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("users", "u1", json!({"name": "Ana"})),
        insert("orders", "o1", json!({"total": 10.5})),
        insert("carts", "c1", json!({"items": [1, 2]})),
        update("carts", "c1", json!({"items": [1, 2, 3]})),
        insert("tags", "t1", json!({"label": "x"})),
        insert("notes", "n1", json!({"text": "hello"})),
        insert("events", "e1", json!({"kind": "click"})),
        delete("events", "e1"),
    ]))
    .await;
    for r in ["list", "map", "multi"] {
        host.drained(r).await;
    }
    assert_eq!(ids(&pg.rows("users").await), ["u1"]);
    assert_eq!(pg.rows("order_rows").await[0]["total"], 10.5);
    let carts = pg.rows("cart_rows").await;
    assert_eq!(
        carts[0]["items"],
        json!([1, 2]),
        "actions [insert] leaves out the update"
    );
    assert_eq!(ids(&pg.rows("tags").await), ["t1"]);
    assert_eq!(pg.rows("notes").await[0]["text"], "hello");
    assert!(pg.rows("events_a").await.is_empty(), "insert then delete");
    assert_eq!(
        pg.rows("events_b").await[0]["kind"],
        "click",
        "delete filtered out"
    );
    assert!(pg.rows("events_c").await.is_empty());
    let m = host.replicator("map").await;
    assert_eq!(m["skipped"], 1, "the filtered update counts as skipped");
}

#[tokio::test]
async fn a_new_field_adds_a_column_and_a_misfit_is_dead_lettered() {
    let pg = Pg::connect("evolve").await;
    let host = Host::start(&format!(
        "replicators:\n{}",
        pg.replicator("pg", "[users]", "      detectTimestamps: true\n")
    ))
    .await;
    host.send(insert(
        "users",
        "u1",
        json!({"name": "Ana", "active": true}),
    ))
    .await;
    host.drained("pg").await;
    // The export that died on a new column: we add it.
    host.send(json!([
        insert("users", "u2", json!({"name": "Bo", "age": 31, "tags": ["a"], "address": {"city": "Lisbon"}, "seenAt": "2026-11-23T10:00:00.000Z"})),
        insert("users", "u3", json!({"name": "Cy", "age": "thirty"})),
        update("users", "u3", json!({"name": "Cy", "age": 30})),
    ]))
    .await;
    let status = host.drained("pg").await;
    let cols = pg.columns("users").await;
    assert_eq!(cols["age"], "double precision");
    assert_eq!(cols["tags"], "jsonb");
    assert_eq!(cols["address"], "jsonb");
    assert_eq!(cols["active"], "boolean");
    assert_eq!(cols["seenAt"], "timestamp with time zone");
    assert_eq!(cols["_sequence"], "bigint");
    let rows = pg.rows("users").await;
    assert_eq!(ids(&rows), ["u1", "u2", "u3"]);
    assert_eq!(rows[1]["address"]["city"], "Lisbon");
    assert_eq!(rows[2]["age"], 30.0, "the key's later event went through");
    assert_eq!(status["deadLettered"], 1);
    let dl = host.dead_letters("replicator=pg").await;
    let err = dl[0]["error"].as_str().unwrap();
    assert!(
        err.contains("\"age\"") && err.contains("double precision"),
        "{err}"
    );
}

#[tokio::test]
async fn widen_mode_widens_the_column() {
    let pg = Pg::connect("widen").await;
    let host = Host::start(&format!(
        "replicators:\n{}",
        pg.replicator("pg", "[users]", "      schemaEvolution: widen\n")
    ))
    .await;
    host.send(insert("users", "u1", json!({"age": 31, "code": 7})))
        .await;
    host.drained("pg").await;
    host.send(json!([insert(
        "users",
        "u2",
        json!({"age": "thirty", "code": 9007199254740993u64})
    )]))
    .await;
    let status = host.drained("pg").await;
    assert_eq!(status["deadLettered"], 0);
    let cols = pg.columns("users").await;
    assert_eq!(cols["age"], "jsonb");
    assert_eq!(cols["code"], "numeric");
    let rows = pg.rows("users").await;
    assert_eq!(rows[0]["age"], 31);
    assert_eq!(rows[1]["age"], "thirty");
    assert_eq!(rows[1]["code"], json!(9007199254740993u64));
}

#[tokio::test]
async fn document_mode_soft_deletes_and_compliance_actions() {
    let pg = Pg::connect("doc").await;
    let config = format!(
        "replicators:\n{}{}",
        pg.replicator(
            "doc",
            "{users: users_doc}",
            "      mode: document\n      deleteMode: soft\n"
        ),
        pg.replicator(
            "audit",
            "{users: {table: users_audit, actions: [insert, update]}}",
            ""
        ),
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("users", "u1", json!({"name": "Ana", "nested": {"a": 1}})),
        insert("users", "u2", json!({"name": "Bo"})),
        delete("users", "u1"),
    ]))
    .await;
    host.drained("doc").await;
    host.drained("audit").await;
    let rows = pg.rows("users_doc").await;
    assert_eq!(ids(&rows), ["u1", "u2"]);
    assert_eq!(rows[0]["data"]["nested"]["a"], 1);
    assert!(
        rows[0]["_deleted_at"].is_string(),
        "soft delete keeps the row: {}",
        rows[0]
    );
    assert!(rows[1]["_deleted_at"].is_null());
    assert_eq!(
        ids(&pg.rows("users_audit").await),
        ["u1", "u2"],
        "insert+update only: the delete is not applied"
    );
}

#[tokio::test]
async fn an_older_event_never_overwrites_a_newer_row_and_replay_converges() {
    let pg = Pg::connect("guard").await;
    let host = Host::start(&format!(
        "replicators:\n{}",
        pg.replicator("pg", "[users]", "")
    ))
    .await;
    host.send(json!([
        insert("users", "u1", json!({"v": 1})),
        update("users", "u1", json!({"v": 2})),
        insert("users", "u2", json!({"v": 1})),
        delete("users", "u2"),
        insert("users", "u3", json!({"v": 1})),
    ]))
    .await;
    host.drained("pg").await;
    let before = pg.rows("users").await;
    assert_eq!(ids(&before), ["u1", "u3"]);
    assert_eq!(before[0]["v"], 2.0);
    assert_eq!(before[0]["_sequence"], 2);

    // Replaying everything redelivers old events; the guard keeps the newer state.
    let (code, out) = host
        .post("/v1/replicators/pg/replay", json!({"fromSequence": 1}))
        .await;
    assert_eq!(code, 200, "{out}");
    let st = host.drained("pg").await;
    assert!(st["delivered"].as_u64().unwrap() >= 10, "{st}");
    let after = pg.rows("users").await;
    let strip = |rows: &[Value]| -> Vec<Value> {
        rows.iter()
            .map(|r| {
                let mut r = r.clone();
                r.as_object_mut().unwrap().remove("_replicated_at");
                r
            })
            .collect()
    };
    assert_eq!(strip(&after), strip(&before));

    // Replaying from before the oldest kept event is refused with the reason.
    tokio::time::sleep(Duration::from_millis(1500)).await; // let pruning run
    let (code, out) = host
        .post("/v1/replicators/pg/replay", json!({"fromSequence": 1}))
        .await;
    assert_eq!(code, 409, "{out}");
    assert!(out["error"].as_str().unwrap().contains("journal.retention"));
}

#[tokio::test]
async fn retention_keeps_events_for_a_replay_by_time() {
    let pg = Pg::connect("retention").await;
    let host = Host::start_with(
        &format!("replicators:\n{}", pg.replicator("pg", "[users]", "")),
        "",
        "  retention: 1h\n",
    )
    .await;
    let t0 = chrono_now();
    host.send(json!([insert("users", "u1", json!({"v": 1}))]))
        .await;
    host.drained("pg").await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pg.client
        .batch_execute(&format!("DELETE FROM {}.users", pg.schema))
        .await
        .unwrap();
    let (code, out) = host
        .post("/v1/replicators/pg/replay", json!({"fromTime": t0}))
        .await;
    assert_eq!(code, 200, "{out}");
    host.drained("pg").await;
    eventually(Duration::from_secs(10), "the replayed row", || async {
        (!pg.rows("users").await.is_empty()).then_some(())
    })
    .await;
}

fn chrono_now() -> String {
    (chrono::Utc::now() - chrono::Duration::seconds(1)).to_rfc3339()
}
#[tokio::test]
async fn passwords_stay_out_of_errors_status_and_logs() {
    // Nothing listens on this port: the replicator waits, reporting a redacted error.
    let port = free_port();
    let config = format!(
        "replicators:\n  - id: pg\n    driver: postgresql\n    resources: [users]\n    config:\n      connectionString: postgres://app:s3cretpw@127.0.0.1:{port}/db\n"
    );
    let host = Host::start(&config).await;
    host.send(insert("users", "u1", json!({}))).await;
    let st = eventually(Duration::from_secs(10), "a failing state", || async {
        let r = host.replicator("pg").await;
        (r["state"] == "failing").then_some(r)
    })
    .await;
    assert!(
        st["lastError"].as_str().unwrap().contains("cannot connect"),
        "{st}"
    );
    assert_eq!(
        host.get("/v1/dlq").await["deadLetters"]
            .as_array()
            .unwrap()
            .len(),
        0,
        "an outage is not a dead letter"
    );
    let ready = host.http.get(host.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 503);
    assert!(!host.log().contains("s3cretpw"));
    assert!(!st.to_string().contains("s3cretpw"));
}

#[tokio::test]
async fn tls_when_the_url_asks_for_it_verified_against_a_private_ca() {
    let pg = Pg::connect("tls").await;
    let ca = std::env::var("PG_TLS_CA").expect("tests/servers/postgres.sh exports PG_TLS_CA");
    let tls_url = format!("{}?sslmode=require&application_name=replicator-tls", pg.url);
    let config = format!(
        "replicators:\n  - id: tls\n    driver: postgresql\n    resources: [users]\n    config:\n      connectionString: \"{tls_url}\"\n      schema: {}\n      caCertificate: {ca}\n\
         \x20 - id: untrusted\n    driver: postgresql\n    resources: [users]\n    config:\n      connectionString: \"{tls_url}\"\n      schema: {}\n",
        pg.schema, pg.schema
    );
    let host = Host::start(&config).await;
    host.send(insert("users", "u1", json!({"name": "Ana"})))
        .await;
    host.drained("tls").await;
    assert_eq!(ids(&pg.rows("users").await), ["u1"]);
    let encrypted: i64 = pg
        .client
        .query_one(
            "SELECT count(*) FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid) WHERE s.ssl AND a.application_name = 'replicator-tls'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(encrypted >= 1, "the host's connections use TLS");
    // Without the CA the certificate is refused: an outage with a clear reason, never plain text.
    let st = eventually(
        Duration::from_secs(10),
        "the untrusted replicator to fail",
        || async {
            let r = host.replicator("untrusted").await;
            (r["state"] == "failing").then_some(r)
        },
    )
    .await;
    assert!(
        st["lastError"]
            .as_str()
            .unwrap()
            .to_lowercase()
            .contains("certificate"),
        "{st}"
    );
}
