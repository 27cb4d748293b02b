//! kill -9 while events stream in: every event that got a 202 reaches PostgreSQL and the
//! webhook, and PostgreSQL ends in exactly the state the events describe, key by key. The
//! PostgreSQL route goes through a Wasm transform, so its outputs are held to the same promise.

use replicator_tests::load::{Plan, through_crashes};
use replicator_tests::*;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

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
    let plan = Plan {
        base: host.url(""),
        resource: "items",
        index: 0,
        keys: 25,
        batch: 20,
        pause: Duration::ZERO,
    };
    let ledger = through_crashes(&mut host, plan, 4, 3, Duration::from_millis(700)).await;
    host.drained("pg").await;
    host.drained("hook").await;

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
