//! Change capture from the bucket (issue 17): the real s3db.js 21.6.2, in another process and
//! with no plugin, writes through every write path; the host reads the changes from the bucket
//! (polling a `file://` database and the S3 test server, S3 notifications through moto's SQS)
//! and its PostgreSQL replicator ends with exactly what s3db.js holds.

use replicator_tests::s3dbjs::{converged, holdings, write};
use replicator_tests::sqs::Sqs;
use replicator_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::time::Duration;

const RESOURCES: [&str; 4] = ["users", "docs", "blobs", "cards"];

/// Resources of every behavior that matters for reading: user-managed (metadata, a body after
/// an update that overflows), body-overflow, body-only; and a plugin's own resource.
fn schema() -> Vec<Value> {
    vec![
        json!({"op": "createResource", "name": "users", "attributes": {"name": "string", "n": "number|optional", "tags": "array|items:string|optional"}}),
        json!({"op": "createResource", "name": "docs", "behavior": "body-overflow", "attributes": {"title": "string", "text": "string|optional"}}),
        json!({"op": "createResource", "name": "blobs", "behavior": "body-only", "attributes": {"title": "string", "meta": {"size": "number|optional", "kind": "string|optional"}}}),
        json!({"op": "createResource", "name": "plg_audit", "attributes": {"what": "string"}}),
    ]
}

/// First round: inserts only.
fn inserts() -> Vec<Value> {
    let mut c = vec![
        json!({"op": "insert", "resource": "users", "data": {"id": "u1", "name": "Ana", "n": 1, "tags": ["a"]}}),
        json!({"op": "insert", "resource": "users", "data": {"id": "u2", "name": "Bo", "n": 2}}),
        json!({"op": "insert", "resource": "users", "data": {"id": "u3", "name": "Cy", "n": 3}}),
        json!({"op": "insert", "resource": "users", "data": {"id": "u4", "name": "Di"}}),
        json!({"op": "insert", "resource": "docs", "data": {"id": "d1", "title": "big", "text": "x".repeat(3000)}}),
        json!({"op": "insert", "resource": "docs", "data": {"id": "d2", "title": "small", "text": "y"}}),
        json!({"op": "insert", "resource": "blobs", "data": {"id": "b1", "title": "t", "meta": {"size": 3, "kind": "png"}}}),
        json!({"op": "insert", "resource": "plg_audit", "data": {"id": "p1", "what": "internal"}}),
        // A new version made in the process that made the first: s3db.json's registry does
        // not map the two new attributes, which s3db.js numbers in the order written.
        json!({"op": "createResource", "name": "cards", "attributes": {"title": "string"}}),
        json!({"op": "insert", "resource": "cards", "data": {"id": "c1", "title": "first"}}),
        json!({"op": "createResource", "name": "cards", "attributes": {"title": "string", "zeta": "string|optional", "alpha": "number|optional"}}),
        json!({"op": "insert", "resource": "cards", "data": {"id": "c2", "title": "second", "zeta": "z", "alpha": 7}}),
    ];
    c.splice(0..0, schema());
    c
}

/// Second round: every other write path, and a new attribute that bumps the schema version.
fn changes() -> Vec<Value> {
    vec![
        json!({"op": "update", "resource": "users", "id": "u1", "data": {"n": 10}}),
        json!({"op": "replace", "resource": "users", "id": "u2", "data": {"name": "Bob", "n": 20}}),
        json!({"op": "patch", "resource": "users", "id": "u3", "data": {"n": 30}}),
        json!({"op": "delete", "resource": "users", "id": "u4"}),
        json!({"op": "update", "resource": "docs", "id": "d2", "data": {"text": "z".repeat(4000)}}),
        json!({"op": "update", "resource": "blobs", "id": "b1", "data": {"meta": {"size": 4, "kind": "gif"}}}),
        // Two attributes at once, in other than alphabetical order: s3db.js numbers them as
        // written, before its registry in s3db.json maps them.
        json!({"op": "createResource", "name": "users", "attributes": {"name": "string", "n": "number|optional", "tags": "array|items:string|optional", "email": "string|optional", "city": "string|optional"}}),
        json!({"op": "insert", "resource": "users", "data": {"id": "u5", "name": "Eve", "email": "eve@example.com", "city": "Porto"}}),
        json!({"op": "update", "resource": "users", "id": "u1", "data": {"email": "ana@example.com", "city": "Braga"}}),
        json!({"op": "insert", "resource": "plg_audit", "data": {"id": "p2", "what": "internal"}}),
    ]
}

