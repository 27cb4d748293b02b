//! Wasm plugins: transforms in Rust, JavaScript and Python applied end to end, a custom
//! driver against a real HTTP server, and guests that misbehave (loop, allocate, panic, try to
//! escape the sandbox, call a host off their allow-list) without hurting the host.

use replicator_tests::*;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::process::Command;
use std::time::Duration;

fn user(first: &str, extra: Value) -> Value {
    let mut data = json!({"firstName": first, "lastName": "Lima", "email": format!(" {first}@Example.com "), "password": "pw", "ssn": "123", "creditCard": "4111"});
    for (k, v) in extra.as_object().unwrap() {
        data[k] = v.clone();
    }
    data
}

fn email_hash(first: &str) -> String {
    format!(
        "{:x}",
        Sha256::digest(format!("{}@example.com", first.to_lowercase()).as_bytes())
    )
}

fn by_id(received: &[Received]) -> BTreeMap<String, Value> {
    received
        .iter()
        .map(|r| r.json())
        .map(|b| (b["id"].as_str().unwrap().to_string(), b))
        .collect()
}

#[test]
fn plugin_check_names_the_world_and_what_the_sandbox_grants() {
    let run = |name: &str| {
        Command::new(binary())
            .args(["plugin", "check"])
            .arg(guest(name))
            .output()
            .unwrap()
    };
    let out = run("rust-transform");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("implements batch-transformer"), "{text}");
    let out = run("rust-driver");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("implements sink-driver") && text.contains("wasi:http/outgoing-handler"),
        "{text}"
    );
    let out = run("read-file");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("wasi:sockets/tcp") && text.contains("every connection is denied"),
        "{text}"
    );
    for name in ["js-transform", "python-transform"] {
        let out = run(name);
        assert!(
            out.status.success(),
            "{name}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A batch transform built against an interface version the host does not link (WASIp3):
    // the names pass, linking as the service would does not.
    let dir = tempfile::tempdir().unwrap();
    let mistyped = dir.path().join("mistyped.wasm");
    std::fs::write(
        &mistyped,
        wat::parse_str(
            r#"(component
                (import "wasi:cli/environment@0.3.0" (instance
                    (export "get-arguments" (func (result (list string))))))
                (core module $m (func (export "f")))
                (core instance $i (instantiate $m))
                (func $f (canon lift (core func $i "f")))
                (instance $t (export "init" (func $f)) (export "transform-batch" (func $f)))
                (export "replicator:plugin/batch-transform@0.1.0" (instance $t)))"#,
        )
        .unwrap(),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["plugin", "check"])
        .arg(&mistyped)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("wasi:cli/environment@0.3.0: REFUSED")
            && text.contains("note: wasi:cli/environment@0.3.0: the host cannot link it"),
        "{text}"
    );
    let bogus = dir.path().join("bogus.wasm");
    std::fs::write(&bogus, b"not wasm").unwrap();
    let out = Command::new(binary())
        .args(["plugin", "check"])
        .arg(&bogus)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a valid WebAssembly component"));
}

