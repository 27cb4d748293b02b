//! Cluster mode on moto's SQS FIFO: three host processes share intake and delivery, one is
//! killed with kill -9 in the middle of a stream, and still every acknowledged event arrives,
//! each key's changes in order, and PostgreSQL ends exactly at the state the events describe.

use replicator_tests::s3dbjs::{converged, holdings, write};
use replicator_tests::sqs::Sqs;
use replicator_tests::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The `cluster` section: queues with a prefix of this test's own on moto, the shared state
/// in a fresh prefix of the S3 test server.
fn cluster_section(test: &str) -> String {
    cluster_section_with_state(test, &S3dbTarget::s3(test))
}

fn cluster_section_with_state(test: &str, state: &S3dbTarget) -> String {
    let endpoint = std::env::var("SQS_ENDPOINT")
        .expect("SQS_ENDPOINT is not set: run the tests with tests/run, which starts moto");
    let state = &state.conn;
    format!(
        "cluster:\n  queuePrefix: {}\n  endpoint: {endpoint}\n  region: us-east-1\n  credentials: {{accessKeyId: test, secretAccessKey: test}}\n  visibilityTimeout: 3s\n  waitTimeSeconds: 1\n  maxClockSkew: 5ms\n  stateDatabase: {state}\n",
        unique_prefix(test)
    )
}

fn unique_prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{test}-{}-{nanos}-", std::process::id())
}

/// What the senders got acknowledged: each event's unique number, and each key's last event.
#[derive(Default)]
struct Acked {
    numbers: HashSet<u64>,
    last: HashMap<String, Value>,
}

