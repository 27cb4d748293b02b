//! kill -9 while events stream in: every event that got a 202 reaches PostgreSQL and the
//! webhook, and PostgreSQL ends in exactly the state the events describe, key by key. The
//! PostgreSQL route goes through a Wasm transform, so its outputs are held to the same promise.

use replicator_tests::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SENDERS: usize = 4;
const KEYS_PER_SENDER: usize = 25;
const BATCH: usize = 20;

/// What the senders did: every acknowledged sequence, and the last event of each key.
#[derive(Default)]
struct Ledger {
    acked: HashSet<u64>,
    last: HashMap<String, Value>,
}

/// One sender owns its keys and sends in order; on any failure it resends the same batch,
/// as a client of a crashed service would, until it is acknowledged.
async fn sender(index: usize, base: String, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<Value> = (0..BATCH)
            .map(|j| {
                n += 1;
                let key = format!("s{index}-k{}", (n as usize * 7 + j) % KEYS_PER_SENDER);
                // Mostly upserts, some deletes.
                if n.is_multiple_of(9) {
                    delete("items", &key)
                } else {
                    update("items", &key, json!({"n": n, "sender": index}))
                }
            })
            .collect();
        let body = json!(batch);
        let sequences = loop {
            match http
                .post(format!("{base}/v1/events"))
                .json(&body)
                .send()
                .await
            {
                Ok(r) if r.status() == 202 => {
                    let v: Value = r.json().await.unwrap();
                    break v["sequences"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|s| s.as_u64().unwrap())
                        .collect::<Vec<_>>();
                }
                _ => tokio::time::sleep(Duration::from_millis(30)).await,
            }
        };
        let mut l = ledger.lock().unwrap();
        l.acked.extend(sequences);
        for e in batch {
            l.last.insert(e["id"].as_str().unwrap().to_string(), e);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_event_survives_kill_9() {
    let pg = Pg::connect("crash").await;
    let rx = Receiver::start().await;
    let config = format!(
        "replicators:\n{}  - id: hook\n    driver: webhook\n    resources: [items]\n    config:\n      url: {}\n      retryDelay: 20\n",
        pg.replicator(
            "pg",
            &format!(
                "{{items: {{transform: {{component: \"{}\", config: {{addFields: {{via: wasm}}}}}}}}}}",
                guest("rust-transform").display()
            ),
            ""
        ),
        rx.url("/hook")
    );
    let mut host = Host::start(&config).await;
    let base = host.url("");
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tasks: Vec<_> = (0..SENDERS)
        .map(|i| tokio::spawn(sender(i, base.clone(), stop.clone(), ledger.clone())))
        .collect();

    for round in 0..3 {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let acked = ledger.lock().unwrap().acked.len();
        assert!(
            acked > 0,
            "round {round}: nothing acknowledged before the crash"
        );
        host.kill9();
        tokio::time::sleep(Duration::from_millis(200)).await;
        host.restart().await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    host.drained("pg").await;
    host.drained("hook").await;

    let ledger = std::mem::take(&mut *ledger.lock().unwrap());
    assert!(
        ledger.acked.len() >= 1000,
        "only {} events acknowledged",
        ledger.acked.len()
    );
    eprintln!(
        "{} events acknowledged across 3 kill -9; webhook got {} requests",
        ledger.acked.len(),
        rx.accepted().len()
    );

    // The webhook received every acknowledged sequence (redeliveries allowed, order per key kept).
    let mut delivered = HashSet::new();
    let mut per_key: HashMap<String, Vec<u64>> = HashMap::new();
    for r in rx.accepted() {
        let b = r.json();
        let seq = b["sequence"].as_u64().unwrap();
        let seqs = per_key
            .entry(b["id"].as_str().unwrap().to_string())
            .or_default();
        if delivered.insert(seq) {
            seqs.push(seq);
        }
    }
    let missing: Vec<_> = ledger
        .acked
        .iter()
        .filter(|s| !delivered.contains(s))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events never reached the webhook, e.g. {:?}",
        missing.len(),
        &missing[..missing.len().min(5)]
    );
    for (key, seqs) in per_key {
        assert!(
            seqs.windows(2).all(|w| w[0] < w[1]),
            "key {key} first deliveries out of order: {seqs:?}"
        );
    }

    // PostgreSQL holds exactly the last state of every key, each row as the transform made it.
    let expected: BTreeMap<String, Option<i64>> = ledger
        .last
        .iter()
        .map(|(k, e)| {
            (
                k.clone(),
                (e["action"] == "update").then(|| e["data"]["n"].as_i64().unwrap()),
            )
        })
        .collect();
    let actual: BTreeMap<String, Option<i64>> = pg
        .rows("items")
        .await
        .into_iter()
        .map(|r| {
            assert_eq!(r["via"], "wasm", "a row that skipped the transform: {r}");
            (
                r["id"].as_str().unwrap().to_string(),
                Some(r["n"].as_f64().unwrap() as i64),
            )
        })
        .collect();
    let expected_rows: BTreeMap<_, _> = expected.into_iter().filter(|(_, v)| v.is_some()).collect();
    assert_eq!(actual, expected_rows);
    let dl = host.dead_letters("").await;
    assert!(dl.is_empty(), "{dl:?}");
}
