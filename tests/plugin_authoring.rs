//! The plugin author's path: `plugin new` in each language and kind, built and checked with
//! `plugin test`; `plugin run` on a file and on a running service's journal; a new version
//! swapped in under a steady stream (every event delivered exactly once, outputs changing
//! from the next batch), and broken versions refused while the old one keeps serving.

use replicator_tests::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

fn replicator(args: &[&str]) -> Output {
    Command::new(binary()).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn write_json(dir: &Path, name: &str, v: &Value) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, serde_json::to_vec_pretty(v).unwrap()).unwrap();
    p
}

fn user(id: &str, first: &str) -> Value {
    json!({"resource": "users", "action": "insert", "id": id,
        "data": {"firstName": first, "lastName": "Lima", "email": format!("{first}@example.com"), "password": "pw"}})
}

#[test]
fn plugin_run_shows_what_becomes_of_each_event() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.ndjson");
    let lines = [
        user("u1", "Ana"),
        json!({"resource": "users", "action": "insert", "id": "u2", "data": {"email": "bot@test.com"}}),
        json!({"resource": "users", "action": "insert", "id": "u3", "data": {"firstName": "Fan", "fanOut": 2}}),
        json!({"resource": "users", "action": "insert", "id": "u4", "data": {"failMe": true}}),
        json!({"resource": "users", "action": "delete", "id": "u5", "sequence": 42}),
    ];
    let ndjson: Vec<String> = lines.iter().map(Value::to_string).collect();
    std::fs::write(&events, ndjson.join("\n")).unwrap();
    let wasm = guest("rust-transform");

    let out = replicator(&["plugin", "run", path(&wasm), "--events", path(&events)]);
    let shown = text(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a failed record fails the run: {shown}"
    );
    assert!(shown.contains("users/u1 insert #1"), "{shown}");
    assert!(
        shown.contains("changed") && shown.contains("+ /fullName: \"Ana Lima\""),
        "{shown}"
    );
    assert!(shown.contains("- /password: \"pw\""), "{shown}");
    assert!(
        shown.contains("users/u2 insert #2") && shown.contains("skipped"),
        "{shown}"
    );
    assert!(
        shown.contains("became 2 event(s)") && shown.contains("users/u3-1 insert #3"),
        "{shown}"
    );
    assert!(
        shown.contains("FAILED: transform invalid record (fail-me)"),
        "{shown}"
    );
    assert!(
        shown.contains("users/u5 delete #42") && shown.contains("kept"),
        "{shown}"
    );
    assert!(
        shown.contains("5 record(s): 1 changed, 1 failed, 1 kept, 1 many, 1 skipped"),
        "{shown}"
    );

    let out = replicator(&[
        "plugin",
        "run",
        path(&wasm),
        "--events",
        path(&events),
        "--json",
        "--config",
        r#"{"strip": []}"#,
    ]);
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let outcomes: Vec<&str> = rows
        .iter()
        .map(|r| r["outcome"].as_str().unwrap())
        .collect();
    assert_eq!(outcomes, ["changed", "skipped", "many", "failed", "kept"]);
    assert_eq!(rows[3]["code"], "fail-me");
    assert!(
        rows.iter().all(|r| r["micros"].as_u64().is_some()),
        "{rows:?}"
    );
    assert!(rows[0]["memoryPeak"].as_u64().unwrap() > 0, "{}", rows[0]);
    // With `strip: []` the password stays: the config reached the component.
    let changes = rows[0]["changes"]["data"].to_string();
    assert!(!changes.contains("password"), "{changes}");

    // Invalid input is named by its line, and nothing runs.
    std::fs::write(
        &events,
        format!("{}\n{{\"resource\": \"users\"}}\n", ndjson[0]),
    )
    .unwrap();
    let out = replicator(&["plugin", "run", path(&wasm), "--events", path(&events)]);
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains("events.ndjson:2: missing \"action\""),
        "{shown}"
    );
}