#[test]
fn plugin_compile_fills_the_cache_or_says_why_it_cannot() {
    let dir = tempfile::tempdir().unwrap();
    let compile = |cache: &std::path::Path| {
        Command::new(binary())
            .args(["plugin", "compile"])
            .arg(guest("rust-transform"))
            .arg("--cache-dir")
            .arg(cache)
            .output()
            .unwrap()
    };
    let cache = dir.path().join("cache");
    let out = compile(&cache);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let artifacts: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "cwasm"))
        .collect();
    assert_eq!(artifacts.len(), 1, "{text}");
    let artifact = artifacts[0].path();
    assert!(text.contains(&*artifact.to_string_lossy()), "{text}");
    // A damaged artifact is not loaded (deserialising runs its code): it is compiled again.
    let mut bytes = std::fs::read(&artifact).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&artifact, &bytes).unwrap();
    let out = compile(&cache);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let recorded = std::fs::read_to_string(artifact.with_extension("sha256")).unwrap();
    let now = format!("{:x}", Sha256::digest(std::fs::read(&artifact).unwrap()));
    assert_eq!(recorded.trim(), now, "the artifact was written again");
    assert_ne!(std::fs::read(&artifact).unwrap(), bytes);
    // A cache directory that cannot be made (its parent is a file): an error, not a success.
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"").unwrap();
    let out = compile(&blocker.join("cache"));
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("cannot write the compiled plugin"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test]
async fn transforms_in_rust_javascript_and_python_end_to_end() {
    let pg = Pg::connect("transform").await;
    let js = Receiver::start().await;
    let py = Receiver::start().await;
    let config = format!(
        "replicators:\n{}  - id: js\n    driver: webhook\n    resources:\n      users: {{transform: \"{}\"}}\n    config: {{url: \"{}\"}}\n  - id: py\n    driver: webhook\n    resources:\n      users: {{transform: {{component: \"{}\", config: {{strip: [password], hashEmail: false}}}}}}\n    config: {{url: \"{}\"}}\n",
        pg.replicator(
            "rust",
            &format!(
                "{{users: {{table: people, transform: {{component: \"{}\", config: {{}}}}}}}}",
                guest("rust-transform").display()
            ),
            ""
        ),
        guest("js-transform").display(),
        js.url("/js"),
        guest("python-transform").display(),
        py.url("/py"),
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("users", "u1", user("Ana", json!({}))),
        insert("users", "u2", user("Bot", json!({"email": "bot@test.com"}))),
        insert(
            "users",
            "u3",
            user("Old", json!({"deletedAt": "2026-01-01T00:00:00Z"}))
        ),
        insert("users", "u4", user("Bad", json!({"failMe": true}))),
        insert("users", "u5", user("Fan", json!({"fanOut": 3}))),
        delete("users", "u6"),
    ]))
    .await;
    for r in ["rust", "js", "py"] {
        host.drained(r).await;
    }

    // Rust, into PostgreSQL: reference-docs transform, fan-out, a failing record dead-lettered.
    let rows = pg.rows("people").await;
    let ids: Vec<&str> = rows.iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert_eq!(
        ids,
        ["u1", "u5-0", "u5-1", "u5-2"],
        "skipped: test user, soft-deleted; u6 delete applied to nothing"
    );
    assert_eq!(rows[0]["fullName"], "Ana Lima");
    assert_eq!(rows[0]["emailHash"], email_hash("Ana"));
    for secret in ["password", "ssn", "creditCard"] {
        assert!(
            rows[0].get(secret).is_none(),
            "{secret} stripped: {}",
            rows[0]
        );
    }
    let dl = host.dead_letters("replicator=rust").await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["recordId"], "u4");
    assert!(
        dl[0]["error"].as_str().unwrap().contains("fail-me"),
        "{}",
        dl[0]
    );
    assert_eq!(host.replicator("rust").await["skipped"], 2);

    // JavaScript, to a webhook: the same job, the same outcomes.
    let got = by_id(&js.accepted());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["u1", "u5-0", "u5-1", "u5-2", "u6"]
    );
    assert_eq!(
        host.dead_letters("replicator=js").await[0]["recordId"],
        "u4"
    );
    let ana = &got["u1"]["data"];
    assert_eq!(ana["fullName"], "Ana Lima");
    assert_eq!(ana["emailHash"], email_hash("Ana"));
    assert!(
        ana.get("password").is_none()
            && ana.get("ssn").is_none()
            && ana.get("creditCard").is_none(),
        "{ana}"
    );
    assert_eq!(got["u6"]["action"], "delete");

    // A record that failed in the transform goes through it again when redriven: it is never
    // delivered untransformed (here it fails again, so it is dead-lettered again).
    let (code, out) = host
        .post("/v1/dlq/redrive", json!({"replicator": "js"}))
        .await;
    assert_eq!(code, 200, "{out}");
    let again = eventually(
        Duration::from_secs(10),
        "the redriven record dead-lettered again",
        || async {
            let d = host.dead_letters("replicator=js").await;
            d.iter().find(|x| x["redrives"] == 1).cloned()
        },
    )
    .await;
    assert_eq!(again["recordId"], "u4");
    assert!(!by_id(&js.accepted()).contains_key("u4"));

    // Python, with its own per-destination config: strip only the password, no hash.
    let got = by_id(&py.accepted());
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        ["u1", "u5-0", "u5-1", "u5-2", "u6"]
    );
    assert_eq!(
        host.dead_letters("replicator=py").await[0]["recordId"],
        "u4"
    );
    let ana = &got["u1"]["data"];
    assert_eq!(ana["fullName"], "Ana Lima");
    assert!(ana.get("password").is_none());
    assert_eq!(ana["ssn"], "123");
    assert!(ana.get("emailHash").is_none(), "{ana}");
}

