//! The s3db driver and backfill against the real s3db.js 21.6.2 (tests/js) and a real
//! S3-compatible server (tests/s3-server), and through `file://`.

use replicator_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

/// Every attribute type the host encodes, nested objects and a partition, made by s3db.js.
fn people_definition() -> Value {
    json!({"op": "createResource", "name": "people", "behavior": "body-overflow",
        "attributes": {
            "name": "string", "bio": "string|optional", "age": "number|optional", "count": "number|integer|optional",
            "active": "boolean|optional", "tags": "array|items:string|optional", "ratings": "array|items:number|optional",
            "profile": "json|optional", "address": {"city": "string|optional", "zip": "string|optional"},
            "birthday": "dateonly|optional", "seenAt": "datetime|optional", "region": "string|optional"
        },
        "partitions": {"byRegion": {"fields": {"region": "string"}}}})
}

fn wide_definition() -> Value {
    let attributes: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("f{i:02}"), json!("string|optional")))
        .collect();
    json!({"op": "createResource", "name": "wide", "attributes": attributes})
}

fn p1(age: Value, region: &str) -> Value {
    json!({"name": "Ana 日本 🎉 héllo", "bio": format!("{}x", "é".repeat(1200)), "age": age, "count": 7, "active": true,
        "tags": ["a|b", "c\\d", ""], "ratings": [1.5, 2], "profile": {"k": [1, {"n": null}], "s": "text"},
        "address": {"city": "Lisboa", "zip": "1000-001"}, "birthday": "1990-05-17",
        "seenAt": "2026-11-23T10:00:00.000Z", "region": region})
}

fn with_id(mut data: Value, id: &str) -> Value {
    data["id"] = json!(id);
    data
}

fn by_id(records: &Value) -> BTreeMap<String, Value> {
    records
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap().to_string(), without_internal(r)))
        .collect()
}

