//! The sqs driver against a real SQS API (moto on 127.0.0.1): per-key order on FIFO queues
//! with every update delivered, standard and per-resource queues, message attributes, records
//! over the queue's limit (through S3, or dead-lettered), a batch SQS refuses because of one
//! record, a queue that appears late, and kill -9 with every acknowledged event in the queue.

use replicator_tests::load::{Plan, through_crashes};
use replicator_tests::sqs::{Received, Sqs, unique};
use replicator_tests::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

/// A replicator `id` of driver sqs with `resources` and extra `config` lines (indented by 6).
fn sqs_replicator(sqs: &Sqs, id: &str, resources: &str, config: &str) -> String {
    format!(
        "  - id: {id}\n    driver: sqs\n    resources: {resources}\n    retryDelay: 20\n    config:\n      region: us-east-1\n      endpoint: {}\n      credentials: {{accessKeyId: test, secretAccessKey: test-secret-key}}\n{config}",
        sqs.endpoint
    )
}

/// The messages' sequences per record id, in the order the queue handed them out.
fn per_key(messages: &[Received]) -> BTreeMap<String, Vec<u64>> {
    let mut keys: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for m in messages {
        keys.entry(m.id().to_string())
            .or_default()
            .push(m.sequence());
    }
    keys
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifo_keeps_each_key_in_order_and_delivers_every_update() {
    let sqs = Sqs::connect().await;
    let queue = sqs.create_queue(&unique("orders.fifo"), &[]).await;
    let config = format!(
        "replicators:\n{}",
        sqs_replicator(
            &sqs,
            "q",
            "[items]",
            &format!(
                "      queueUrl: {queue}\n      messageAttributes: {{source: {{DataType: String, StringValue: production-db}}}}\n"
            )
        )
    );
    let host = Host::start(&config).await;

    // 5 writers at once, each updating its 4 keys 10 times: inside SQS's 5-minute
    // deduplication window, where s3db.js's `resource:action:id` id keeps only the first.
    let writers: Vec<_> = (0..5)
        .map(|w| {
            let url = host.url("/v1/events");
            tokio::spawn(async move {
                let http = reqwest::Client::new();
                let mut sequences = Vec::new();
                for round in 0..10 {
                    let batch: Vec<Value> = (0..4)
                        .map(|k| update("items", &format!("w{w}-k{k}"), json!({"round": round})))
                        .collect();
                    let r = http.post(&url).json(&batch).send().await.unwrap();
                    assert_eq!(r.status(), 202);
                    let v: Value = r.json().await.unwrap();
                    sequences.extend(
                        v["sequences"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|s| s.as_u64().unwrap()),
                    );
                }
                sequences
            })
        })
        .collect();
    let mut sent = HashSet::new();
    for w in writers {
        sent.extend(w.await.unwrap());
    }
    host.drained("q").await;
    let messages = sqs
        .receive(&queue, sent.len(), Duration::from_secs(10))
        .await;
    assert_eq!(messages.len(), 200, "every update is a message of its own");
    let received: HashSet<u64> = messages.iter().map(Received::sequence).collect();
    assert_eq!(received, sent);

    let keys = per_key(&messages);
    assert_eq!(keys.len(), 20);
    for (key, sequences) in &keys {
        assert_eq!(sequences.len(), 10, "{key}: {sequences:?}");
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {sequences:?}"
        );
    }

    let m = &messages[0];
    let (id, sequence) = (m.id().to_string(), m.sequence());
    assert_eq!(m.group_id.as_deref(), Some(format!("items:{id}").as_str()));
    assert_eq!(
        m.deduplication_id.as_deref(),
        Some(format!("items:{id}:{sequence}").as_str())
    );
    assert_eq!(m.attributes["resource"], "items");
    assert_eq!(m.attributes["action"], "update");
    assert_eq!(m.attributes["id"], id);
    assert_eq!(m.attributes["sequence"], sequence.to_string());
    assert_eq!(m.attributes["source"], "production-db");
    assert_eq!(m.body["resource"], "items");
    assert_eq!(m.body["action"], "update");
    assert_eq!(m.body["data"]["id"], id.as_str());
    assert!(m.body["timestamp"].is_string(), "{}", m.body);

    let log = host.log();
    assert!(
        !log.contains("test-secret-key"),
        "the secret reached the log"
    );
    let status = host.get("/v1/status").await.to_string();
    assert!(!status.contains("test-secret-key"), "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_resource_reaches_its_own_queue() {
    let sqs = Sqs::connect().await;
    let users = sqs.create_queue(&unique("users"), &[]).await;
    let orders = sqs.create_queue(&unique("orders.fifo"), &[]).await;
    let carts_name = unique("carts");
    let carts = sqs.create_queue(&carts_name, &[]).await;
    let general = sqs.create_queue(&unique("general"), &[]).await;
    let resources =
        format!("{{users: true, orders: true, carts: {{queueName: {carts_name}}}, misc: true}}");
    let config = format!(
        "replicators:\n{}",
        sqs_replicator(
            &sqs,
            "q",
            &resources,
            &format!(
                "      queues: {{users: {users}, orders: {orders}}}\n      defaultQueue: {general}\n"
            )
        )
    );
    let host = Host::start(&config).await;
    for resource in ["users", "orders", "carts", "misc"] {
        host.send(json!([insert(resource, "r1", json!({"name": resource}))]))
            .await;
    }
    host.drained("q").await;
    for (url, resource, fifo) in [
        (&users, "users", false),
        (&orders, "orders", true),
        (&carts, "carts", false),
        (&general, "misc", false),
    ] {
        let got = sqs.receive(url, 1, Duration::from_secs(5)).await;
        assert_eq!(got.len(), 1, "{resource}: {got:?}");
        assert_eq!(got[0].body["resource"], resource);
        assert_eq!(got[0].attributes["resource"], resource);
        assert_eq!(got[0].group_id.is_some(), fifo, "{resource}: {got:?}");
        assert_eq!(
            got[0].deduplication_id.is_some(),
            fifo,
            "{resource}: {got:?}"
        );
    }
    // Nothing went anywhere else.
    let extra = sqs.receive(&general, 1, Duration::from_secs(1)).await;
    assert!(extra.is_empty(), "{extra:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_over_the_limit_go_through_s3_or_to_the_dead_letter_queue() {
    let sqs = Sqs::connect().await;
    let bucket = unique("large").to_lowercase();
    sqs.create_bucket(&bucket).await;
    let small = [("MaximumMessageSize", "1024")];
    let docs = sqs.create_queue(&unique("docs"), &small).await;
    let notes = sqs.create_queue(&unique("notes"), &small).await;
    let parts = sqs.create_queue(&unique("parts"), &[]).await;
    let config = format!(
        "replicators:\n{}{}",
        sqs_replicator(
            &sqs,
            "docs",
            "[docs]",
            &format!(
                "      queueUrl: {docs}\n      largePayloads: {{bucket: {bucket}, prefix: sqs-bodies}}\n"
            )
        ),
        sqs_replicator(
            &sqs,
            "notes",
            &format!("{{notes: {{queueUrl: {notes}}}, parts: {{queueUrl: {parts}}}}}"),
            ""
        )
    );
    let host = Host::start(&config).await;
    // Running: the queues and their limits were read.
    eventually(Duration::from_secs(10), "notes to start", || async {
        (host.replicator("notes").await["state"] == "running").then_some(())
    })
    .await;
    // The queue shrinks after the host read its limit: now SQS itself refuses the big record,
    // and with it the whole request it was in.
    sqs.set_attribute(&parts, "MaximumMessageSize", "1024")
        .await;

    let big = "x".repeat(3000);
    host.send(json!([
        insert("docs", "d-big", json!({"text": big})),
        insert("docs", "d-small", json!({"text": "hi"})),
        insert("notes", "n-big", json!({"text": big})),
        insert("notes", "n-small", json!({"text": "hi"})),
        insert("parts", "p1", json!({"text": "a"})),
        insert("parts", "p-big", json!({"text": big})),
        insert("parts", "p2", json!({"text": "b"})),
    ]))
    .await;
    host.drained("docs").await;
    host.drained("notes").await;

    let got = sqs.receive(&docs, 2, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 2, "{got:?}");
    let pointer = got
        .iter()
        .find(|m| m.body.is_array())
        .expect("the big record went as a pointer");
    assert_eq!(
        pointer.body[0],
        "software.amazon.payloadoffloading.PayloadS3Pointer"
    );
    assert_eq!(pointer.body[1]["s3BucketName"], bucket.as_str());
    let key = pointer.body[1]["s3Key"].as_str().unwrap();
    assert!(key.starts_with("sqs-bodies/docs/d-big/"), "{key}");
    let stored = sqs.object(&bucket, key).await;
    assert_eq!(stored["id"], "d-big");
    assert_eq!(stored["data"]["text"], big.as_str());
    assert_eq!(
        pointer.attributes["ExtendedPayloadSize"],
        serde_json::to_string(&stored).unwrap().len().to_string()
    );
    assert_eq!(pointer.attributes["id"], "d-big");

    let got = sqs.receive(&notes, 1, Duration::from_secs(5)).await;
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(got[0].id(), "n-small");
    let got = sqs.receive(&parts, 2, Duration::from_secs(5)).await;
    let mut ids: Vec<&str> = got.iter().map(Received::id).collect();
    ids.sort();
    assert_eq!(ids, ["p1", "p2"], "{got:?}");

    let reasons = host.dead_letter_reasons("replicator=notes").await;
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons["n-big"].contains("bytes, over the 1024 bytes")
            && reasons["n-big"].contains("largePayloads"),
        "{reasons:?}"
    );
    assert!(
        reasons["p-big"].contains("InvalidParameterValue"),
        "{reasons:?}"
    );
    assert!(host.dead_letters("replicator=docs").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_queue_is_waited_for_and_used_once_it_exists() {
    let sqs = Sqs::connect().await;
    let name = unique("late.fifo");
    let config = format!(
        "replicators:\n{}",
        sqs_replicator(&sqs, "q", "[items]", &format!("      queueName: {name}\n"))
    );
    let host = Host::start(&config).await;
    let sent = host
        .send(json!([
            insert("items", "a", json!({"n": 1})),
            update("items", "a", json!({"n": 2})),
            insert("items", "b", json!({"n": 1})),
        ]))
        .await;
    let status = eventually(
        Duration::from_secs(20),
        "the missing queue in the status",
        || async {
            let r = host.replicator("q").await;
            (r["state"] == "failing" && r["lastError"].is_string()).then_some(r)
        },
    )
    .await;
    let error = status["lastError"].as_str().unwrap();
    assert!(
        error.contains("does not exist") && error.contains(&name),
        "{status}"
    );
    assert_eq!(status["backlog"], 3, "{status}");
    eventually(
        Duration::from_secs(5),
        "the backlog in the metrics",
        || async {
            let metrics = host.metrics().await;
            metrics
                .contains("replicator_backlog_events{replicator=\"q\"} 3")
                .then_some(())
        },
    )
    .await;

    let url = sqs.create_queue(&name, &[]).await;
    let done = host.drained("q").await;
    assert_eq!(done["state"], "running", "{done}");
    let got = sqs.receive(&url, 3, Duration::from_secs(5)).await;
    let sequences: Vec<u64> = got.iter().map(Received::sequence).collect();
    let mut expected = sent.clone();
    expected.sort();
    let mut sorted = sequences.clone();
    sorted.sort();
    assert_eq!(sorted, expected);
    assert_eq!(per_key(&got)["a"], sent[..2].to_vec());
    assert!(host.dead_letters("").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_reaches_the_queue_across_kill_9() {
    let sqs = Sqs::connect().await;
    let queue = sqs.create_queue(&unique("crash.fifo"), &[]).await;
    let config = format!(
        "replicators:\n{}",
        sqs_replicator(&sqs, "q", "[items]", &format!("      queueUrl: {queue}\n"))
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
    let ledger = through_crashes(&mut host, plan, 2, 3, Duration::from_millis(400)).await;
    host.drained("q").await;
    assert!(
        ledger.acked.len() >= 100,
        "only {} acknowledged",
        ledger.acked.len()
    );

    // Redeliveries after a crash are allowed; SQS drops those inside its window.
    let messages = sqs
        .receive(&queue, usize::MAX, Duration::from_secs(3))
        .await;
    let mut first: HashMap<String, Vec<u64>> = HashMap::new();
    let mut seen = HashSet::new();
    for m in &messages {
        if seen.insert(m.sequence()) {
            first
                .entry(m.id().to_string())
                .or_default()
                .push(m.sequence());
        }
    }
    let missing: Vec<_> = ledger.acked.iter().filter(|s| !seen.contains(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events never reached the queue, e.g. {:?}",
        missing.len(),
        ledger.acked.len(),
        &missing[..missing.len().min(5)]
    );
    for (key, sequences) in first {
        assert!(
            sequences.windows(2).all(|w| w[0] < w[1]),
            "{key} out of order: {sequences:?}"
        );
    }
    eprintln!(
        "{} events acknowledged across 3 kill -9; the queue held {} messages",
        ledger.acked.len(),
        messages.len()
    );
}