#[tokio::test]
async fn misbehaving_guests_are_contained() {
    let bad = Receiver::start().await;
    let good = Receiver::start().await;
    let transform = |name: &str| format!("{{transform: \"{}\"}}", guest(name).display());
    let config = format!(
        "plugins:\n  timeout: 500ms\n  memoryLimit: 32MiB\nreplicators:\n  - id: sandboxed\n    driver: webhook\n    resources:\n      loops: {}\n      allocs: {}\n      panics: {}\n      escapes: {}\n    config: {{url: \"{}\"}}\n  - id: plain\n    driver: webhook\n    resources: [loops, allocs, panics, escapes]\n    config: {{url: \"{}\"}}\n",
        transform("loop-forever"),
        transform("alloc-forever"),
        transform("panic"),
        transform("read-file"),
        bad.url("/bad"),
        good.url("/good"),
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("loops", "ok1", json!({})),
        insert("loops", "bad1", json!({"loop": true})),
        insert("loops", "bad5", json!({"sleep": true})),
        insert("loops", "ok5", json!({})),
        insert("allocs", "ok2", json!({})),
        insert("allocs", "bad2", json!({"alloc": true})),
        insert("panics", "ok3", json!({})),
        insert("panics", "bad3", json!({"panic": true})),
        insert("escapes", "ok4", json!({})),
        insert("escapes", "bad4", json!({"escape": true})),
    ]))
    .await;
    host.drained("sandboxed").await;
    host.drained("plain").await;
    assert_eq!(good.accepted().len(), 10, "another replicator is untouched");
    let delivered: Vec<String> = bad
        .accepted()
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(delivered.len(), 5, "{delivered:?}");
    assert!(
        delivered.iter().all(|id| id.starts_with("ok")),
        "{delivered:?}"
    );
    let reasons: BTreeMap<String, String> = host.dead_letter_reasons("replicator=sandboxed").await;
    assert!(reasons["bad1"].contains("deadline"), "{reasons:?}");
    assert!(
        reasons["bad5"].contains("deadline") && reasons["bad5"].contains("host call"),
        "a guest blocked in a host call is stopped too: {reasons:?}"
    );
    assert!(reasons["bad2"].contains("memory"), "{reasons:?}");
    assert!(
        reasons["bad3"].contains("trapped")
            && reasons["bad3"].contains("record bad3 asked to panic"),
        "a panic's message comes from the guest's stderr: {reasons:?}"
    );
    assert!(
        reasons["bad4"].contains("sandboxed"),
        "the guest saw no file, socket or environment: {reasons:?}"
    );
    assert_eq!(host.healthz().await, 200);
}

/// A replicator `search` of the example driver (`rust-driver`) writing to `search`'s bulk API:
/// `top` goes before `replicators:` (delivery options), `extra` into the driver's config.
fn search_driver(search: &Receiver, top: &str, extra: &str) -> String {
    format!(
        "{top}replicators:\n  - id: search\n    driver: wasm\n    resources: [users]\n    config:\n      component: \"{}\"\n      allowHosts: [\"127.0.0.1:{}\"]\n      url: \"{}\"\n      index: app\n{extra}",
        guest("rust-driver").display(),
        search.port,
        search.url("")
    )
}