async fn host_writes_what_s3db_js_reads(target: S3dbTarget) {
    let created = target.js(json!([people_definition(), wide_definition()]));
    assert!(created.iter().all(|r| r["ok"] == true), "{created:?}");
    let config = format!(
        "replicators:\n  - id: copy\n    driver: s3db\n    resources:\n      people: people\n      wide: true\n      things: [stuff, {{resource: stuff_inserts, actions: [insert]}}]\n    config:\n      connectionString: \"{}\"\n",
        target.conn
    );
    // Retention keeps delivered events, so the replay below can redeliver them.
    let host = Host::start_with(&config, "", "  retention: 1h").await;
    let wide: serde_json::Map<String, Value> = (0..40)
        .map(|i| (format!("f{i:02}"), json!(format!("v{i:02}"))))
        .collect();
    let thing = json!({"label": "x", "n": 3, "ok": false, "list": ["a", "b"], "nums": [1, 2.5], "obj": {"a": 1}, "mixed": [1, "a"]});
    host.send(json!([
        insert("people", "p1", p1(json!(31.5), "eu")),
        insert("people", "p2", json!({"name": "Bo", "region": "eu"})),
        insert("wide", "w1", Value::Object(wide.clone())),
        insert("things", "t1", thing.clone()),
    ]))
    .await;
    host.send(json!([
        {"resource": "people", "action": "update", "id": "p1", "data": with_id(p1(json!(32), "us"), "p1"), "before": with_id(p1(json!(31.5), "eu"), "p1")},
        {"resource": "people", "action": "delete", "id": "p2", "data": {"id": "p2", "name": "Bo", "region": "eu"}},
        update("things", "t1", json!({"label": "x", "n": 4})),
    ]))
    .await;
    host.drained("copy").await;

    let read = target.js(json!([
        {"op": "list", "resource": "people"},
        {"op": "get", "resource": "wide", "id": "w1"},
        {"op": "list", "resource": "stuff"},
        {"op": "list", "resource": "stuff_inserts"},
        {"op": "listIds", "resource": "people", "partition": "byRegion", "partitionValues": {"region": "us"}},
        {"op": "listIds", "resource": "people", "partition": "byRegion", "partitionValues": {"region": "eu"}},
    ]));
    // s3db.js writes the same record itself; it must read both identically. (It misreads its
    // own body-overflow records that have date fields: the overflowed field keeps its short key.)
    let twin = target.js(json!([
        {"op": "insert", "resource": "people", "data": with_id(p1(json!(32), "us"), "twin")},
        {"op": "get", "resource": "people", "id": "twin"},
        {"op": "delete", "resource": "people", "id": "twin"},
    ]));
    let mut twin_read = without_internal(&twin[1]);
    twin_read["id"] = json!("p1");
    assert_eq!(
        by_id(&read[0]),
        BTreeMap::from([("p1".to_string(), twin_read)]),
        "people, read by s3db.js as its own write"
    );
    let mut no_dates = p1(json!(32), "us");
    no_dates
        .as_object_mut()
        .unwrap()
        .retain(|k, _| k != "birthday" && k != "seenAt");
    host.send(json!([insert("people", "p3", no_dates.clone())]))
        .await;
    host.drained("copy").await;
    let p3 = target.js(json!([{"op": "get", "resource": "people", "id": "p3"}]));
    assert_eq!(
        without_internal(&p3[0]),
        with_id(no_dates, "p3"),
        "every type, unicode, over 2 KB: exactly the data"
    );
    assert_eq!(
        without_internal(&read[1]),
        with_id(Value::Object(wide), "w1"),
        "40 attributes (keys past base36 'z')"
    );
    assert_eq!(
        by_id(&read[2])["t1"],
        json!({"id": "t1", "label": "x", "n": 4}),
        "renamed, created by the host, updated"
    );
    assert_eq!(
        by_id(&read[3])["t1"],
        with_id(thing, "t1"),
        "second destination: inserts only, every inferred type"
    );
    assert_eq!(
        read[4],
        json!(["p1"]),
        "partition reference moved with the update"
    );
    assert_eq!(
        read[5],
        json!([]),
        "the delete removed p2's partition reference"
    );

    // A redelivery of everything (a replay) changes nothing.
    let read = target
        .js(json!([{"op": "list", "resource": "people"}, {"op": "list", "resource": "stuff"}]));
    let (code, out) = host
        .post("/v1/replicators/copy/replay", json!({"fromSequence": 1}))
        .await;
    assert_eq!(code, 200, "{out}");
    host.drained("copy").await;
    let again = target
        .js(json!([{"op": "list", "resource": "people"}, {"op": "list", "resource": "stuff"}]));
    assert_eq!(by_id(&again[0]), by_id(&read[0]));
    assert_eq!(by_id(&again[1]), by_id(&read[1]));
}

#[tokio::test]
async fn host_writes_what_s3db_js_reads_on_s3() {
    host_writes_what_s3db_js_reads(S3dbTarget::s3("host-writes")).await;
}

#[tokio::test]
async fn host_writes_what_s3db_js_reads_on_file() {
    host_writes_what_s3db_js_reads(S3dbTarget::file()).await;
}

fn run_backfill(
    host: &Host,
    source: &str,
    checkpoint: &std::path::Path,
    extra: &[&str],
) -> std::process::Output {
    Command::new(binary())
        .args([
            "backfill",
            "--source",
            source,
            "--url",
            &host.url(""),
            "--checkpoint",
        ])
        .arg(checkpoint)
        .args(extra)
        .output()
        .unwrap()
}

