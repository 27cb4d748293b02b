//! The webhook driver and the shared pipeline behaviour (retries, Retry-After, dead letters,
//! redrive, batch isolation, per-key order), against a real HTTP receiver.

use replicator_tests::*;
use serde_json::json;
use std::collections::HashMap;
use std::time::Duration;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

fn webhook(receiver: &Receiver, extra: &str) -> String {
    format!(
        "replicators:\n  - id: hook\n    driver: webhook\n    resources: [users, orders]\n    config:\n      url: {}\n      retryDelay: 50\n{extra}",
        receiver.url("/hook")
    )
}

#[tokio::test]
async fn delivers_the_envelope_signed_with_standard_webhooks_headers() {
    let rx = Receiver::start().await;
    let host = Host::start(&webhook(
        &rx,
        &format!(
            "      signingSecret: {SECRET}\n      auth: {{type: bearer, token: tkn-123}}\n      headers: {{X-Source: s3db-test}}\n"
        ),
    ))
    .await;
    let seqs = host
        .send(json!([
            insert("users", "u1", json!({"name": "Ana"})),
            {"resource": "users", "action": "update", "id": "u1", "data": {"id": "u1", "name": "Ana B"}, "before": {"id": "u1", "name": "Ana"}, "source": "app-1"},
            delete("users", "u1"),
            insert("invoices", "i1", json!({})),
        ]))
        .await;
    let got = rx.wait_for(3).await;
    host.drained("hook").await;
    assert_eq!(
        got.len(),
        3,
        "the unconfigured resource 'invoices' is not sent"
    );
    let bodies: Vec<_> = got.iter().map(|r| r.json()).collect();
    assert_eq!(
        bodies
            .iter()
            .map(|b| b["action"].as_str().unwrap())
            .collect::<Vec<_>>(),
        ["insert", "update", "delete"]
    );
    let upd = &bodies[1];
    assert_eq!(upd["resource"], "users");
    assert_eq!(upd["id"], "u1");
    assert_eq!(upd["sequence"], seqs[1]);
    assert_eq!(upd["before"]["name"], "Ana");
    assert_eq!(upd["data"]["name"], "Ana B");
    assert_eq!(upd["source"], "app-1");
    assert!(upd["timestamp"].as_str().unwrap().ends_with('Z'));

    let wh = standardwebhooks::Webhook::new(SECRET).unwrap();
    for (r, seq) in got.iter().zip(&seqs) {
        assert_eq!(r.headers["authorization"], "Bearer tkn-123");
        assert_eq!(r.headers["x-source"], "s3db-test");
        assert_eq!(r.headers["content-type"], "application/json");
        assert_eq!(
            r.headers["webhook-id"].to_str().unwrap(),
            format!("users:u1:{seq}")
        );
        wh.verify(&r.body, &r.headers)
            .expect("the signature verifies with an independent implementation");
    }
    let log = host.log();
    assert!(!log.contains("tkn-123"), "the token never reaches the log");
}

#[tokio::test]
async fn retries_until_the_receiver_recovers() {
    let rx = Receiver::start().await;
    rx.script([
        Answer {
            status: 500,
            retry_after: None,
        },
        Answer {
            status: 503,
            retry_after: None,
        },
    ]);
    let host = Host::start(&webhook(&rx, "      retries: 3\n")).await;
    host.send(insert("users", "u1", json!({"name": "Ana"})))
        .await;
    let got = rx.wait_for(3).await;
    let status = host.drained("hook").await;
    assert_eq!(got.len(), 3);
    assert_eq!(got[2].path, "/hook");
    assert_eq!(status["delivered"], 1);
    assert_eq!(status["failed"], 2);
    assert_eq!(status["deadLettered"], 0);
    let log = host.get("/v1/log?replicator=hook&status=failed").await;
    assert_eq!(log["entries"].as_array().unwrap().len(), 2, "{log}");
    assert!(
        log["entries"][0]["error"]
            .as_str()
            .unwrap()
            .contains("HTTP 503")
    );
}

#[tokio::test]
async fn honours_retry_after() {
    let rx = Receiver::start().await;
    rx.script([Answer {
        status: 429,
        retry_after: Some("2"),
    }]);
    let host = Host::start(&webhook(&rx, "")).await;
    host.send(insert("users", "u1", json!({}))).await;
    let got = rx.wait_for(2).await;
    let waited = got[1].at - got[0].at;
    assert!(
        waited >= Duration::from_millis(1900),
        "retried after {waited:?} although Retry-After said 2 s"
    );
    host.drained("hook").await;
}