/// A search index's `_bulk` endpoint: every item created, except those containing "poison".
fn bulk_api(body: &[u8]) -> (u16, String) {
    let text = String::from_utf8_lossy(body);
    let lines: Vec<&str> = text.lines().collect();
    let mut items = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let action: Value = serde_json::from_str(lines[i]).unwrap();
        let op = action.as_object().unwrap().keys().next().unwrap().clone();
        let with_doc = op == "index";
        let doc = if with_doc {
            lines.get(i + 1).copied().unwrap_or("")
        } else {
            ""
        };
        let status = if doc.contains("poison") { 400 } else { 201 };
        items.push(json!({op: {"status": status, "error": if status == 400 { json!({"type": "mapper_parsing_exception"}) } else { Value::Null }}}));
        i += if with_doc { 2 } else { 1 };
    }
    (
        200,
        json!({"errors": items.iter().any(|x| x.to_string().contains("400")), "items": items})
            .to_string(),
    )
}

#[tokio::test]
async fn a_wasm_driver_that_traps_on_a_record_loses_only_that_record() {
    let allowed = Receiver::start().await;
    // The driver's request is allowed here: every batch is written unless it panics.
    let config = format!(
        "batchSize: 10\nlinger: 200ms\nreplicators:\n  - id: brittle\n    driver: wasm\n    resources: [users]\n    config:\n      component: \"{}\"\n      allowHosts: [\"127.0.0.1:{}\"]\n      forbiddenUrl: \"{}\"\n",
        guest("driver-forbidden-host").display(),
        allowed.port,
        allowed.url("/ok")
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("users", "u1", json!({})),
        insert("users", "u2", json!({"panic": true})),
        insert("users", "u3", json!({})),
        insert("users", "u4", json!({})),
    ]))
    .await;
    let status = host.drained("brittle").await;
    assert_eq!(status["delivered"], 3, "{status}");
    let dl = host.dead_letters("replicator=brittle").await;
    assert_eq!(dl.len(), 1, "{dl:?}");
    assert_eq!(dl[0]["recordId"], "u2");
    let error = dl[0]["error"].as_str().unwrap();
    assert!(
        error.contains("trapped") && error.contains("asked the driver to panic"),
        "{error}"
    );
    // A fresh instance took over: later records are written.
    host.send(insert("users", "u5", json!({}))).await;
    let status = host.drained("brittle").await;
    assert_eq!(status["delivered"], 4, "{status}");
}

#[tokio::test]
async fn a_wasm_driver_waiting_on_a_slow_destination_is_retried_not_dead_lettered() {
    let search = Receiver::start().await;
    search.respond_with(bulk_api);
    // The first answer comes after the attempt's deadline (the pipeline's attempt timeout and
    // the driver's own deadline are the same `timeout`; both are transient): an attempt spent,
    // not a bad record.
    search.delay(Duration::from_secs(3));
    let config = search_driver(&search, "timeout: 1s\nretryDelay: 100\n", "");
    let host = Host::start(&config).await;
    host.send(insert("users", "u1", json!({"name": "Ana"})))
        .await;
    search.wait_for(1).await;
    search.delay(Duration::ZERO);
    let status = host.drained("search").await;
    assert_eq!(status["deadLettered"], 0, "{status}");
    assert!(
        search.received().len() >= 2,
        "delivered again after the slow attempt"
    );
    let log = host.log();
    assert!(
        log.contains("delivery failed")
            && (log.contains("deadline of 1s exceeded") || log.contains("timed out after 1s")),
        "the slow attempt is logged with its reason: {log}"
    );
}

#[tokio::test]
async fn the_secrets_of_a_wasm_drivers_config_are_masked_in_what_it_says() {
    let search = Receiver::start().await;
    // A destination that echoes the credential it refused, which the driver quotes.
    search.respond_with(|_| (401, "invalid bearer token s3cret-token-123".into()));
    let config = search_driver(&search, "", "      token: s3cret-token-123\n");
    let host = Host::start(&config).await;
    host.send(insert("users", "u1", json!({"name": "Ana"})))
        .await;
    let status = eventually(
        Duration::from_secs(20),
        "the refusal in the status",
        || async {
            let r = host.replicator("search").await;
            r["lastError"].is_string().then_some(r)
        },
    )
    .await;
    let error = status["lastError"].as_str().unwrap();
    assert!(
        error.contains("401") && error.contains("invalid bearer token ***"),
        "{status}"
    );
    let log = host.log();
    assert!(log.contains("invalid bearer token ***"), "{log}");
    assert!(!log.contains("s3cret-token-123"), "{log}");
}