async fn backfill_reads_what_s3db_js_writes(source: S3dbTarget) {
    let attributes = json!({"name": "string", "age": "number|optional", "tags": "array|items:string|optional",
        "profile": "json|optional", "bio": "string|optional", "at": "datetime|optional"});
    let big = "日本語 ".repeat(400);
    let mut commands = vec![];
    for (name, behavior) in [
        ("um", "user-managed"),
        ("bo", "body-overflow"),
        ("bd", "body-only"),
    ] {
        commands.push(json!({"op": "createResource", "name": name, "behavior": behavior, "attributes": attributes}));
        commands.push(json!({"op": "insert", "resource": name, "data": {"id": "a", "name": "Ana", "age": 31, "tags": ["x", "y|z"], "profile": {"k": 1}, "at": "2026-01-02T03:04:05.678Z"}}));
        commands.push(json!({"op": "insert", "resource": name, "data": {"id": "b", "name": "Bo", "bio": big}}));
        commands.push(json!({"op": "update", "resource": name, "id": "a", "data": {"name": "Ana Maria", "age": 32.5}}));
    }
    for name in ["um", "bo", "bd"] {
        commands.push(json!({"op": "list", "resource": name}));
    }
    let results = source.js(Value::Array(commands));
    assert!(
        results.iter().all(|r| r.get("error").is_none()),
        "{results:?}"
    );
    let written: Vec<BTreeMap<String, Value>> =
        results[results.len() - 3..].iter().map(by_id).collect();

    let rx = Receiver::start().await;
    let host = Host::start(&format!(
        "replicators:\n  - id: hook\n    driver: webhook\n    resources: ['*']\n    config:\n      url: {}\n",
        rx.url("/hook")
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let out = run_backfill(&host, &source.conn, &dir.path().join("cp.json"), &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("6 records from 3 resource(s)"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    host.drained("hook").await;
    let mut got: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for r in rx.accepted() {
        let b = r.json();
        assert_eq!(b["action"], "insert");
        got.entry(b["resource"].as_str().unwrap().into())
            .or_default()
            .insert(b["id"].as_str().unwrap().into(), b["data"].clone());
    }
    for (i, name) in ["um", "bo", "bd"].iter().enumerate() {
        assert_eq!(
            got[*name], written[i],
            "resource {name}: the host reads what s3db.js wrote"
        );
    }
}

#[tokio::test]
async fn backfill_reads_what_s3db_js_writes_on_s3() {
    backfill_reads_what_s3db_js_writes(S3dbTarget::s3("js-writes")).await;
}

#[tokio::test]
async fn backfill_reads_what_s3db_js_writes_on_file() {
    backfill_reads_what_s3db_js_writes(S3dbTarget::file()).await;
}

#[tokio::test]
async fn a_killed_backfill_resumes_and_live_events_win() {
    let source = S3dbTarget::file();
    let mut commands = vec![
        json!({"op": "createResource", "name": "items", "attributes": {"name": "string", "n": "number"}}),
    ];
    for i in 0..200 {
        commands.push(json!({"op": "insert", "resource": "items", "data": {"id": format!("k{i:03}"), "name": format!("item {i}"), "n": i}}));
    }
    let created = source.js(Value::Array(commands));
    assert!(created.iter().all(|r| r.get("error").is_none()));

    let pg = Pg::connect("backfill").await;
    let host = Host::start(&format!(
        "replicators:\n{}",
        pg.replicator("pg", "[items]", "")
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let checkpoint = dir.path().join("cp.json");

    let mut first = Command::new(binary())
        .args([
            "backfill",
            "--source",
            &source.conn,
            "--url",
            &host.url(""),
            "--page",
            "5",
            "--parallel",
            "2",
            "--checkpoint",
        ])
        .arg(&checkpoint)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    eventually(
        Duration::from_secs(30),
        "the backfill to send 40 records",
        || async {
            let cp: Value = serde_json::from_slice(&std::fs::read(&checkpoint).ok()?).ok()?;
            (cp["copied"].as_u64()? >= 40).then_some(())
        },
    )
    .await;
    first.kill().unwrap();
    first.wait().unwrap();
    let cp: Value = serde_json::from_slice(&std::fs::read(&checkpoint).unwrap()).unwrap();
    let before = cp["copied"].as_u64().unwrap();
    assert!(before < 200, "killed before the end ({before})");

    // Live changes after the backfill started, to records it has not reached yet.
    host.send(json!([
        update("items", "k199", json!({"name": "live", "n": -1})),
        delete("items", "k198")
    ]))
    .await;

    let out = run_backfill(&host, &source.conn, &checkpoint, &["--page", "50"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("200 records from 1 resource(s)"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("(200 this run"),
        "the second run resumed: {stdout}"
    );
    assert!(
        !checkpoint.exists(),
        "a finished backfill removes its checkpoint"
    );
    host.drained("pg").await;
    let rows = pg.rows("items").await;
    assert_eq!(rows.len(), 199, "k198 stays deleted");
    let k199 = rows.iter().find(|r| r["id"] == "k199").unwrap();
    assert_eq!(
        k199["name"], "live",
        "a live event is never overwritten by an older backfilled copy"
    );
    assert_eq!(
        rows.iter().find(|r| r["id"] == "k000").unwrap()["name"],
        "item 0"
    );
    assert!(host.replicator("pg").await["skipped"].as_u64().unwrap() >= 2);
}

#[tokio::test]
async fn the_embedded_default_writes_a_database_s3db_js_reads() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    // `serve` without a config, as the README shows, with only the port changed.
    let mut child = Command::new(binary())
        .arg("serve")
        .current_dir(dir.path())
        .env("REPLICATOR_LISTEN", format!("127.0.0.1:{port}"))
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}");
    eventually(Duration::from_secs(20), "the embedded service", || async {
        http.get(format!("{url}/readyz"))
            .send()
            .await
            .ok()
            .filter(|r| r.status().is_success())
            .map(|_| ())
    })
    .await;
    let r = http
        .post(format!("{url}/v1/events"))
        .json(&insert("users", "u1", json!({"name": "Ana", "age": 31})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let replica = S3dbTarget::at(format!(
        "file://{}/replicator-data/replica",
        dir.path().display()
    ));
    let got = eventually(
        Duration::from_secs(10),
        "the record in the replica",
        || async {
            let r = replica.js(json!([{"op": "get", "resource": "users", "id": "u1"}]));
            (!r[0].is_null()).then(|| r[0].clone())
        },
    )
    .await;
    assert_eq!(
        without_internal(&got),
        json!({"id": "u1", "name": "Ana", "age": 31})
    );
    child.kill().unwrap();
    child.wait().unwrap();
}

#[tokio::test]
async fn the_replication_log_goes_to_an_s3db_resource_s3db_js_can_query() {
    let log_db = S3dbTarget::file();
    let rx = Receiver::start().await;
    rx.refuse_containing("poison");
    let config = format!(
        "persistReplicatorLog: true\nreplicatorLogResource: replicator_logs\nreplicatorLogDatabase: \"{}\"\nlogSuccesses: true\nreplicators:\n  - id: hook\n    driver: webhook\n    resources: [users]\n    config: {{url: \"{}\"}}\n",
        log_db.conn,
        rx.url("/hook")
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("users", "u1", json!({"note": "fine"})),
        insert("users", "u2", json!({"note": "poison"}))
    ]))
    .await;
    host.drained("hook").await;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let entries = eventually(Duration::from_secs(15), "two log records in s3db", || async {
        let r = log_db.js(json!([
            {"op": "listIds", "resource": "plg_replicator_logs", "partition": "byDate", "partitionValues": {"createdAt": today}},
            {"op": "list", "resource": "plg_replicator_logs"},
        ]));
        (r[0].as_array().is_some_and(|ids| ids.len() == 2)).then(|| r[1].clone())
    })
    .await;
    let by_record: BTreeMap<String, Value> = entries
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["recordId"].as_str().unwrap().to_string(), e.clone()))
        .collect();
    assert_eq!(by_record["u1"]["status"], "success");
    assert_eq!(by_record["u2"]["status"], "dead_lettered");
    assert!(
        by_record["u2"]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 400")
    );
    assert_eq!(by_record["u2"]["replicator"], "hook");
    assert_eq!(by_record["u2"]["action"], "insert");
    assert_eq!(by_record["u2"]["createdAt"], json!(today));
}

#[tokio::test]
async fn behaviors_limits_and_rapid_updates_of_one_key() {
    let target = S3dbTarget::file();
    target.js(json!([
        {"op": "createResource", "name": "strict", "behavior": "enforce-limits", "attributes": {"text": "string"}},
        {"op": "createResource", "name": "trunc", "behavior": "truncate-data", "attributes": {"a": "string", "b": "string"}},
    ]));
    let config = format!(
        "replicators:\n  - id: copy\n    driver: s3db\n    concurrency: 8\n    batchSize: 4\n    resources: [strict, trunc, fast]\n    config: {{connectionString: \"{}\"}}\n",
        target.conn
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("strict", "s1", json!({"text": "z".repeat(3000)})),
        insert("trunc", "t1", json!({"a": "x", "b": "y".repeat(3000)})),
    ]))
    .await;
    for i in 0..50 {
        host.send(json!([
            update("fast", "k1", json!({"n": i})),
            update("fast", &format!("other{}", i % 7), json!({"n": i}))
        ]))
        .await;
    }
    let status = host.drained("copy").await;
    assert_eq!(status["deadLettered"], 1, "{status}");
    let dl = host.dead_letters("resource=strict").await;
    assert!(
        dl[0]["error"].as_str().unwrap().contains("enforce-limits"),
        "{}",
        dl[0]
    );
    let read = target.js(json!([
        {"op": "get", "resource": "trunc", "id": "t1"},
        {"op": "get", "resource": "fast", "id": "k1"},
        {"op": "get", "resource": "strict", "id": "s1"},
    ]));
    let b = read[0]["b"].as_str().unwrap();
    assert_eq!(read[0]["a"], "x");
    assert!(
        b.len() > 1000 && b.len() < 3000 && b.chars().all(|c| c == 'y'),
        "truncated to the budget: {} chars",
        b.len()
    );
    assert_eq!(read[1]["n"], 49, "the last of 50 updates of one key wins");
    assert!(
        read[2].is_null(),
        "the record over the limit was not written"
    );
}

/// The scenario of the driver-framework issue: a destination whose `s3db.json` holds
/// `"resources": []` once panicked a delivery task while the status said `running`. Now the
/// replicator says it is failing, with the file and the problem, its lag grows, and once the
/// file is mended every record is delivered without a restart.
#[tokio::test]
async fn an_unusable_destination_catalog_is_reported_and_mending_it_resumes_delivery() {
    let target = S3dbTarget::file();
    let dir = target.conn.trim_start_matches("file://").to_string();
    let catalog = std::path::Path::new(&dir).join("s3db.json");
    std::fs::write(
        &catalog,
        r#"{"version":"1","s3dbVersion":"21.6.2","resources":[]}"#,
    )
    .unwrap();
    let config = format!(
        "replicators:\n  - id: copy\n    driver: s3db\n    resources: [users]\n    config: {{connectionString: \"{}\"}}\n",
        target.conn
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("users", "u1", json!({"name": "Ana"})),
        insert("users", "u2", json!({"name": "Bo"})),
    ]))
    .await;
    let failing = eventually(
        Duration::from_secs(20),
        "the replicator to say it fails",
        || async {
            let r = host.replicator("copy").await;
            let lag = r["lagSeconds"].as_f64().unwrap_or(0.0);
            (r["state"] == "failing" && r["lastError"].is_string() && lag > 0.0).then_some(r)
        },
    )
    .await;
    let error = failing["lastError"].as_str().unwrap();
    assert!(
        error.contains("s3db.json") && error.contains("resources: invalid type: sequence"),
        "the error names the file and the problem: {error}"
    );
    assert_eq!(failing["backlog"], 2, "{failing}");
    assert!(
        host.dead_letters("").await.is_empty(),
        "no record is at fault"
    );
    let metrics = host.metrics().await;
    assert!(
        metrics.contains("replicator_lag_seconds{replicator=\"copy\"}"),
        "{metrics}"
    );

    std::fs::write(
        &catalog,
        r#"{"version":"1","s3dbVersion":"21.6.2","resources":{}}"#,
    )
    .unwrap();
    host.send(json!([insert("users", "u3", json!({"name": "Cy"}))]))
        .await;
    let done = host.drained("copy").await;
    assert_eq!(done["state"], "running", "{done}");
    assert_eq!(done["delivered"], 3, "{done}");
    let read = target.js(json!([{"op": "list", "resource": "users"}]));
    assert_eq!(by_id(&read[0]).len(), 3, "{read:?}");
}