/// Sends batches of updates and deletes over `keys` keys of its own, each batch to the next
/// host in turn (so a key's changes go through every host), resending until a 202.
async fn sender(
    index: u64,
    hosts: Vec<String>,
    keys: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Acked>>,
) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = index * 1_000_000;
    let mut turn = index as usize;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<Value> = (0..10)
            .map(|_| {
                n += 1;
                let key = format!("s{index}-k{}", n % keys);
                let action = if n.is_multiple_of(7) {
                    "delete"
                } else {
                    "update"
                };
                json!({"resource": "items", "action": action, "id": key,
                       "data": {"id": key, "n": n}})
            })
            .collect();
        loop {
            turn += 1;
            let base = &hosts[turn % hosts.len()];
            let sent = http
                .post(format!("{base}/v1/events"))
                .json(&batch)
                .send()
                .await;
            if sent.is_ok_and(|r| r.status() == 202) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let mut a = acked.lock().unwrap();
        for e in batch {
            a.numbers.insert(e["data"]["n"].as_u64().unwrap());
            a.last.insert(e["id"].as_str().unwrap().to_string(), e);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_hosts_share_the_work_in_key_order_through_a_kill_9() {
    let pg = Pg::connect("cluster").await;
    let rx = Receiver::start().await;
    let config = format!(
        "{}replicators:\n{}  - id: hook\n    driver: webhook\n    resources: [items]\n    config:\n      url: {}\n      retryDelay: 20\n",
        cluster_section("c3"),
        pg.replicator("pg", "[items]", ""),
        rx.url("/hook")
    );
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(Host::start(&config).await);
    }
    let urls: Vec<String> = hosts.iter().map(|h| h.url("")).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(Mutex::new(Acked::default()));
    let senders: Vec<_> = (0..3)
        .map(|i| tokio::spawn(sender(i, urls.clone(), 20, stop.clone(), acked.clone())))
        .collect();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before_kill = acked.lock().unwrap().numbers.len();
    assert!(before_kill > 0, "nothing acknowledged before the kill");
    hosts[1].kill9();
    tokio::time::sleep(Duration::from_secs(3)).await;
    stop.store(true, Ordering::Relaxed);
    for s in senders {
        s.await.unwrap();
    }
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    eprintln!(
        "{} events acknowledged ({before_kill} before the kill)",
        acked.numbers.len()
    );

    // Every acknowledged event reaches the webhook; each key's first arrivals in order.
    let arrived = eventually(
        Duration::from_secs(90),
        "every acknowledged event at the webhook",
        || async {
            let seen: HashSet<u64> = rx
                .accepted()
                .iter()
                .filter_map(|r| r.json()["data"]["n"].as_u64())
                .collect();
            acked.numbers.is_subset(&seen).then_some(seen.len())
        },
    )
    .await;
    assert_eq!(
        arrived,
        acked.numbers.len(),
        "the webhook saw events nobody sent"
    );
    let mut first_seen = HashSet::new();
    let mut per_key: HashMap<String, Vec<(u64, u64)>> = HashMap::new();
    for r in rx.accepted() {
        let b = r.json();
        let n = b["data"]["n"].as_u64().unwrap();
        if first_seen.insert(n) {
            per_key
                .entry(b["id"].as_str().unwrap().to_string())
                .or_default()
                .push((n, b["sequence"].as_u64().unwrap()));
        }
    }
    for (key, arrivals) in &per_key {
        assert!(
            arrivals
                .windows(2)
                .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1),
            "key {key}: first arrivals out of order (n, version): {arrivals:?}"
        );
    }

    // PostgreSQL ends at each key's last acknowledged state.
    let expected: BTreeMap<String, i64> = acked
        .last
        .iter()
        .filter(|(_, e)| e["action"] == "update")
        .map(|(k, e)| (k.clone(), e["data"]["n"].as_i64().unwrap()))
        .collect();
    eventually(
        Duration::from_secs(60),
        "PostgreSQL at the last state",
        || async {
            let actual: BTreeMap<String, i64> = pg
                .rows("items")
                .await
                .into_iter()
                .map(|r| {
                    (
                        r["id"].as_str().unwrap().to_string(),
                        r["n"].as_f64().unwrap() as i64,
                    )
                })
                .collect();
            (actual == expected).then_some(())
        },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn dead_letters_are_shared_and_redriven_from_another_host() {
    let rx = Receiver::start().await;
    rx.refuse_containing("poison");
    let state = S3dbTarget::s3("dlq");
    let config = format!(
        "{}maxRetries: 1\npersistReplicatorLog: true\nreplicators:\n  - id: hook\n    driver: webhook\n    resources: [items]\n    config:\n      url: {}\n      retryDelay: 20\n",
        cluster_section_with_state("dlq", &state),
        rx.url("/hook")
    );
    let a = Host::start(&config).await;
    let b = Host::start(&config).await;
    a.send(json!([
        {"resource": "items", "action": "insert", "id": "k1", "data": {"id": "k1", "v": "poison"}},
        {"resource": "items", "action": "update", "id": "k1", "data": {"id": "k1", "v": "fine"}},
        {"resource": "items", "action": "insert", "id": "k2", "data": {"id": "k2", "v": "fine"}},
    ]))
    .await;
    rx.wait_for_accepted(2).await;
    let on_b = eventually(
        Duration::from_secs(30),
        "the dead letter seen from both hosts",
        || async {
            let (from_a, from_b) = (a.dead_letters("").await, b.dead_letters("").await);
            (from_a.len() == 1 && from_a == from_b).then_some(from_b)
        },
    )
    .await;
    assert_eq!(on_b[0]["recordId"], "k1");
    assert_eq!(on_b[0]["event"]["event"]["data"]["v"], "poison");
    let status = eventually(Duration::from_secs(20), "both hosts in status", || async {
        let s = b.get("/v1/status").await;
        let alive = s["cluster"]["hosts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|h| h["alive"] == true)
            .count();
        (alive == 2).then_some(s)
    })
    .await;
    let hook = &status["replicators"][0];
    assert_eq!(hook["deadLettered"], 1, "{status}");
    for h in status["cluster"]["hosts"].as_array().unwrap() {
        assert!(h["replicators"]["hook"]["held"].is_u64(), "{status}");
        assert!(h["replicators"]["hook"]["lagSeconds"].is_f64(), "{status}");
    }
    let printed = std::process::Command::new(binary())
        .args(["status", "--url", &a.url("")])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&printed.stdout);
    assert!(printed.contains("cluster: this host"), "{printed}");
    assert_eq!(
        printed.matches(" yes ").count(),
        2,
        "two hosts alive: {printed}"
    );
    let metrics = a.metrics().await;
    assert!(
        metrics.contains("replicator_cluster_queue_messages{queue=\"intake\"}"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("replicator_cluster_sqs_requests_total 0\n"),
        "{metrics}"
    );

    rx.accept_all();
    let (code, redriven) = b.post("/v1/dlq/redrive", json!({"all": true})).await;
    assert_eq!(code, 200, "{redriven}");
    assert_eq!(redriven["redriven"], 1);
    let arrived = rx.wait_for_accepted(3).await;
    let last = arrived.last().unwrap().json();
    assert_eq!(
        (last["id"].as_str(), last["data"]["v"].as_str()),
        (Some("k1"), Some("poison"))
    );
    assert!(
        a.dead_letters("").await.is_empty(),
        "the redriven entry left the shared queue"
    );

    // The replication log of both hosts, in the shared state database, for s3db.js to read.
    let log = eventually(
        Duration::from_secs(30),
        "the shared replication log",
        || async {
            let listed = state.js(json!([{"op": "list", "resource": "plg_replicator_logs"}]));
            let entries = listed[0].as_array().cloned().unwrap_or_default();
            entries
                .iter()
                .any(|e| e["recordId"] == "k1" && e["status"] == "dead_lettered")
                .then_some(entries)
        },
    )
    .await;
    assert!(log.iter().all(|e| e["replicator"] == "hook"), "{log:?}");
}

/// Capture in cluster mode: three hosts read the same notification queue while s3db.js, in
/// another process, streams inserts, updates, deletes and re-inserts; one host is killed
/// with kill -9 mid-stream. PostgreSQL still ends exactly at what s3db.js holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn hosts_share_a_notification_queue_and_end_at_the_bucket_state() {
    let sqs = Sqs::moto().await;
    let (bucket, queue) = sqs.notified_bucket("cluster-capture").await;
    let db = S3dbTarget::at(sqs.database(&bucket, "app"));
    let pg = Pg::connect("cluster_capture").await;
    let config = format!(
        "{}sources:\n{}replicators:\n{}",
        cluster_section("capture"),
        sqs.notifications_source("app", &db.conn, &queue),
        pg.replicator("pg", "[users]", "      mode: document\n")
    );
    write(
        &db,
        vec![
            json!({"op": "createResource", "name": "users", "attributes": {"name": "string", "n": "number|optional"}}),
        ],
    );
    let mut hosts = Vec::new();
    for _ in 0..3 {
        hosts.push(Host::start(&config).await);
    }
    let mut commands = Vec::new();
    for round in 0..6 {
        for k in 0..15 {
            let id = format!("k{k:02}");
            commands.push(match (round, k % 5) {
                (0, _) => json!({"op": "insert", "resource": "users", "data": {"id": id, "name": "first", "n": 0}}),
                (3, 0) => json!({"op": "delete", "resource": "users", "id": id}),
                (4, 0) => json!({"op": "insert", "resource": "users", "data": {"id": id, "name": "back", "n": round}}),
                _ => json!({"op": "update", "resource": "users", "id": id, "data": {"n": round}}),
            });
        }
    }
    let conn = db.conn.clone();
    let writer = std::thread::spawn(move || write(&S3dbTarget::at(conn), commands));
    eventually(
        Duration::from_secs(30),
        "some changes replicated",
        || async { (!pg.rows("users").await.is_empty()).then_some(()) },
    )
    .await;
    let mid_stream = !writer.is_finished();
    hosts[2].kill9();
    writer.join().unwrap();
    assert!(mid_stream, "the writer ended before the host was killed");
    let expected = holdings(&db, &["users"]);
    assert_eq!(expected["users"].len(), 15);
    assert!(
        expected["users"].values().all(|r| r["n"] == 5),
        "{expected:?}"
    );
    converged(&pg, &expected).await;
}

/// A backfill in cluster mode: its copies go through the cluster, and a copy never undoes a
/// live change made after the backfill started, even when sequenced after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfill_copy_never_overwrites_a_later_live_change() {
    let pg = Pg::connect("cluster_backfill").await;
    let rx = Receiver::start().await;
    let config = format!(
        "{}replicators:\n{}  - id: hook\n    driver: webhook\n    resources: [items]\n    config:\n      url: {}\n",
        cluster_section("backfill"),
        pg.replicator("pg", "[items]", ""),
        rx.url("/hook")
    );
    let a = Host::start(&config).await;
    let b = Host::start(&config).await;
    let db = S3dbTarget::file();
    let mut commands = vec![
        json!({"op": "createResource", "name": "items", "attributes": {"name": "string", "n": "number"}}),
    ];
    commands.extend((0..20).map(|i| json!({"op": "insert", "resource": "items", "data": {"id": format!("i{i:02}"), "name": "x", "n": 0}})));
    write(&db, commands);

    let (code, started) = a.post("/v1/backfills", json!({"source": "by hand"})).await;
    assert_eq!(code, 201, "{started}");
    // The application changes i00 after the backfill started, and says so.
    write(
        &db,
        vec![json!({"op": "update", "resource": "items", "id": "i00", "data": {"n": 99}})],
    );
    a.send(json!(update("items", "i00", json!({"name": "x", "n": 99}))))
        .await;
    let n_of = |rows: Vec<Value>, id: &str| {
        rows.iter()
            .find(|r| r["id"] == id)
            .map(|r| r["n"].as_f64().unwrap() as i64)
    };
    eventually(
        Duration::from_secs(30),
        "the live change in PostgreSQL",
        || async { (n_of(pg.rows("items").await, "i00") == Some(99)).then_some(()) },
    )
    .await;
    // A copy read before that change arrives only now.
    let stale = json!(update("items", "i00", json!({"name": "x", "n": 0})));
    let r = a
        .http
        .post(a.url(&format!("/v1/events?backfill={}", started["id"])))
        .json(&stale)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let copy = eventually(
        Duration::from_secs(30),
        "the stale copy at the webhook",
        || async {
            rx.accepted()
                .iter()
                .map(Received::json)
                .find(|e| e["id"] == "i00" && e["data"]["n"] == 0)
        },
    )
    .await;
    let live = rx
        .accepted()
        .iter()
        .map(Received::json)
        .find(|e| e["id"] == "i00" && e["data"]["n"] == 99)
        .unwrap();
    assert!(
        copy["sequence"].as_u64() < live["sequence"].as_u64(),
        "a copy is versioned below the backfill's start: {copy} {live}"
    );
    let (code, _) = a
        .post(
            &format!("/v1/backfills/{}/finish", started["id"]),
            json!({}),
        )
        .await;
    assert_eq!(code, 200);

    // The whole database through the command, against the other host.
    let checkpoint = a.dir.path().join("backfill.json");
    let out = std::process::Command::new(binary())
        .args(["backfill", "--source", &db.conn, "--url", &b.url("")])
        .arg("--checkpoint")
        .arg(&checkpoint)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eventually(
        Duration::from_secs(30),
        "every record in PostgreSQL",
        || async {
            let rows = pg.rows("items").await;
            (rows.len() == 20).then_some(())
        },
    )
    .await;
    let rows = pg.rows("items").await;
    assert_eq!(
        n_of(rows.clone(), "i00"),
        Some(99),
        "the stale copy lost to the live change"
    );
    assert!(
        rows.iter()
            .filter(|r| r["id"] != "i00")
            .all(|r| r["n"] == 0),
        "{rows:?}"
    );
}

/// One replicator's destination is down (nothing listens): the other replicator, on its own
/// queue, gets every event meanwhile, and the one that waits says so in status with its
/// queue's backlog.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_replicators_outage_never_holds_back_another() {
    let up = Receiver::start().await;
    let down = format!("http://127.0.0.1:{}/hook", free_port());
    let config = format!(
        "{}replicators:\n  - id: up\n    driver: webhook\n    resources: [items]\n    config:\n      url: {}\n  - id: down\n    driver: webhook\n    resources: [items]\n    config:\n      url: {}\n      retryDelay: 200\n",
        cluster_section("outage"),
        up.url("/hook"),
        down
    );
    let a = Host::start(&config).await;
    let b = Host::start(&config).await;
    for host in [&a, &b] {
        let batch: Vec<Value> = (0..25)
            .map(|i| update("items", &format!("k{i}"), json!({"from": host.port})))
            .collect();
        host.send(json!(batch)).await;
    }
    up.wait_for_accepted(50).await;
    let waiting = eventually(
        Duration::from_secs(30),
        "the waiting replicator's status",
        || async {
            let r = b.replicator("down").await;
            (r["state"] == "failing" && r["backlog"].as_u64() > Some(0)).then_some(r)
        },
    )
    .await;
    assert!(
        waiting["lastError"]
            .as_str()
            .unwrap()
            .contains("cannot connect"),
        "{waiting}"
    );
    assert!(
        b.dead_letters("").await.is_empty(),
        "an outage spends no attempts"
    );
    // The queue's depth is read every 5 s.
    eventually(
        Duration::from_secs(20),
        "the other replicator's queue empty",
        || async { (b.replicator("up").await["backlog"] == 0).then_some(()) },
    )
    .await;
}

/// Two changes alike in every field (no timestamp given: intake fills in the same one) are
/// two changes, not one deduplicated by SQS.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alike_changes_in_one_post_are_all_delivered() {
    let rx = Receiver::start().await;
    let config = format!(
        "{}replicators:\n  - id: hook\n    driver: webhook\n    resources: [items]\n    config:\n      url: {}\n",
        cluster_section("alike"),
        rx.url("/hook")
    );
    let host = Host::start(&config).await;
    host.send(json!([
        update("items", "c1", json!({"n": 1})),
        update("items", "c1", json!({"n": 2})),
        update("items", "c1", json!({"n": 1})),
    ]))
    .await;
    let arrived: Vec<i64> = rx
        .wait_for_accepted(3)
        .await
        .iter()
        .map(|r| r.json()["data"]["n"].as_i64().unwrap())
        .collect();
    assert_eq!(arrived, [1, 2, 1]);
}