#[tokio::test]
async fn dead_letters_then_lets_the_key_continue_and_redrives() {
    let rx = Receiver::start().await;
    rx.refuse_containing("poison");
    let host = Host::start(&webhook(&rx, "      retries: 2\n")).await;
    // A permanent refusal is dead-lettered at once; the key's next event still goes out.
    host.send(json!([
        insert("users", "u1", json!({"note": "poison"})),
        update("users", "u1", json!({"note": "fine"})),
        insert("users", "u2", json!({"note": "fine"})),
    ]))
    .await;
    let status = host.drained("hook").await;
    assert_eq!(status["deadLettered"], 1);
    assert_eq!(status["delivered"], 2);
    let dl = host.dead_letters("replicator=hook").await;
    assert_eq!(dl.len(), 1);
    assert_eq!(dl[0]["recordId"], "u1");
    assert_eq!(dl[0]["attempts"].as_array().unwrap().len(), 1);
    assert!(
        dl[0]["error"].as_str().unwrap().contains("HTTP 400"),
        "{}",
        dl[0]
    );

    // Transient failures are dead-lettered after the last retry, with every attempt.
    rx.script((0..3).map(|_| Answer {
        status: 502,
        retry_after: None,
    }));
    host.send(insert("orders", "o1", json!({}))).await;
    let dl = eventually(Duration::from_secs(10), "second dead letter", || async {
        let d = host.dead_letters("resource=orders").await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(
        dl[0]["attempts"].as_array().unwrap().len(),
        3,
        "first attempt + 2 retries"
    );
    assert!(dl[0]["attempts"][0]["at"].is_string());

    // Redrive everything once the receiver accepts it.
    rx.refuse_containing("nothing-matches-this");
    let before = rx.accepted().len();
    let requests_before = rx.received().len();
    let (code, out) = host
        .post("/v1/dlq/redrive", json!({"replicator": "hook"}))
        .await;
    assert_eq!(code, 200, "{out}");
    assert_eq!(out["redriven"], 2);
    let got = rx.wait_for(requests_before + 2).await;
    let redelivered: Vec<_> = got
        .iter()
        .filter(|r| r.path == "/hook")
        .skip(before)
        .map(|r| r.json())
        .collect();
    assert_eq!(redelivered.len(), 2);
    let poison = redelivered.iter().find(|b| b["id"] == "u1").unwrap();
    assert_eq!(poison["sequence"], 1, "a redriven event keeps its sequence");
    eventually(
        Duration::from_secs(5),
        "an empty dead-letter queue",
        || async { host.dead_letters("").await.is_empty().then_some(()) },
    )
    .await;

    // Discard needs a selection.
    let (code, _) = host.post("/v1/dlq/discard", json!({})).await;
    assert_eq!(code, 400);
}

#[tokio::test]
async fn batch_mode_isolates_the_record_the_receiver_refuses() {
    let rx = Receiver::start().await;
    rx.refuse_containing("poison");
    let host = Host::start(&webhook(&rx, "      batch: true\n      batchSize: 16\n")).await;
    let events: Vec<_> = (0..16)
        .map(|i| {
            insert(
                "users",
                &format!("u{i}"),
                json!({"note": if i == 11 { "poison" } else { "ok" }}),
            )
        })
        .collect();
    host.send(json!(events)).await;
    let status = host.drained("hook").await;
    assert_eq!(status["deadLettered"], 1);
    assert_eq!(status["delivered"], 15);
    let dl = host.dead_letters("").await;
    assert_eq!(dl[0]["recordId"], "u11");
    let mut delivered: Vec<String> = rx
        .accepted()
        .iter()
        .flat_map(|r| {
            r.json()["batch"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        })
        .collect();
    delivered.sort();
    delivered.dedup();
    assert_eq!(
        delivered.len(),
        15,
        "every good record landed: {delivered:?}"
    );
    assert!(
        rx.accepted()[0].headers["webhook-id"]
            .to_str()
            .unwrap()
            .starts_with("batch_")
    );
}

#[tokio::test]
async fn keeps_per_key_order_while_keys_run_in_parallel() {
    let rx = Receiver::start().await;
    rx.delay(Duration::from_millis(3));
    // Failures sprinkled in: retried records must not let later ones of the same key overtake.
    rx.script((0..40).map(|i| Answer {
        status: if i % 3 == 0 { 500 } else { 200 },
        retry_after: None,
    }));
    let host = Host::start(&webhook(&rx, "      retries: 10\n").replace(
        "resources:",
        "concurrency: 8\n    batchSize: 10\n    resources:",
    ))
    .await;
    let keys = 20;
    let per_key = 15;
    for round in 0..per_key {
        let batch: Vec<_> = (0..keys)
            .map(|k| update("users", &format!("k{k}"), json!({"n": round})))
            .collect();
        host.send(json!(batch)).await;
    }
    let status = host.drained("hook").await;
    assert_eq!(status["delivered"], keys * per_key);
    let mut seen: HashMap<String, Vec<i64>> = HashMap::new();
    for r in rx.accepted() {
        let b = r.json();
        seen.entry(b["id"].as_str().unwrap().into())
            .or_default()
            .push(b["data"]["n"].as_i64().unwrap());
    }
    assert_eq!(seen.len(), keys as usize);
    for (k, ns) in seen {
        assert_eq!(ns, (0..per_key).collect::<Vec<_>>(), "order of key {k}");
    }
}

#[tokio::test]
async fn monitoring_stream_metrics_status_and_cli() {
    let rx = Receiver::start().await;
    rx.script([Answer {
        status: 418,
        retry_after: None,
    }]);
    let host = Host::start(&webhook(
        &rx,
        "      auth: {type: apikey, header: X-Api-Key, value: k-42}\n      retryOnStatus: [418]\n",
    ))
    .await;
    let mut stream = host.http.get(host.url("/v1/stream")).send().await.unwrap();
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    host.send(insert("users", "u1", json!({}))).await;
    let mut text = String::new();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        while let Some(chunk) = stream.chunk().await.unwrap() {
            text.push_str(&String::from_utf8_lossy(&chunk));
            if text.contains("event: replicated") {
                return;
            }
        }
    })
    .await;
    assert!(seen.is_ok(), "no replicated event in {text}");
    assert!(
        text.contains("event: replicator_error"),
        "the 418 attempt is streamed: {text}"
    );
    assert!(text.contains("\"replicator\":\"hook\"") && text.contains("\"sequence\":1"));
    let got = rx.received();
    assert_eq!(
        got[1].headers["x-api-key"], "k-42",
        "418 is retried because retryOnStatus lists it"
    );

    host.drained("hook").await;
    let metrics = host
        .http
        .get(host.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "replicator_events_delivered_total{replicator=\"hook\"} 1",
        "replicator_events_failed_total{replicator=\"hook\"} 1",
        "replicator_events_accepted_total 1",
        "replicator_backlog_events{replicator=\"hook\"} 0",
        "replicator_journal_to_delivered_seconds_count{replicator=\"hook\"} 1",
        "replicator_destination_call_seconds_bucket",
        "replicator_intake_to_journal_seconds_count 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    let ready = host.http.get(host.url("/readyz")).send().await.unwrap();
    assert_eq!(ready.status(), 200);

    let out = std::process::Command::new(binary())
        .args(["status", "--url", &host.url("")])
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("hook") && table.contains("running"),
        "{table}"
    );
    let out = std::process::Command::new(binary())
        .args(["dlq", "list", "--url", &host.url("")])
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["deadLetters"],
        json!([])
    );
}

#[tokio::test]
async fn an_attempt_that_outlives_its_timeout_is_retried_then_dead_lettered() {
    let rx = Receiver::start().await;
    rx.delay(Duration::from_millis(800));
    let host = Host::start(&webhook(&rx, "      timeout: 200\n      retries: 1\n")).await;
    host.send(insert("users", "u1", json!({}))).await;
    let dl = eventually(Duration::from_secs(10), "a dead letter", || async {
        let d = host.dead_letters("").await;
        (!d.is_empty()).then_some(d)
    })
    .await;
    assert_eq!(dl[0]["attempts"].as_array().unwrap().len(), 2);
    assert!(
        dl[0]["error"].as_str().unwrap().contains("timed out"),
        "{}",
        dl[0]
    );
    let out = std::process::Command::new(binary())
        .args([
            "dlq",
            "show",
            "--url",
            &host.url(""),
            &dl[0]["id"].to_string(),
        ])
        .output()
        .unwrap();
    assert!(out.status.success());
    let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(shown["event"]["event"]["id"], "u1");
}