#[tokio::test]
async fn a_wasm_drivers_largest_batch_bounds_the_replicators_batches() {
    let search = Receiver::start().await;
    search.respond_with(bulk_api);
    // The example driver's `describe` says 500.
    let config = search_driver(&search, "batchSize: 1000\n", "");
    let host = Host::start(&config).await;
    let events: Vec<Value> = (0..1200)
        .map(|i| insert("users", &format!("u{i}"), json!({"n": i})))
        .collect();
    host.send(Value::Array(events)).await;
    let status = host.drained("search").await;
    assert_eq!(status["deadLettered"], 0, "{status}");
    let sizes: Vec<usize> = search
        .received()
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).lines().count() / 2)
        .collect();
    assert_eq!(sizes.iter().sum::<usize>(), 1200, "{sizes:?}");
    assert!(sizes.iter().all(|&n| n <= 500), "{sizes:?}");
}

#[tokio::test]
async fn a_wasm_drivers_health_shows_in_the_status() {
    let search = Receiver::start().await;
    search.respond_with(bulk_api);
    search.script((0..3).map(|_| Answer {
        status: 503,
        retry_after: None,
    }));
    let config = search_driver(&search, "maxRetries: 10\nretryDelay: 300\n", "");
    let host = Host::start(&config).await;
    host.send(insert("users", "u1", json!({"name": "Ana"})))
        .await;
    let status = eventually(
        Duration::from_secs(20),
        "a degraded destination",
        || async {
            let r = host.replicator("search").await;
            r["destinationHealth"]
                .as_str()
                .is_some_and(|h| h.starts_with("degraded: "))
                .then_some(r)
        },
    )
    .await;
    assert!(
        status["destinationHealth"]
            .as_str()
            .unwrap()
            .contains("503"),
        "{status}"
    );
    // Once the index answers again, the driver says nothing is wrong.
    let status = host.drained("search").await;
    assert_eq!(status["deadLettered"], 0, "{status}");
    eventually(Duration::from_secs(10), "a healthy destination", || async {
        let r = host.replicator("search").await;
        r.get("destinationHealth").is_none().then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rust_driver_delivers_to_a_real_bulk_api() {
    let search = Receiver::start().await;
    search.respond_with(bulk_api);
    let config = search_driver(&search, "", "");
    let host = Host::start(&config).await;
    let seqs = host
        .send(json!([
            insert("users", "u1", json!({"name": "Ana"})),
            update("users", "u1", json!({"name": "Ana Lima"})),
            insert("users", "u2", json!({"name": "poison"})),
            delete("users", "u3"),
        ]))
        .await;
    let status = host.drained("search").await;
    assert_eq!(status["deadLettered"], 1, "{status}");
    let dl = host.dead_letters("replicator=search").await;
    assert_eq!(dl[0]["recordId"], "u2");
    assert!(
        dl[0]["error"].as_str().unwrap().contains("rejected"),
        "{}",
        dl[0]
    );

    let mut docs = Vec::new();
    for r in search.received() {
        assert_eq!(r.path, "/_bulk");
        assert_eq!(r.headers["content-type"], "application/x-ndjson");
        let text = String::from_utf8_lossy(&r.body).to_string();
        for line in text.lines() {
            let v: Value = serde_json::from_str(line).unwrap();
            if let Some(meta) = v.get("index").or(v.get("delete")) {
                docs.push((
                    meta["_index"].as_str().unwrap().to_string(),
                    meta["_id"].as_str().unwrap().to_string(),
                    meta["version"].as_u64().unwrap(),
                ));
            }
        }
    }
    assert!(
        docs.contains(&("app-users".into(), "u1".into(), seqs[1])),
        "the update carries its sequence as version: {docs:?}"
    );
    assert!(
        docs.contains(&("app-users".into(), "u3".into(), seqs[3])),
        "{docs:?}"
    );
}

#[tokio::test]
async fn a_driver_calling_a_host_off_its_allow_list_is_refused() {
    let allowed = Receiver::start().await;
    let bystander = Receiver::start().await;
    let config = format!(
        "maxRetries: 1\nretryDelay: 50\nreplicators:\n  - id: sneaky\n    driver: wasm\n    resources: [users]\n    config:\n      component: \"{}\"\n      allowHosts: [\"127.0.0.1:{}\"]\n      forbiddenUrl: \"http://localhost:{}/exfiltrate\"\n  - id: bystander\n    driver: webhook\n    resources: [users]\n    config: {{url: \"{}\"}}\n",
        guest("driver-forbidden-host").display(),
        allowed.port,
        allowed.port,
        bystander.url("/hook"),
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("users", "u1", json!({"secret": "x"})),
        insert("users", "u2", json!({"secret": "y"})),
    ]))
    .await;
    let dl = eventually(Duration::from_secs(20), "two dead letters", || async {
        let d = host.dead_letters("replicator=sneaky").await;
        (d.len() == 2).then_some(d)
    })
    .await;
    let mut ids: Vec<&str> = dl.iter().map(|d| d["recordId"].as_str().unwrap()).collect();
    ids.sort();
    assert_eq!(ids, ["u1", "u2"]);
    for d in &dl {
        let error = d["error"].as_str().unwrap().to_lowercase();
        assert!(
            error.contains(&format!(
                "refused its requests to localhost:{} (not in allowhosts)",
                allowed.port
            )),
            "the reason names the refused request: {d}"
        );
    }
    host.drained("bystander").await;
    assert_eq!(
        bystander.accepted().len(),
        2,
        "another replicator continues"
    );
    assert_eq!(host.healthz().await, 200);
    assert!(
        allowed.received().is_empty(),
        "the request never left the host"
    );
    let metrics = host.metrics().await;
    let denied: f64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "replicator_plugin_requests_denied_total{plugin=\"driver-forbidden-host.wasm\"} ",
            )
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0);
    assert!(denied >= 1.0, "{metrics}");
    assert!(
        host.log().contains("outbound request refused"),
        "the host logs the refusal itself"
    );
}

