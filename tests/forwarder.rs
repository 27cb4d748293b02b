//! The s3db.js side (clients/s3db-js, issue 16): a real s3db.js 21.6.2 application
//! (tests/js/forwarder-app.mjs) with ReplicatorForwarderPlugin writes through every write path
//! into a `file://` database, and the real host delivers its events to a webhook receiver.

use replicator_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

fn app_command(args: &Value) -> Command {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/forwarder-app.mjs");
    let mut cmd = Command::new("node");
    cmd.arg(script).arg(args.to_string());
    cmd
}

/// Runs a scenario to its end; returns its last JSON line.
fn app(args: Value) -> Value {
    let out = app_command(&args)
        .output()
        .expect("node runs (tests/run installs s3db.js with tests/servers/s3db-js.sh)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "forwarder-app {} failed ({}):\n{stdout}\n{}",
        args["scenario"],
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let last = stdout.lines().last().unwrap_or_else(|| {
        panic!(
            "forwarder-app printed nothing: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    serde_json::from_str(last).unwrap()
}

/// Starts a scenario that prints several lines.
fn spawn_app(args: Value) -> (Child, BufReader<ChildStdout>) {
    let mut child = app_command(&args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("node runs");
    let stdout = BufReader::new(child.stdout.take().unwrap());
    (child, stdout)
}

fn next_line(out: &mut BufReader<ChildStdout>) -> Value {
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(!line.is_empty(), "forwarder-app ended early");
    serde_json::from_str(&line).unwrap()
}

fn webhook_config(rx: &Receiver) -> String {
    format!(
        "replicators:\n  - id: hook\n    driver: webhook\n    resources: ['*']\n    config:\n      url: {}\n      retryDelay: 20\n",
        rx.url("/hook")
    )
}

/// The received events of each record id, in sequence order.
fn by_key(rx: &Receiver) -> BTreeMap<String, Vec<Value>> {
    rx.by_key(|e| e["id"].as_str().unwrap().to_string())
}

/// `(action, operation, data, before)` of an event, absent parts as null.
fn summary(e: &Value) -> Value {
    json!([
        e["action"],
        e["metadata"]["operation"],
        e["data"],
        e["before"]
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_write_path_reaches_the_host_with_before_images() {
    let rx = Receiver::start().await;
    let host = Host::start(&webhook_config(&rx)).await;
    let db = S3dbTarget::file();
    let args = json!({"scenario": "paths", "db": db.conn,
        "plugin": {"url": host.url(""), "source": "app-1"}});
    let out = tokio::task::spawn_blocking(move || app(args))
        .await
        .unwrap();
    assert_eq!(out["status"]["forwarded"], 13, "{out}");
    host.drained("hook").await;

    let keys = by_key(&rx);
    let u = |id: &str, name: &str, n: i64| json!({"id": id, "name": name, "n": n});
    let expected: BTreeMap<&str, Vec<Value>> = BTreeMap::from([
        (
            "u1",
            vec![
                json!(["insert", "insert", {"id": "u1", "name": "Ana", "n": 1, "tags": ["a"]}, null]),
                json!(["update", "update", {"id": "u1", "name": "Ana", "n": 2, "tags": ["a"]}, {"id": "u1", "name": "Ana", "n": 1, "tags": ["a"]}]),
                // patch on body-overflow goes through update(): s3db.js read the record first
                json!(["update", "patch", {"id": "u1", "name": "Ana", "n": 3, "tags": ["a"]}, {"id": "u1", "name": "Ana", "n": 2, "tags": ["a"]}]),
                json!(["update", "upsert", {"id": "u1", "name": "Ana", "n": 4, "tags": ["a"]}, {"id": "u1", "name": "Ana", "n": 3, "tags": ["a"]}]),
            ],
        ),
        (
            "u2",
            vec![
                json!(["insert", "insertMany", u("u2", "Bo", 1), null]),
                // replace() never reads the record: no before-image exists
                json!(["update", "replace", u("u2", "Bo", 9), null]),
                json!(["delete", "deleteMany", u("u2", "Bo", 9), u("u2", "Bo", 9)]),
            ],
        ),
        (
            "u3",
            vec![
                json!(["insert", "insertMany", u("u3", "Cy", 1), null]),
                json!(["delete", "delete", u("u3", "Cy", 1), u("u3", "Cy", 1)]),
            ],
        ),
        (
            "u4",
            vec![
                json!(["insert", "upsert", u("u4", "Di", 1), null]),
                json!(["delete", "deleteMany", u("u4", "Di", 1), u("u4", "Di", 1)]),
            ],
        ),
        (
            "n1",
            vec![
                json!(["insert", "insert", u("n1", "note", 1), null]),
                // patch on enforce-limits copies the object (no afterUpdate, no read s3db.js exposes)
                json!(["update", "patch", u("n1", "note", 2), null]),
            ],
        ),
    ]);
    let got: BTreeMap<&str, Vec<Value>> = keys
        .iter()
        .map(|(k, evs)| (k.as_str(), evs.iter().map(summary).collect()))
        .collect();
    assert_eq!(got, expected, "plg_audit must not be forwarded");
    for e in keys.values().flatten() {
        assert_eq!(e["source"], "app-1");
        let resource = if e["id"] == "n1" { "notes" } else { "users" };
        assert_eq!(e["resource"], resource);
        assert!(e["timestamp"].as_str().unwrap().ends_with('Z'), "{e}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_writers_keep_per_key_order_and_share_requests() {
    let rx = Receiver::start().await;
    let host = Host::start(&webhook_config(&rx)).await;
    let db = S3dbTarget::file();
    let (writers, steps) = (50, 10);
    let args = json!({"scenario": "order", "db": db.conn, "writers": writers, "steps": steps,
        "plugin": {"url": host.url(""), "batchWindowMs": 1}});
    let out = tokio::task::spawn_blocking(move || app(args))
        .await
        .unwrap();
    let total = writers * steps + writers / 5;
    assert_eq!(out["status"]["forwarded"], total, "{out}");
    let requests = out["status"]["requests"].as_u64().unwrap();
    assert!(
        requests < total as u64,
        "concurrent writes should share requests: {requests} requests for {total} events"
    );
    host.drained("hook").await;
    eprintln!("{total} events in {requests} requests, {} ms", out["ms"]);

    let keys = by_key(&rx);
    assert_eq!(keys.len(), writers);
    for (id, events) in &keys {
        let ns: Vec<i64> = events
            .iter()
            .map(|e| e["data"]["n"].as_i64().unwrap())
            .collect();
        let w: usize = id[1..].parse().unwrap();
        let mut want: Vec<i64> = (0..steps as i64).collect();
        if w.is_multiple_of(5) {
            want.push(steps as i64 - 1);
        }
        assert_eq!(ns, want, "{id}: values in sequence order");
        assert_eq!(events[0]["action"], "insert");
        for (i, e) in events.iter().enumerate().skip(1) {
            let last = i == events.len() - 1 && w.is_multiple_of(5);
            assert_eq!(e["action"], if last { "delete" } else { "update" }, "{e}");
            assert_eq!(
                e["before"]["n"],
                events[i - 1]["data"]["n"],
                "{id}: before-image of {e}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_down_with_reject_rejects_the_write_and_says_what_recovers_it() {
    let rx = Receiver::start().await;
    let mut host = Host::start(&webhook_config(&rx)).await;
    host.kill9();
    let db = S3dbTarget::file();
    let args = json!({"scenario": "reject", "db": db.conn,
        "plugin": {"url": host.url(""), "timeout": 400}});
    let out = tokio::task::spawn_blocking(move || app(args))
        .await
        .unwrap();
    for what in ["insert", "update", "many"] {
        let e = &out[what];
        let msg = e["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what} did not reject: {out}"));
        assert_eq!(e["code"], "HOST_UNAVAILABLE", "{msg}");
        assert!(msg.contains("to S3, but it was not forwarded"), "{msg}");
        assert!(
            msg.contains("replicator backfill") && msg.contains("spool"),
            "{msg}"
        );
        assert!(msg.contains(&format!("127.0.0.1:{}", host.port)), "{msg}");
    }
    assert!(
        out["insert"]["message"]
            .as_str()
            .unwrap()
            .contains("items/r1 (insert)")
    );
    assert!(
        out["many"]["message"]
            .as_str()
            .unwrap()
            .starts_with("insertMany: 2 of 2 records")
    );
    // s3db.js wrote them all: the error is about forwarding, not the write.
    assert_eq!(
        out["inS3"],
        json!([{"id": "r1", "n": 2}, {"id": "r2", "n": null}, {"id": "r3", "n": null}])
    );
    assert!(rx.received().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_down_with_spool_loses_nothing_across_kill_9_of_the_app() {
    let rx = Receiver::start().await;
    let mut host = Host::start(&webhook_config(&rx)).await;
    host.kill9();
    let db = S3dbTarget::file();
    let spool = tempfile::tempdir().unwrap();
    let plugin = json!({"url": host.url(""), "timeout": 300, "onUnavailable": "spool",
        "spoolDir": spool.path()});
    let (keys, steps) = (10, 5);

    // Writes resolve while the host is down, then the application dies with SIGKILL.
    let (mut first, mut out) = spawn_app(json!({"scenario": "spool-write", "db": db.conn,
        "keys": keys, "steps": steps, "plugin": plugin}));
    let written = tokio::task::spawn_blocking(move || next_line(&mut out))
        .await
        .unwrap();
    first.kill().unwrap();
    first.wait().unwrap();
    assert_eq!(written["status"]["state"], "spooling", "{written}");
    assert_eq!(written["status"]["spooled"], keys * steps, "{written}");

    // Restarted (host still down): the spool is found, new writes queue behind it.
    let more = 3;
    let (mut second, mut out) = spawn_app(json!({"scenario": "spool-resume", "db": db.conn,
        "keys": keys, "from": steps, "steps": more, "plugin": plugin}));
    let (written, mut out) = tokio::task::spawn_blocking(move || (next_line(&mut out), out))
        .await
        .unwrap();
    assert_eq!(written["atStart"]["spooled"], keys * steps, "{written}");
    assert_eq!(
        written["status"]["spooled"],
        keys * (steps + more),
        "{written}"
    );
    assert!(rx.received().is_empty());

    host.restart().await;
    let drained = tokio::task::spawn_blocking(move || next_line(&mut out))
        .await
        .unwrap();
    assert!(second.wait().unwrap().success());
    assert_eq!(
        drained["states"],
        json!(["spooling", "direct"]),
        "{drained}"
    );
    assert_eq!(drained["status"]["spooled"], 0, "{drained}");
    host.drained("hook").await;

    let by_key = by_key(&rx);
    assert_eq!(by_key.len(), keys as usize);
    for (id, events) in &by_key {
        let mut ns: Vec<i64> = events
            .iter()
            .map(|e| e["data"]["n"].as_i64().unwrap())
            .collect();
        ns.dedup(); // at-least-once: a resent spool chunk repeats a run, never reorders
        let last = if id == "s0" {
            steps + more + 1
        } else {
            steps + more
        };
        assert_eq!(ns, (0..last as i64).collect::<Vec<_>>(), "{id}");
        assert_eq!(events[0]["action"], "insert");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_token_and_bad_options_are_named() {
    let rx = Receiver::start().await;
    let host = Host::start_with(&webhook_config(&rx), "  token: right-token-123", "").await;
    let spool = tempfile::tempdir().unwrap();
    for plugin in [
        json!({"url": host.url(""), "token": "wrong-token-456"}),
        // a refused token is not an outage: spooling would hide it
        json!({"url": host.url(""), "token": "wrong-token-456", "onUnavailable": "spool", "spoolDir": spool.path()}),
    ] {
        let db = S3dbTarget::file();
        let conn = db.conn.clone();
        let out = tokio::task::spawn_blocking(move || {
            app(json!({"scenario": "token", "db": conn, "plugin": plugin}))
        })
        .await
        .unwrap();
        let msg = out["insert"]["message"].as_str().unwrap();
        assert_eq!(out["insert"]["code"], "UNAUTHORIZED", "{msg}");
        assert!(msg.contains("refused the token (401)"), "{msg}");
        assert!(
            !msg.contains("wrong-token-456") && !msg.contains("right-token-123"),
            "{msg}"
        );
        assert!(!out["status"].to_string().contains("wrong-token-456"));
        assert_eq!(out["status"]["spooled"], 0);
    }
    let db = S3dbTarget::file();
    let conn = db.conn.clone();
    let url = host.url("");
    let ok = tokio::task::spawn_blocking(move || {
        app(json!({"scenario": "token", "db": conn, "plugin": {"url": url, "token": "right-token-123"}}))
    })
    .await
    .unwrap();
    assert_eq!(ok["insert"], Value::Null, "{ok}");
    rx.wait_for(1).await;

    let bad = app(json!({"scenario": "bad-options"}));
    let want = [
        "`url` is required",
        "`url` must be http or https, not ftp",
        "`onUnavailable: 'spool'` needs `spoolDir`",
        "unknown option `onUnavailble`",
        "`timeout` must be a number of milliseconds (at least 1), got -5",
        "`resources` must be an array of resource names",
    ];
    for (got, want) in bad["errors"].as_array().unwrap().iter().zip(want) {
        let got = got.as_str().unwrap_or_default();
        assert!(
            got.starts_with("ReplicatorForwarderPlugin: ") && got.contains(want),
            "{got}"
        );
    }
}
