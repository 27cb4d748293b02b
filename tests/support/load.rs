//! Load that survives crashes: senders that own their keys, post in order and resend a batch
//! until it is acknowledged (as a client of a crashed service would), and the ledger of what
//! was acknowledged, for the kill -9 tests.

use serde_json::{Value, json};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::{delete, update};

/// What the senders did: every acknowledged sequence, and the last event of each key.
#[derive(Default)]
pub struct Ledger {
    pub acked: HashSet<u64>,
    pub last: HashMap<String, Value>,
}

/// One sender's share of the load.
#[derive(Clone)]
pub struct Plan {
    /// Host base URL.
    pub base: String,
    pub resource: &'static str,
    /// The sender's number; its keys are `s<index>-k<n>`.
    pub index: usize,
    pub keys: usize,
    pub batch: usize,
    /// Wait between batches, to stay within what a slow destination drains in a test.
    pub pause: Duration,
}

/// Sends mostly updates and some deletes of the plan's keys until `stop`.
pub async fn sender(plan: Plan, stop: Arc<AtomicBool>, ledger: Arc<Mutex<Ledger>>) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let mut n = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let batch: Vec<Value> = (0..plan.batch)
            .map(|j| {
                n += 1;
                let key = format!("s{}-k{}", plan.index, (n as usize * 7 + j) % plan.keys);
                if n.is_multiple_of(9) {
                    delete(plan.resource, &key)
                } else {
                    update(plan.resource, &key, json!({"n": n, "sender": plan.index}))
                }
            })
            .collect();
        let body = json!(batch);
        let sequences = loop {
            match http
                .post(format!("{}/v1/events", plan.base))
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
        {
            let mut l = ledger.lock().unwrap();
            l.acked.extend(sequences);
            for e in batch {
                l.last.insert(e["id"].as_str().unwrap().to_string(), e);
            }
        }
        tokio::time::sleep(plan.pause).await;
    }
}

/// Runs `senders` senders against `host` through `rounds` kill -9 and restarts; returns the
/// ledger once they stopped.
pub async fn through_crashes(
    host: &mut crate::Host,
    plan: Plan,
    senders: usize,
    rounds: usize,
    between: Duration,
) -> Ledger {
    let stop = Arc::new(AtomicBool::new(false));
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let tasks: Vec<_> = (0..senders)
        .map(|index| {
            let plan = Plan {
                index,
                ..plan.clone()
            };
            tokio::spawn(sender(plan, stop.clone(), ledger.clone()))
        })
        .collect();
    for round in 0..rounds {
        tokio::time::sleep(between).await;
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
    std::mem::take(&mut *ledger.lock().unwrap())
}