/// s3db.js writes the first round, then, once PostgreSQL holds it, the second; returns what
/// s3db.js holds at the end, which PostgreSQL holds too.
async fn both_rounds(db: &S3dbTarget, pg: &Pg) -> BTreeMap<String, BTreeMap<String, Value>> {
    write(db, inserts());
    converged(pg, &holdings(db, &RESOURCES)).await;
    write(db, changes());
    let expected = holdings(db, &RESOURCES);
    assert_eq!(expected["users"].len(), 4);
    converged(pg, &expected).await;
    expected
}

fn pg_replicator(pg: &Pg) -> String {
    pg.replicator("pg", "['*']", "      mode: document\n")
}

fn webhook_replicator(rx: &Receiver) -> String {
    format!(
        "  - id: hook\n    driver: webhook\n    resources: ['*']\n    config:\n      url: {}\n",
        rx.url("/hook")
    )
}

/// The actions the webhook saw for each record (`resource/id`), in sequence order; every
/// event names the source.
fn actions(rx: &Receiver) -> BTreeMap<String, Vec<String>> {
    rx.by_key(|e| {
        format!(
            "{}/{}",
            e["resource"].as_str().unwrap(),
            e["id"].as_str().unwrap()
        )
    })
    .into_iter()
    .map(|(key, events)| {
        let actions = events
            .iter()
            .map(|e| {
                assert_eq!(e["source"], "app", "{e}");
                e["action"].as_str().unwrap().to_string()
            })
            .collect();
        (key, actions)
    })
    .collect()
}

async fn source(host: &Host) -> Value {
    host.get("/v1/status").await["sources"][0].clone()
}