#[tokio::test]
async fn plugin_run_reads_a_running_services_journal() {
    let receiver = Receiver::start().await;
    let host = Host::start(&format!(
        "replicators:\n  - id: hooks\n    driver: webhook\n    resources:\n      users: {{actions: [insert]}}\n    config: {{url: \"{}\"}}\n",
        receiver.url("/")
    ))
    .await;
    let mut batch = Vec::new();
    for i in 0..6 {
        batch.push(user(&format!("u{i}"), &format!("N{i}")));
        batch.push(json!({"resource": "orders", "action": "insert", "id": format!("o{i}"), "data": {"total": i}}));
    }
    batch.push(json!({"resource": "users", "action": "delete", "id": "u0"}));
    let sequences = host.send(Value::Array(batch)).await;
    host.drained("hooks").await;

    let url = host.url("");
    let wasm = guest("rust-transform");
    let out = replicator(&[
        "plugin",
        "run",
        path(&wasm),
        "--replicator",
        "hooks",
        "--last",
        "3",
        "--json",
        "--url",
        &url,
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let rows: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    // The last three events the replicator's routes take: users inserts only, oldest first,
    // with the sequences the journal gave them.
    let inputs: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["input"]["id"].as_str().unwrap().to_string(),
                r["input"]["sequence"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        inputs,
        [
            ("u3".to_string(), sequences[6]),
            ("u4".to_string(), sequences[8]),
            ("u5".to_string(), sequences[10])
        ]
    );
    assert!(rows.iter().all(|r| r["outcome"] == "changed"), "{rows:?}");

    let out = replicator(&[
        "plugin",
        "run",
        path(&wasm),
        "--replicator",
        "nobody",
        "--url",
        &url,
    ]);
    assert!(
        text(&out).contains("no replicator named \"nobody\""),
        "{}",
        text(&out)
    );

    // A driver's dry run shows the batches `replicate` would get, without calling it.
    let dir = tempfile::tempdir().unwrap();
    let events = write_json(
        dir.path(),
        "events.json",
        &json!([user("u1", "Ana"), user("u2", "Bob")]),
    );
    let out = replicator(&[
        "plugin",
        "run",
        path(&guest("rust-driver")),
        "--events",
        path(&events),
        "--dry-run",
        "--config",
        r#"{"url": "http://127.0.0.1:9", "index": "t"}"#,
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("driver search-bulk"), "{shown}");
    assert!(
        shown.contains("replicate call 1 of 1 (2 events)"),
        "{shown}"
    );
    assert!(shown.contains("\"id\":\"u2\""), "{shown}");
}

#[test]
fn plugin_test_checks_expected_outcomes_and_shows_a_diff() {
    let dir = tempfile::tempdir().unwrap();
    let wasm = guest("rust-transform");
    let mut cases = json!({
        "event": {"resource": "users", "action": "insert", "id": "u1"},
        "cases": [
            {"name": "fullName and no password", "event": {"data": {"firstName": "Ana", "lastName": "Lima", "password": "x"}},
             "expect": {"data": {"firstName": "Ana", "lastName": "Lima", "fullName": "Ana Lima"}}},
            {"name": "test users are skipped", "event": {"data": {"email": "a@test.com"}}, "expect": "skip"},
            {"name": "deletes pass", "event": {"action": "delete"}, "expect": "keep"},
            {"name": "fan out", "event": {"data": {"fanOut": 2}}, "expect": {"many": [{"id": "u1-0"}, {"id": "u1-1", "data": {"fanOut": 2}}]}},
            {"name": "failMe fails", "event": {"data": {"failMe": true}}, "expect": {"failed": {"code": "fail-me"}}},
            {"name": "a batch", "events": [{"id": "a", "data": {"x": 1}}, {"id": "b", "data": {"email": "b@test.com"}}],
             "expect": [{"data": {"x": 1}}, "skip"]},
            {"name": "config per case", "config": {"addFields": {"tier": "gold"}}, "event": {"data": {"x": 1}}, "expect": {"data": {"x": 1, "tier": "gold"}}},
            {"name": "a bad config is refused", "config": {"nope": true}, "event": {"data": {}}, "expect": {"invalidConfig": "nope"}}
        ]
    });
    let file = write_json(dir.path(), "cases.json", &cases);
    let out = replicator(&["plugin", "test", path(&wasm), path(&file)]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    assert!(shown.contains("8 passed, 0 failed"), "{shown}");

    // Wrong expectations: exit 1, each mismatch shown.
    cases["cases"][0]["expect"]["data"]["fullName"] = json!("Ana  Lima");
    cases["cases"][1]["expect"] = json!("keep");
    cases["cases"][4]["expect"] = json!({"failed": {"code": "other-code"}});
    let file = write_json(dir.path(), "cases.json", &cases);
    let out = replicator(&["plugin", "test", path(&wasm), path(&file)]);
    let shown = text(&out);
    assert_eq!(out.status.code(), Some(1), "{shown}");
    assert!(shown.contains("5 passed, 3 failed"), "{shown}");
    assert!(shown.contains("FAIL  fullName and no password"), "{shown}");
    assert!(
        shown.contains("data ~ /fullName: \"Ana  Lima\" -> \"Ana Lima\""),
        "{shown}"
    );
    assert!(
        shown.contains("expected the event kept as it came, got skipped"),
        "{shown}"
    );
    assert!(
        shown.contains("expected code Some(\"other-code\"), got Some(\"fail-me\")"),
        "{shown}"
    );

    // A cases file that is wrong is named where.
    cases["cases"][2]["expected"] = json!("keep");
    let file = write_json(dir.path(), "cases.json", &cases);
    let out = replicator(&["plugin", "test", path(&wasm), path(&file)]);
    let shown = text(&out);
    assert!(!out.status.success());
    assert!(
        shown.contains("cases[2]") && shown.contains("expected"),
        "{shown}"
    );
}

/// A project `name` made by `plugin new`, built with its own build script, then checked with
/// its own cases; returns the component. (Each test builds its own: nextest runs every test
/// in a process of its own.)
fn new_project(name: &str, lang: &str, kind: &str) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/plugin-projects");
    let _ = std::fs::remove_dir_all(root.join(name));
    std::fs::create_dir_all(&root).unwrap();
    let out = replicator(&[
        "plugin",
        "new",
        name,
        "--lang",
        lang,
        "--kind",
        kind,
        "--dir",
        path(&root),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let project = root.join(name);
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../guest-examples");
    let mut build = Command::new(project.join("build.sh"));
    build.current_dir(&project);
    // Reuse what the guest build installed: its cargo cache and lock, its node_modules' npm
    // cache, its componentize-py venv.
    match lang {
        "rust" => {
            std::fs::copy(examples.join("Cargo.lock"), project.join("Cargo.lock")).unwrap();
            build.env("CARGO_TARGET_DIR", examples.join("target"));
        }
        "python" => {
            build.env("PY_VENV", examples.join("python-transform/.venv"));
        }
        _ => {}
    }
    let out = build.output().unwrap();
    assert!(
        out.status.success(),
        "{name}: build.sh failed:\n{}",
        text(&out)
    );
    let wasm = project.join(format!("{name}.wasm"));
    assert!(
        wasm.is_file(),
        "{name}: build.sh made no {}",
        wasm.display()
    );
    let out = replicator(&[
        "plugin",
        "test",
        path(&wasm),
        path(&project.join("cases.json")),
    ]);
    let shown = text(&out);
    assert!(out.status.success(), "{name}: plugin test failed:\n{shown}");
    assert!(shown.contains(" passed, 0 failed"), "{shown}");
    wasm
}

/// A driver project's component, used by a replicator: each batch arrives at a real HTTP
/// server as a JSON array of the events.
async fn posts_batches_to_a_real_server(wasm: PathBuf) {
    let receiver = Receiver::start().await;
    let host = Host::start(&format!(
        "replicators:\n  - id: post\n    driver: wasm\n    resources: [users]\n    config:\n      component: \"{}\"\n      allowHosts: [\"127.0.0.1:{}\"]\n      url: \"{}\"\n",
        wasm.display(),
        receiver.port,
        receiver.url("/in")
    ))
    .await;
    host.send(json!([user("u1", "Ana"), user("u2", "Bob"), {"resource": "users", "action": "delete", "id": "u1"}]))
        .await;
    let status = host.drained("post").await;
    assert_eq!(status["delivered"], 3, "{status}");
    let events: Vec<Value> = receiver
        .accepted()
        .iter()
        .flat_map(|r| r.json().as_array().cloned().unwrap_or_default())
        .collect();
    let seen: Vec<(&str, &str)> = events
        .iter()
        .map(|e| (e["id"].as_str().unwrap(), e["action"].as_str().unwrap()))
        .collect();
    assert_eq!(
        seen,
        [("u1", "insert"), ("u2", "insert"), ("u1", "delete")],
        "{events:?}"
    );
    assert_eq!(
        events[0]["data"]["firstName"], "Ana",
        "documents as JSON values"
    );
    assert!(events[0]["sequence"].as_u64().is_some(), "{}", events[0]);
}

async fn new_driver_project(name: &'static str, lang: &'static str) {
    let wasm = tokio::task::spawn_blocking(move || new_project(name, lang, "driver"))
        .await
        .unwrap();
    posts_batches_to_a_real_server(wasm).await;
}

#[tokio::test]
async fn plugin_new_in_rust_builds_and_passes_its_cases() {
    tokio::task::spawn_blocking(|| new_project("acme-rust-transform", "rust", "transform"))
        .await
        .unwrap();
    new_driver_project("acme-rust-driver", "rust").await;
}

#[tokio::test]
async fn plugin_new_in_javascript_builds_and_passes_its_cases() {
    tokio::task::spawn_blocking(|| new_project("acme-js-transform", "js", "transform"))
        .await
        .unwrap();
    new_driver_project("acme-js-driver", "js").await;
}

#[tokio::test]
async fn plugin_new_in_python_builds_and_passes_its_cases() {
    tokio::task::spawn_blocking(|| new_project("acme-python-transform", "python", "transform"))
        .await
        .unwrap();
    new_driver_project("acme-python-driver", "python").await;
}

fn plugins_status(status: &Value) -> Value {
    status["plugins"][0].clone()
}

#[tokio::test]
async fn a_new_version_is_swapped_in_under_a_steady_stream() {
    // The next version: the Rust transform template (it drops only the fields its config names).
    let template = tokio::task::spawn_blocking(|| new_project("acme-swap", "rust", "transform"))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("transform.wasm");
    std::fs::copy(guest("rust-transform"), &live).unwrap();
    let receiver = Receiver::start().await;
    let host = Host::start(&format!(
        "plugins:\n  watchInterval: 200ms\nreplicators:\n  - id: hooks\n    driver: webhook\n    batchSize: 10\n    resources:\n      users: {{transform: \"{}\"}}\n    config: {{url: \"{}\"}}\n",
        live.display(),
        receiver.url("/")
    ))
    .await;
    let before = plugins_status(&host.get("/v1/status").await);
    assert_eq!(before["world"], "batch-transformer", "{before}");
    assert_eq!(before["kind"], "transform");
    assert_eq!(before["reloads"], 0);

    // A steady stream: 10 events every 20 ms while the file is replaced.
    let sender = {
        let url = host.url("/v1/events");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut sent = 0;
            for round in 0..40 {
                let batch: Vec<Value> = (0..10)
                    .map(|i| user(&format!("u{round}-{i}"), "Ana"))
                    .collect();
                let r = http.post(&url).json(&batch).send().await.unwrap();
                assert_eq!(r.status(), 202);
                sent += batch.len();
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            sent
        })
    };
    tokio::time::sleep(Duration::from_millis(250)).await;
    // Written beside and renamed over, as a deploy does.
    let staged = dir.path().join("transform.wasm.new");
    std::fs::copy(&template, &staged).unwrap();
    std::fs::rename(&staged, &live).unwrap();
    let sent = sender.await.unwrap();
    let after = eventually(
        Duration::from_secs(20),
        "the new version loaded",
        || async {
            let p = plugins_status(&host.get("/v1/status").await);
            (p["reloads"] == 1).then_some(p)
        },
    )
    .await;
    assert_ne!(after["digest"], before["digest"]);
    assert!(after["lastError"].is_null(), "{after}");
    host.drained("hooks").await;

    // Every event exactly once; the old version's output (fullName) up to some event, the new
    // one's from the next on, never mixed.
    let mut events: Vec<Value> = receiver.accepted().iter().map(Received::json).collect();
    events.sort_by_key(|e| e["sequence"].as_u64().unwrap());
    let ids: BTreeMap<String, usize> = events.iter().fold(BTreeMap::new(), |mut m, e| {
        *m.entry(e["id"].as_str().unwrap().to_string()).or_default() += 1;
        m
    });
    assert_eq!(ids.len(), sent, "every event delivered");
    assert!(ids.values().all(|n| *n == 1), "none twice");
    let old: Vec<bool> = events
        .iter()
        .map(|e| e["data"].get("fullName").is_some())
        .collect();
    let switch = old
        .iter()
        .position(|o| !o)
        .expect("outputs of the new version");
    assert!(switch > 0, "the old version ran first");
    assert!(
        old[switch..].iter().all(|o| !o),
        "after the swap only the new version: {old:?}"
    );
    // The old version stripped the password; the new one, with no `drop` in its config,
    // keeps each record as it came.
    assert!(
        events[..switch]
            .iter()
            .all(|e| e["data"].get("password").is_none())
    );
    assert!(
        events[switch..]
            .iter()
            .all(|e| e["data"]["password"] == "pw")
    );
    let metrics = host.metrics().await;
    assert!(
        metrics.contains(
            "replicator_plugin_reloads_total{plugin=\"transform.wasm\",result=\"reloaded\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_broken_new_version_is_refused_and_the_old_one_keeps_serving() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("transform.wasm");
    std::fs::copy(guest("rust-transform"), &live).unwrap();
    let receiver = Receiver::start().await;
    // No watching: reloads come from the API here.
    let host = Host::start(&format!(
        "plugins:\n  watchInterval: 0s\nreplicators:\n  - id: hooks\n    driver: webhook\n    resources:\n      users: {{transform: \"{}\"}}\n    config: {{url: \"{}\"}}\n",
        live.display(),
        receiver.url("/")
    ))
    .await;
    let running = plugins_status(&host.get("/v1/status").await)["digest"].clone();
    let mut stream = host.http.get(host.url("/v1/stream")).send().await.unwrap();

    let unchanged = replicator(&["plugin", "reload", "--url", &host.url("")]);
    assert!(unchanged.status.success(), "{}", text(&unchanged));
    assert!(
        text(&unchanged).contains("unchanged"),
        "{}",
        text(&unchanged)
    );

    for (bad, why) in [
        (
            b"not a component".to_vec(),
            "is not a valid WebAssembly component",
        ),
        (
            std::fs::read(guest("rust-driver")).unwrap(),
            "cannot run here",
        ),
    ] {
        std::fs::write(&live, bad).unwrap();
        let (code, out) = host.post("/v1/plugins/reload", json!({})).await;
        assert_eq!(code, 200, "{out}");
        let report = &out["plugins"][0];
        assert_eq!(report["result"], "refused", "{out}");
        assert!(report["error"].as_str().unwrap().contains(why), "{out}");
        assert_eq!(report["digest"], running, "the old version still runs");
        let status = plugins_status(&host.get("/v1/status").await);
        assert_eq!(status["digest"], running);
        assert!(
            status["lastError"].as_str().unwrap().contains(why),
            "{status}"
        );
        // The old version keeps serving.
        let id = format!("k{}", receiver.accepted().len());
        host.send(json!([user(&id, "Ana")])).await;
        host.drained("hooks").await;
        let got = receiver.accepted().last().unwrap().json();
        assert_eq!(got["id"], id.as_str());
        assert_eq!(got["data"]["fullName"], "Ana Lima", "{got}");
    }
    let out = replicator(&["plugin", "reload", "--url", &host.url("")]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "a refusal fails the command: {}",
        text(&out)
    );
    // The refusals were said on the event stream.
    let mut said = String::new();
    while !said.contains("plugin_refused") {
        let chunk = tokio::time::timeout(Duration::from_secs(5), stream.chunk())
            .await
            .expect("plugin_refused on the stream")
            .unwrap()
            .unwrap();
        said.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(said.contains("transform.wasm"), "{said}");

    // A good version clears the error.
    std::fs::copy(guest("js-transform"), &live).unwrap();
    let (_, out) = host.post("/v1/plugins/reload", json!({})).await;
    assert_eq!(out["plugins"][0]["result"], "reloaded", "{out}");
    let status = plugins_status(&host.get("/v1/status").await);
    assert!(status["lastError"].is_null(), "{status}");
    assert_ne!(status["digest"], running);
    assert_eq!(status["reloads"], 1);
}

/// A search index's `_bulk` endpoint that writes everything.
fn bulk_written(body: &[u8]) -> (u16, String) {
    let lines = String::from_utf8_lossy(body).lines().count();
    let items: Vec<Value> = (0..lines / 2)
        .map(|_| json!({"index": {"status": 201}}))
        .collect();
    (200, json!({"errors": false, "items": items}).to_string())
}

/// The `_id` of each document in the bulk requests received, in order.
fn bulk_ids(search: &Receiver) -> Vec<String> {
    search
        .accepted()
        .iter()
        .flat_map(|r| {
            String::from_utf8_lossy(&r.body)
                .lines()
                .filter_map(|l| serde_json::from_str::<Value>(l).ok())
                .filter_map(|v| v["index"]["_id"].as_str().map(str::to_string))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[tokio::test]
async fn a_new_driver_version_takes_over_between_batches() {
    let dir = tempfile::tempdir().unwrap();
    let live = dir.path().join("search.wasm");
    let original = std::fs::read(guest("rust-driver")).unwrap();
    std::fs::write(&live, &original).unwrap();
    let search = Receiver::start().await;
    search.respond_with(bulk_written);
    let host = Host::start(&format!(
        "plugins:\n  watchInterval: 200ms\nreplicators:\n  - id: search\n    driver: wasm\n    batchSize: 10\n    resources: [users]\n    config:\n      component: \"{}\"\n      allowHosts: [\"127.0.0.1:{}\"]\n      url: \"{}\"\n      index: app\n",
        live.display(),
        search.port,
        search.url("")
    ))
    .await;
    let before = plugins_status(&host.get("/v1/status").await);
    assert_eq!(before["kind"], "driver");
    assert_eq!(before["world"], "sink-driver");
    let sender = {
        let url = host.url("/v1/events");
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            for round in 0..30 {
                let batch: Vec<Value> = (0..10)
                    .map(|i| user(&format!("u{round}-{i}"), "Ana"))
                    .collect();
                let r = http.post(&url).json(&batch).send().await.unwrap();
                assert_eq!(r.status(), 202);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    // The same driver with a custom section appended: another file, another digest.
    let mut next = original;
    next.extend_from_slice(&[0x00, 0x05, 0x04, b'n', b'o', b't', b'e']);
    let staged = dir.path().join("search.wasm.new");
    std::fs::write(&staged, next).unwrap();
    std::fs::rename(&staged, &live).unwrap();
    sender.await.unwrap();
    let after = eventually(Duration::from_secs(20), "the new driver loaded", || async {
        let p = plugins_status(&host.get("/v1/status").await);
        (p["reloads"] == 1).then_some(p)
    })
    .await;
    assert_ne!(after["digest"], before["digest"]);
    let status = host.drained("search").await;
    assert_eq!(status["delivered"], 300, "{status}");
    let ids = bulk_ids(&search);
    let unique: std::collections::BTreeSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), 300, "every event written");
    assert_eq!(ids.len(), 300, "none written twice by the swap");
}