/// What a transform returns is held to intake's rules: an update whose data is an array, an
/// event for a resource no destination can hold, one without an id, and a fan-out past
/// `plugins.maxFanOut` are each dead-lettered with the reason; the host's memory stays bounded
/// while a record is made 200,000 events.
#[tokio::test]
async fn transform_output_is_checked_like_intake() {
    let receiver = Receiver::start().await;
    let config = format!(
        "plugins:\n  maxFanOut: 1000\nreplicators:\n  - id: checked\n    driver: webhook\n    resources:\n      users: {{transform: \"{}\"}}\n    config: {{url: \"{}\"}}\n",
        guest("bad-output").display(),
        receiver.url("/in"),
    );
    let host = Host::start(&config).await;
    host.send(json!([
        insert("users", "ok1", json!({})),
        insert("users", "array", json!({"misbehave": "array-data"})),
        insert("users", "fan", json!({"misbehave": "fan-out"})),
        insert("users", "slash", json!({"misbehave": "bad-resource"})),
        insert("users", "noid", json!({"misbehave": "no-id"})),
        insert("users", "ok2", json!({})),
    ]))
    .await;
    let status = host.drained("checked").await;
    assert_eq!(status["deadLettered"], 4, "{status}");
    let mut ids: Vec<String> = receiver
        .wait_for(2)
        .await
        .iter()
        .map(|r| r.json()["id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    assert_eq!(ids, ["ok1", "ok2"]);
    let reasons: BTreeMap<String, String> = host.dead_letter_reasons("replicator=checked").await;
    assert!(
        reasons["array"].contains("\"data\" must be an object or null, found an array"),
        "{reasons:?}"
    );
    assert!(
        reasons["fan"].contains("200000 events of one record, over plugins.maxFanOut (1000)"),
        "{reasons:?}"
    );
    assert!(
        reasons["slash"].contains("\"a/b\" cannot be held"),
        "{reasons:?}"
    );
    assert!(
        reasons["noid"].contains("\"id\" must not be empty"),
        "{reasons:?}"
    );
    let peak_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", host.pid().unwrap()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        peak_kib < 400 * 1024,
        "peak resident memory {peak_kib} KiB while a record was made 200,000 events"
    );
}