/// Both rounds through polling; the webhook sees each record's changes as inserts, updates
/// and deletes, and the plugin's resource is left out.
async fn every_write_path_by_polling(db: S3dbTarget, test: &str) {
    let pg = Pg::connect(test).await;
    let rx = Receiver::start().await;
    let host = Host::start(&format!(
        "sources:\n  - id: app\n    connectionString: {}\n    poll: 200ms\nreplicators:\n{}{}",
        db.conn,
        pg_replicator(&pg),
        webhook_replicator(&rx)
    ))
    .await;
    both_rounds(&db, &pg).await;
    assert!(
        pg.rows("plg_audit").await.is_empty(),
        "plugin resources are not captured"
    );
    host.drained("hook").await;
    let seen = actions(&rx);
    assert_eq!(seen["users/u1"][0], "insert");
    assert!(
        seen["users/u1"][1..].iter().all(|a| a == "update"),
        "{seen:?}"
    );
    assert_eq!(seen["users/u4"], ["insert", "delete"]);
    assert_eq!(seen["users/u5"], ["insert"]);
    let status = source(&host).await;
    assert_eq!(status["state"], "running", "{status}");
    assert_eq!(status["mode"], "poll");
    assert_eq!(status["captured"]["delete"], 1, "{status}");
    assert!(
        status["lastPass"]["objects"].as_u64().unwrap() >= 7,
        "{status}"
    );
    let metrics = host.metrics().await;
    assert!(
        metrics.contains("replicator_capture_changes_total{source=\"app\",action=\"delete\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn polling_a_file_database_captures_every_write_path() {
    every_write_path_by_polling(S3dbTarget::file(), "capture_file").await;
}

#[tokio::test]
async fn polling_the_s3_server_captures_every_write_path() {
    every_write_path_by_polling(S3dbTarget::s3("capture"), "capture_s3").await;
}

/// A database on moto whose bucket notifies a fresh queue.
async fn notified_database(sqs: &Sqs, name: &str) -> (S3dbTarget, String) {
    let (bucket, queue) = sqs.notified_bucket(name).await;
    (S3dbTarget::at(sqs.database(&bucket, "app")), queue)
}

fn notifications_source(sqs: &Sqs, db: &S3dbTarget, queue: &str) -> String {
    format!(
        "sources:\n{}",
        sqs.notifications_source("app", &db.conn, queue)
    )
}

/// A notification S3 would send for `key`.
fn notification(
    bucket_conn: &S3dbTarget,
    event: &str,
    key: &str,
    sequencer: Option<&str>,
) -> String {
    let bucket = bucket_conn.conn.rsplit('/').nth(1).unwrap();
    let mut object = json!({"key": key.replace('=', "%3D").replace('/', "%2F"), "size": 0, "eTag": "d41d8cd98f00b204e9800998ecf8427e"});
    if let Some(s) = sequencer {
        object["sequencer"] = json!(s);
    }
    json!({"Records": [{"eventVersion": "2.1", "eventSource": "aws:s3", "eventTime": "2026-12-03T00:00:00.000Z",
        "eventName": event, "s3": {"bucket": {"name": bucket}, "object": object}}]})
    .to_string()
}

#[tokio::test]
async fn notifications_capture_every_write_path_and_duplicates_change_nothing() {
    let sqs = Sqs::moto().await;
    let (db, queue) = notified_database(&sqs, "capture-notify").await;
    let pg = Pg::connect("capture_notify").await;
    let host = Host::start(&format!(
        "{}replicators:\n{}",
        notifications_source(&sqs, &db, &queue),
        pg_replicator(&pg)
    ))
    .await;
    let expected = both_rounds(&db, &pg).await;
    host.drained("pg").await;
    let before = source(&host).await;
    assert_eq!(before["state"], "running", "{before}");
    assert!(
        before["skipped"]["test_event"].as_u64().unwrap_or(0) <= 1,
        "{before}"
    );
    assert!(
        before["skipped"]["not_a_record"].as_u64().unwrap() > 0,
        "s3db.json and partition-free keys: {before}"
    );
    assert!(
        before["skipped"]["plugin_resource"].as_u64().unwrap() >= 2,
        "{before}"
    );
    let head = host.get("/v1/status").await["journal"]["head"].clone();

    // A duplicate of a live record's notification, a stale "removed" for a record that
    // exists, a stale "created" for one that was deleted, with and without sequencers.
    let stale = [
        notification(
            &db,
            "ObjectCreated:Put",
            "app/resource=users/data/id=u1",
            None,
        ),
        notification(
            &db,
            "ObjectCreated:Put",
            "app/resource=users/data/id=u1",
            Some("00A1"),
        ),
        notification(
            &db,
            "ObjectRemoved:Delete",
            "app/resource=users/data/id=u2",
            Some("0001"),
        ),
        notification(
            &db,
            "ObjectCreated:Put",
            "app/resource=users/data/id=u4",
            None,
        ),
        notification(
            &db,
            "ObjectCreated:Put",
            "app/resource=docs/data/id=d1",
            Some("00A1"),
        ),
        notification(
            &db,
            "ObjectCreated:Put",
            "app/resource=docs/data/id=d1",
            Some("0009"),
        ),
    ];
    // One at a time: notifications of one key in one batch are read once, as they should be.
    for body in &stale {
        sqs.client
            .send_message()
            .queue_url(&queue)
            .message_body(body)
            .send()
            .await
            .unwrap();
        eventually(
            Duration::from_secs(30),
            "the notification to be handled",
            || async { (sqs.messages_held(&queue).await == 0).then_some(()) },
        )
        .await;
    }
    let after = source(&host).await;
    assert_eq!(
        after["skipped"]["stale"], 1,
        "d1's older sequencer is not even read: {after}"
    );
    assert_eq!(
        after["skipped"]["unchanged"].as_u64().unwrap(),
        before["skipped"]["unchanged"].as_u64().unwrap_or(0) + 5,
        "{after}"
    );
    assert_eq!(
        host.get("/v1/status").await["journal"]["head"],
        head,
        "no event from duplicate or stale notifications"
    );
    assert_eq!(after["captured"], before["captured"]);
    converged(&pg, &expected).await;
}

/// kill -9 of the host while s3db.js writes: the queue hands the unfinished notifications out
/// again, and the replica ends exactly as s3db.js left the bucket.
#[tokio::test]
async fn kill_9_while_changes_stream_in_loses_none() {
    let sqs = Sqs::moto().await;
    let (db, queue) = notified_database(&sqs, "capture-crash").await;
    let pg = Pg::connect("capture_crash").await;
    let mut host = Host::start(&format!(
        "{}replicators:\n{}",
        notifications_source(&sqs, &db, &queue),
        pg_replicator(&pg)
    ))
    .await;
    write(&db, schema());
    let mut commands = Vec::new();
    for round in 0..6 {
        for k in 0..20 {
            let id = format!("k{k:02}");
            commands.push(if round == 0 {
                json!({"op": "insert", "resource": "users", "data": {"id": id, "name": format!("n{k}"), "n": 0}})
            } else if round == 4 && k % 5 == 0 {
                json!({"op": "delete", "resource": "users", "id": id})
            } else if round == 5 && k % 5 == 0 {
                json!({"op": "insert", "resource": "users", "data": {"id": id, "name": "back", "n": round}})
            } else {
                json!({"op": "update", "resource": "users", "id": id, "data": {"n": round}})
            });
        }
    }
    let conn = db.conn.clone();
    let writer = std::thread::spawn(move || write(&S3dbTarget::at(conn), commands));
    // Killed twice while the writes stream in, each time once some of them are journaled.
    let mut killed_mid_stream = 0;
    for _ in 0..2 {
        let head = host.get("/v1/status").await["journal"]["head"]
            .as_u64()
            .unwrap();
        eventually(
            Duration::from_secs(30),
            "changes to be captured",
            || async {
                let now = host.get("/v1/status").await["journal"]["head"]
                    .as_u64()
                    .unwrap();
                (now >= head + 15 || writer.is_finished()).then_some(())
            },
        )
        .await;
        if !writer.is_finished() {
            killed_mid_stream += 1;
        }
        host.kill9();
        tokio::time::sleep(Duration::from_millis(300)).await;
        host.restart().await;
    }
    assert!(
        killed_mid_stream > 0,
        "the writer ended before the host was killed"
    );
    writer.join().unwrap();
    let expected = holdings(&db, &["users"]);
    assert_eq!(expected["users"].len(), 20);
    assert!(
        expected["users"].values().all(|r| r["n"] == 5),
        "{expected:?}"
    );
    converged(&pg, &expected).await;
}

/// A source that cannot make progress says so, in status, metrics and the stream's place,
/// naming what refuses: here a bucket nobody serves, and a queue that does not exist.
#[tokio::test]
async fn a_source_that_cannot_progress_says_why() {
    let sqs = Sqs::moto().await;
    let (bucket, _queue) = sqs.notified_bucket("capture-fail").await;
    let missing_queue = format!("{}/123456789012/no-such-queue", sqs.endpoint);
    let port = free_port();
    let host = Host::start(&format!(
        "sources:\n  - id: down\n    connectionString: http://test:test@127.0.0.1:{port}/nowhere\n    poll: 200ms\n{}",
        sqs.notifications_source("lost", &sqs.database(&bucket, "app"), &missing_queue)
    ))
    .await;
    let sources = eventually(Duration::from_secs(30), "both sources to fail", || async {
        let s = host.get("/v1/status").await["sources"].clone();
        (s[0]["state"] == "failing" && s[1]["state"] == "failing").then_some(s)
    })
    .await;
    let down = sources[0]["lastError"].as_str().unwrap();
    assert!(down.contains(&format!("127.0.0.1:{port}")), "{down}");
    let lost = sources[1]["lastError"].as_str().unwrap();
    assert!(lost.contains("does not exist"), "{lost}");
    assert!(!lost.contains("test:test"), "no secret in errors: {lost}");
    let metrics = host.metrics().await;
    assert!(
        metrics.contains("replicator_capture_errors_total{source=\"lost\"}"),
        "{metrics}"
    );
}
