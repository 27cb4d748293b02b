//! End-to-end benchmark of the host against the real PostgreSQL, the S3 server, an SQS server
//! (fauxqs), the BigQuery emulator and an HTTP receiver, and of cluster mode (1, 2 and 3 hosts
//! on SQS FIFO queues).
//! Prints figures; asserts nothing. Run it with `tests/bench` (which starts PostgreSQL and
//! uses a release build of the host).

use replicator_tests::*;
use serde_json::json;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_micros() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as f64
}

/// A batch body of `n` inserts with ids starting at `first`, pre-serialised.
fn body(resource: &str, first: u64, n: u64) -> Vec<u8> {
    let events: Vec<_> = (first..first + n)
        .map(|i| insert(resource, &format!("r{i}"), json!({"name": format!("user {i}"), "email": format!("u{i}@example.com"), "age": i % 90, "active": i % 2 == 0, "plan": "pro", "score": 12.5})))
        .collect();
    serde_json::to_vec(&events).unwrap()
}

/// Posts pre-built bodies from `clients` tasks for `secs`; returns events/s.
async fn intake(host: &Host, clients: usize, per_request: u64, secs: u64) -> f64 {
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let url = host.url("/v1/events");
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let (stop, done, url) = (stop.clone(), done.clone(), url.clone());
            let http = reqwest::Client::new();
            let payload = if per_request == 1 {
                serde_json::to_vec(&insert(
                    "users",
                    &format!("c{c}"),
                    json!({"name": "Ana", "email": "ana@example.com", "age": 31}),
                ))
                .unwrap()
            } else {
                body("users", c as u64 * 1000, per_request)
            };
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(payload.clone())
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    done.fetch_add(per_request, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    done.load(Ordering::Relaxed) as f64 / start.elapsed().as_secs_f64()
}

/// Posts `total` inserts in batches from `clients` tasks.
async fn post_all(host: &Host, total: u64, batch: u64, clients: u64) {
    let http = reqwest::Client::new();
    let url = host.url("/v1/events");
    let posts: Vec<_> = (0..clients)
        .map(|c| {
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let mut i = c * batch;
                while i < total {
                    let r = http
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(body("users", i, batch.min(total - i)))
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    i += batch * clients;
                }
            })
        })
        .collect();
    for p in posts {
        p.await.unwrap();
    }
}

/// The value of one metric line.
async fn metric(host: &Host, series: &str) -> f64 {
    let text = reqwest::get(host.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// User plus system CPU time of a process so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) start at field 3.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..].split(' ').collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    // Linux reports in USER_HZ, 100 on every mainstream architecture.
    ticks / 100.0
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::main]
async fn main() {
    println!(
        "replicator benchmark ({} cores)",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );

    // BENCH_ONLY=intake,postgres,latency,s3db,transform,sqs,bigquery,backlog,capture,cluster
    // runs a subset.
    let only = std::env::var("BENCH_ONLY").unwrap_or_default();
    let run = |name: &str| only.is_empty() || only.split(',').any(|o| o == name);

    // 1. Durable intake.
    if run("intake") {
        let host = Host::start("").await;
        let singles = intake(&host, 64, 1, 5).await;
        println!("intake, single events (64 clients):        {singles:>10.0} events/s");
        let batches = intake(&host, 16, 100, 5).await;
        println!("intake, batches of 100 (16 clients):       {batches:>10.0} events/s");
    }

    // 2. Sustained end-to-end throughput into PostgreSQL.
    for batch_size in [100, 1000].into_iter().filter(|_| run("postgres")) {
        let pg = Pg::connect(&format!("bench_{batch_size}")).await;
        let host = Host::start(&format!(
            "replicators:\n{}",
            pg.replicator("pg", "[users]", "").replace(
                "    resources:",
                &format!("    batchSize: {batch_size}\n    resources:")
            )
        ))
        .await;
        let total = 200_000u64;
        let start = Instant::now();
        post_all(&host, total, 100, 8).await;
        let posted = start.elapsed();
        host.drained("pg").await;
        let elapsed = start.elapsed();
        let n: i64 = pg
            .client
            .query_one(&format!("SELECT count(*) FROM {}.users", pg.schema), &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(n as u64, total);
        println!(
            "end to end into PostgreSQL, batchSize {batch_size:>4}: {:>10.0} rows/s ({total} rows in {:.2} s; intake done after {:.2} s)",
            total as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            posted.as_secs_f64()
        );
    }

    // 3. Latency at a steady 5,000 events/s, to PostgreSQL (row visible) and to a webhook.
    if run("latency") {
        let pg = Pg::connect("bench_latency").await;
        let visible = row_latencies(&pg, "\"sentAt\" double precision", "sentAt").await;
        let pg_latencies = visible.samples.clone();
        let rx = Receiver::start().await;
        let config = format!(
            "replicators:\n{}  - id: hook\n    driver: webhook\n    resources: [events]\n    config:\n      url: {}\n",
            pg.replicator("pg", "[events]", ""),
            rx.url("/hook")
        );
        let host = Host::start(&config).await;
        let http = reqwest::Client::new();
        let url = host.url("/v1/events");
        let mut tick = tokio::time::interval(Duration::from_millis(10));
        let seconds = 10u64;
        let mut id = 0u64;
        for _ in 0..seconds * 100 {
            tick.tick().await;
            let sent = now_micros();
            let events: Vec<_> = (0..50)
                .map(|_| {
                    id += 1;
                    insert("events", &format!("e{id}"), json!({"sentAt": sent}))
                })
                .collect();
            let (http, url) = (http.clone(), url.clone());
            tokio::spawn(async move {
                let r = http.post(&url).json(&events).send().await.unwrap();
                assert_eq!(r.status(), 202);
            });
        }
        host.drained("pg").await;
        host.drained("hook").await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let mut pg_ms = pg_latencies.lock().unwrap().clone();
        let mut hook_ms: Vec<f64> = rx
            .accepted()
            .iter()
            .map(|r| {
                let sent = r.json()["data"]["sentAt"].as_f64().unwrap();
                (r.at_wall_micros - sent) / 1000.0
            })
            .collect();
        for (name, v) in [
            ("PostgreSQL (row visible)", &mut pg_ms),
            ("webhook (request received)", &mut hook_ms),
        ] {
            v.sort_by(f64::total_cmp);
            println!(
                "latency at 5,000 events/s to {name:<27} p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} events)",
                percentile(v, 0.5),
                percentile(v, 0.99),
                v[v.len() - 1],
                v.len()
            );
        }
    }

    // 4. Into s3db: a directory and the local S3 server; requests per event; backfill.
    let targets = if run("s3db") {
        vec![
            ("file://", S3dbTarget::file(), 20_000u64),
            ("local S3 server", S3dbTarget::s3("bench"), 5_000),
        ]
    } else {
        vec![]
    };
    for (label, target, total) in &targets {
        let total = *total;
        let host = Host::start(&format!(
            "replicators:\n  - id: s3db\n    driver: s3db\n    resources: [users]\n    config: {{connectionString: \"{}\"}}\n",
            target.conn
        ))
        .await;
        let start = Instant::now();
        post_all(&host, total, 100, 4).await;
        host.drained("s3db").await;
        let elapsed = start.elapsed();
        let requests = metric(
            &host,
            "replicator_destination_requests_total{replicator=\"s3db\"}",
        )
        .await;
        println!(
            "into s3db on {label:<16} {:>8.0} events/s ({total} inserts in {:.2} s), {:.3} requests per event",
            total as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            requests / total as f64
        );
        // Backfill: read every record back and send it through a replicator-less host.
        let sink = Host::start("").await;
        let dir = tempfile::tempdir().unwrap();
        let start = Instant::now();
        let out = std::process::Command::new(binary())
            .args([
                "backfill",
                "--source",
                &target.conn,
                "--url",
                &sink.url(""),
                "--checkpoint",
            ])
            .arg(dir.path().join("cp.json"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        println!(
            "backfill from s3db on {label:<16} {:>4.0} records/s ({total} records in {:.2} s, read, converted and made durable)",
            total as f64 / start.elapsed().as_secs_f64(),
            start.elapsed().as_secs_f64()
        );
    }

    // 5. End to end into PostgreSQL with a Wasm transform in the path, against without: three
    // rounds taken in turn, medians compared (one pair of runs is at the mercy of noise here).
    if run("transform") {
        let rust_transform = guest("rust-transform");
        let mut rates: [Vec<f64>; 2] = [Vec::new(), Vec::new()];
        for round in 0..3 {
            for with_transform in [false, true] {
                let pg = Pg::connect(&format!("bench_transform_{with_transform}_{round}")).await;
                let resources = if with_transform {
                    format!("{{users: {{transform: \"{}\"}}}}", rust_transform.display())
                } else {
                    "[users]".to_string()
                };
                let host = Host::start(&format!(
                    "replicators:\n{}",
                    pg.replicator("pg", &resources, "")
                        .replace("    resources:", "    batchSize: 1000\n    resources:")
                ))
                .await;
                let total = 100_000u64;
                let start = Instant::now();
                post_all(&host, total, 100, 8).await;
                host.drained("pg").await;
                let rate = total as f64 / start.elapsed().as_secs_f64();
                rates[usize::from(with_transform)].push(rate);
                println!(
                    "end to end into PostgreSQL {} {rate:>8.0} rows/s",
                    if with_transform {
                        "with the Rust transform:"
                    } else {
                        "without a transform:    "
                    }
                );
            }
        }
        for v in &mut rates {
            v.sort_by(f64::total_cmp);
        }
        let (without, with) = (percentile(&rates[0], 0.5), percentile(&rates[1], 0.5));
        println!(
            "medians: {without:.0} rows/s without, {with:.0} with; a Wasm transform in the path costs {:.1}% of end-to-end throughput",
            (1.0 - with / without) * 100.0
        );
    }

    // 6. Into SQS (the fastest local server, fauxqs, started by tests/bench.sh): a FIFO queue
    // grouped by key and a standard queue; requests per event and host CPU per event.
    if run("sqs") {
        let sqs = replicator_tests::sqs::Sqs::connect().await;
        for (label, name) in [("FIFO", "bench.fifo"), ("standard", "bench")] {
            // By name: fauxqs answers with URLs whose host does not parse.
            let name = replicator_tests::sqs::unique(name);
            let url = sqs.create_queue(&name, &[]).await;
            let host = Host::start(&format!(
                "replicators:\n  - id: sqs\n    driver: sqs\n    resources: [users]\n    config: {{endpoint: \"{}\", queueName: \"{name}\", credentials: {{accessKeyId: test, secretAccessKey: test}}}}\n",
                sqs.endpoint
            ))
            .await;
            host.drained("sqs").await;
            let total = 20_000u64;
            let pid = host.pid().unwrap();
            let cpu_before = cpu_seconds(pid);
            let start = Instant::now();
            post_all(&host, total, 100, 4).await;
            host.drained("sqs").await;
            let elapsed = start.elapsed();
            let cpu = cpu_seconds(pid) - cpu_before;
            let requests = metric(
                &host,
                "replicator_destination_requests_total{replicator=\"sqs\"}",
            )
            .await;
            let held = sqs.approximate_messages(&url).await;
            println!(
                "into SQS ({label:<8}) {:>8.0} events/s ({total} inserts in {:.2} s), {:.3} requests per event, host CPU {:.0} µs per event (intake included); the queue holds {held}",
                total as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64(),
                requests / total as f64,
                cpu * 1e6 / total as f64
            );
        }
    }

    // 7. Into the BigQuery emulator: rows/s per mode, requests per row, and for `mutable` how
    // long a MERGE takes as the number of ids (the size of the pruned staging table) grows.
    if run("bigquery") {
        let bq = replicator_tests::bigquery::Bq::connect();
        for (mode, total) in [
            ("append-only", 10_000u64),
            ("immutable", 10_000),
            ("mutable", 1_000),
            ("mutable", 10_000),
        ] {
            let dataset = replicator_tests::bigquery::Bq::unique_dataset("bench");
            let host = Host::start(&format!(
                "replicators:\n  - id: bq\n    driver: bigquery\n    resources: [users]\n    config: {{projectId: {}, datasetId: {dataset}, endpoint: \"{}\", mutability: {mode}, mergeInterval: 1s}}\n",
                bq.project, bq.base
            ))
            .await;
            let start = Instant::now();
            post_all(&host, total, 100, 4).await;
            host.drained("bq").await;
            let elapsed = start.elapsed();
            let requests = metric(
                &host,
                "replicator_destination_requests_total{replicator=\"bq\"}",
            )
            .await;
            let mut merged = String::new();
            if mode == "mutable" {
                let count = format!("SELECT COUNT(*) AS c FROM `{}.{dataset}.users`", bq.project);
                let want = total.to_string();
                loop {
                    let rows = bq.query(&count).await;
                    if rows[0]["c"].as_str() == Some(want.as_str()) {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // The MERGEs the driver logged: how long each took.
                tokio::time::sleep(Duration::from_millis(1500)).await;
                let ms: Vec<f64> = host
                    .log()
                    .lines()
                    .filter(|l| l.contains(" merged "))
                    .filter_map(|l| {
                        l.split(" ms=")
                            .nth(1)?
                            .split_whitespace()
                            .next()?
                            .parse()
                            .ok()
                    })
                    .collect();
                merged = format!(
                    "; table complete after {:.2} s; {} MERGEs, the first {:.0} ms, the last {:.0} ms",
                    start.elapsed().as_secs_f64(),
                    ms.len(),
                    ms.first().copied().unwrap_or(0.0),
                    ms.last().copied().unwrap_or(0.0)
                );
            }
            println!(
                "into BigQuery emulator ({mode:<11}) {:>6.0} rows/s ({total} inserts in {:.2} s), {:.3} requests per row{merged}",
                total as f64 / elapsed.as_secs_f64(),
                elapsed.as_secs_f64(),
                requests / total as f64
            );
        }
    }

    // 8. Memory with a backlog of 1,000,000 events while the destination is down.
    if run("backlog") {
        let port = free_port(); // nothing listens there
        let host = Host::start(&format!(
            "replicators:\n  - id: down\n    driver: webhook\n    resources: [users]\n    config:\n      url: http://127.0.0.1:{port}/hook\n"
        ))
        .await;
        let total = 1_000_000u64;
        let start = Instant::now();
        post_all(&host, total, 1000, 4).await;
        tokio::time::sleep(Duration::from_secs(5)).await;
        let status = host.replicator("down").await;
        let pid = host.pid().unwrap();
        println!(
            "backlog of {} events, destination down: peak RSS {:.1} MB, RSS now {:.1} MB (posted in {:.1} s)",
            status["backlog"],
            rss_kib(pid, "VmHWM:") as f64 / 1024.0,
            rss_kib(pid, "VmRSS:") as f64 / 1024.0,
            start.elapsed().as_secs_f64()
        );
    }

    // 9. Change capture: from an s3db.js write (another process, no plugin) to the PostgreSQL
    // row through S3 notifications (moto), and what a polling pass costs per 10,000 objects.
    if run("capture") {
        capture_latency(50, 20).await;
        polling_cost("file://", S3dbTarget::file()).await;
        polling_cost("the S3 test server", S3dbTarget::s3("bench-poll")).await;
    }

    // 10. Cluster mode: 1, 2 and 3 hosts whose durable log is SQS FIFO queues, into a webhook;
    // throughput, intake rate, latency of a light stream against the local journal's, CPU.
    if run("cluster") {
        cluster().await;
    }
}

/// Creates `events` (`id`, `columns`, `_sequence`) in the test's schema and collects, for every
/// row that becomes visible, the milliseconds since the time its column `stamp` holds
/// (microseconds since the epoch): a trigger notifies when the row's transaction commits.
async fn row_latencies(pg: &Pg, columns: &str, stamp: &str) -> RowLatencies {
    let s = &pg.schema;
    pg.client
        .batch_execute(&format!(
            "CREATE TABLE {s}.events (id text PRIMARY KEY, {columns}, _sequence bigint NOT NULL, _replicated_at timestamptz NOT NULL DEFAULT now());
             CREATE FUNCTION {s}.visible() RETURNS trigger AS $$ BEGIN PERFORM pg_notify('visible', NEW.id || ' ' || NEW.\"{stamp}\"::text); RETURN NEW; END $$ LANGUAGE plpgsql;
             CREATE TRIGGER visible AFTER INSERT OR UPDATE ON {s}.events FOR EACH ROW EXECUTE FUNCTION {s}.visible();"
        ))
        .await
        .unwrap();
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let (listener, mut conn) = tokio_postgres::connect(&pg.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    let sink = latencies.clone();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = std::future::poll_fn(|cx| conn.poll_message(cx)).await {
            if let tokio_postgres::AsyncMessage::Notification(n) = msg {
                let stamped: f64 = n.payload().split(' ').nth(1).unwrap().parse().unwrap();
                sink.lock().unwrap().push((now_micros() - stamped) / 1000.0);
            }
        }
    });
    listener.batch_execute("LISTEN visible").await.unwrap();
    RowLatencies {
        samples: latencies,
        _listener: listener,
    }
}

/// Latencies of rows becoming visible, in milliseconds, while the listening client lives.
struct RowLatencies {
    samples: Arc<std::sync::Mutex<Vec<f64>>>,
    _listener: tokio_postgres::Client,
}

/// Now as the host writes times (RFC 3339, milliseconds, UTC), which sort as text.
fn event_time_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Runs tests/js/capture-bench.mjs; returns its JSON line.
fn s3db_js(args: &[&str]) -> serde_json::Value {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("js/capture-bench.mjs");
    let out = std::process::Command::new("node")
        .arg(script)
        .args(args)
        .output()
        .expect("node runs (tests/servers/s3db-js.sh install)");
    assert!(
        out.status.success(),
        "capture-bench.mjs {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `rate` s3db.js inserts a second for `seconds` into a bucket that notifies moto's SQS; the
/// time from the start of each insert to its row being visible in PostgreSQL.
async fn capture_latency(rate: u64, seconds: u64) {
    let sqs = replicator_tests::sqs::Sqs::moto().await;
    let (bucket, queue) = sqs.notified_bucket("bench-capture").await;
    let database = sqs.database(&bucket, "app");
    let pg = Pg::connect("bench_capture").await;
    let latencies = row_latencies(
        &pg,
        "\"writtenAt\" double precision, payload text",
        "writtenAt",
    )
    .await;
    let latencies = &latencies.samples;
    let mut source = sqs.notifications_source("app", &database, &queue);
    source = source.replace("waitTimeSeconds: 1", "waitTimeSeconds: 20");
    let host = Host::start(&format!(
        "sources:\n{source}replicators:\n{}",
        pg.replicator("pg", "[events]", "")
    ))
    .await;
    let (rate_text, seconds_text) = (rate.to_string(), seconds.to_string());
    let wrote = tokio::task::spawn_blocking(move || {
        s3db_js(&["stream", &database, &rate_text, &seconds_text])
    })
    .await
    .unwrap();
    let total = (rate * seconds) as usize;
    eventually(Duration::from_secs(120), "every captured row", || async {
        (latencies.lock().unwrap().len() >= total).then_some(())
    })
    .await;
    let mut l = latencies.lock().unwrap().clone();
    l.sort_by(f64::total_cmp);
    let status = host.get("/v1/status").await["sources"][0].clone();
    println!(
        "capture, s3db.js write -> PostgreSQL row, notifications (moto), {rate} writes/s: p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} writes in {:.1} s, {} requests)",
        percentile(&l, 0.50),
        percentile(&l, 0.99),
        l.last().copied().unwrap_or(0.0),
        l.len(),
        wrote["seconds"].as_f64().unwrap_or(0.0),
        metric(&host, "replicator_capture_requests_total{source=\"app\"}").await
    );
    assert_eq!(status["captured"]["insert"], total as u64, "{status}");
}

/// The source's last complete polling pass, once `want` accepts it.
async fn last_pass(host: &Host, want: impl Fn(&serde_json::Value) -> bool) -> serde_json::Value {
    eventually(Duration::from_secs(300), "a polling pass", || async {
        let p = host.get("/v1/status").await["sources"][0]["lastPass"].clone();
        (p.is_object() && want(&p)).then_some(p)
    })
    .await
}

/// A pass over 10,000 records: the first (every record new), one with nothing changed, and
/// one after 100 updates (the host stopped meanwhile, so one pass holds them all).
async fn polling_cost(label: &str, db: S3dbTarget) {
    let objects = 10_000u64;
    let conn = db.conn.clone();
    let filled =
        tokio::task::spawn_blocking(move || s3db_js(&["fill", &conn, &objects.to_string()]))
            .await
            .unwrap();
    let config = format!(
        "sources:\n  - id: poll\n    connectionString: {}\n    poll: 1s\n",
        db.conn
    );
    let mut host = Host::start(&config).await;
    let first = last_pass(&host, |p| p["changes"] == objects).await;
    // Records read within 5 s of their last write are read again next pass: measure a pass
    // that starts once they have settled.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let settled = event_time_now();
    let started_before =
        last_pass(&host, |p| p["finishedAt"].as_str() > Some(settled.as_str())).await;
    let idle = last_pass(&host, |p| p["finishedAt"] != started_before["finishedAt"]).await;
    host.stop();
    let conn = db.conn.clone();
    tokio::task::spawn_blocking(move || s3db_js(&["touch", &conn, "100"]))
        .await
        .unwrap();
    host.restart().await;
    let touched = last_pass(&host, |_| true).await;
    for (what, p) in [
        ("first pass (all new)", &first),
        ("nothing changed", &idle),
        ("100 records updated", &touched),
    ] {
        println!(
            "capture, polling {label:<18} {} records, {what:<20}: {:>7.2} s, {:>6} requests, {:>6} changes",
            p["objects"],
            p["seconds"].as_f64().unwrap_or(0.0),
            p["requests"],
            p["changes"]
        );
    }
    println!(
        "capture, polling {label:<18} (s3db.js wrote the 10,000 records in {:.1} s)",
        filled["seconds"].as_f64().unwrap_or(0.0)
    );
}

/// Events of the cluster throughput runs (`BENCH_CLUSTER_EVENTS`, default 20,000).
fn cluster_events() -> u64 {
    std::env::var("BENCH_CLUSTER_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000)
}

/// Keys the cluster runs spread their events over (a key is a FIFO message group).
const CLUSTER_KEYS: u64 = 500;

/// Events of the throughput runs are numbered from here; the light stream's from 0.
const HEAVY_FIRST: u64 = 1_000_000;

/// The SQS server at `endpoint`, named by the pid file of the script that started it
/// (`tests/servers/fauxqs.sh`, `tests/servers/sqs.sh`), with its process id (for its CPU time).
fn sqs_server(endpoint: &str) -> (String, Option<u32>) {
    let run = std::env::var("INFRA_RUN").unwrap_or_else(|_| "/tmp/replicator-infra/run".into());
    let port = endpoint
        .trim_end_matches('/')
        .rsplit(':')
        .next()
        .unwrap_or("");
    for (name, file) in [("fauxqs", "fauxqs.pid"), ("moto", "sqs.pid")] {
        let pid = std::fs::read_to_string(format!("{run}/{file}"))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        let Some(pid) = pid else { continue };
        let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        if cmdline.split(|b| *b == 0).any(|arg| arg == port.as_bytes()) {
            return (name.to_string(), Some(pid));
        }
    }
    (format!("the SQS server at {endpoint}"), None)
}

/// Up to `max` messages (body, receipt) from `url`, hidden for 30 s.
async fn receive_some(
    c: &aws_sdk_sqs::Client,
    url: &str,
    max: i32,
) -> Result<Vec<(String, String)>, String> {
    let answer = c
        .receive_message()
        .queue_url(url)
        .max_number_of_messages(max)
        .visibility_timeout(30)
        .wait_time_seconds(1)
        .send()
        .await
        .map_err(|e| format!("ReceiveMessage with VisibilityTimeout: {e:?}"))?;
    Ok(answer
        .messages
        .unwrap_or_default()
        .into_iter()
        .map(|m| {
            (
                m.body.unwrap_or_default(),
                m.receipt_handle.unwrap_or_default(),
            )
        })
        .collect())
}

/// Messages `url` holds, visible and handed out (GetQueueAttributes).
async fn held(c: &aws_sdk_sqs::Client, url: &str) -> Result<u64, String> {
    use aws_sdk_sqs::types::QueueAttributeName as A;
    let answer = c
        .get_queue_attributes()
        .queue_url(url)
        .attribute_names(A::ApproximateNumberOfMessages)
        .attribute_names(A::ApproximateNumberOfMessagesNotVisible)
        .send()
        .await
        .map_err(|e| format!("GetQueueAttributes: {e:?}"))?;
    let attributes = answer.attributes.unwrap_or_default();
    Ok([
        A::ApproximateNumberOfMessages,
        A::ApproximateNumberOfMessagesNotVisible,
    ]
    .iter()
    .filter_map(|a| attributes.get(a)?.parse::<u64>().ok())
    .sum())
}

/// Checks, on a FIFO queue of its own, every SQS call and FIFO behaviour cluster mode relies
/// on; the first one missing or unlike SQS, described.
async fn fifo_check(endpoint: &str) -> Result<(), String> {
    use aws_sdk_sqs::types::{
        ChangeMessageVisibilityBatchRequestEntry, DeleteMessageBatchRequestEntry,
        QueueAttributeName, SendMessageBatchRequestEntry,
    };
    let c = replicator_tests::sqs::Sqs::connect_to(endpoint.to_string())
        .await
        .client;
    let url = c
        .create_queue()
        .queue_name(replicator_tests::sqs::unique("bench-check.fifo"))
        .attributes(QueueAttributeName::FifoQueue, "true")
        .attributes(QueueAttributeName::VisibilityTimeout, "30")
        .send()
        .await
        .map_err(|e| format!("CreateQueue FifoQueue=true: {e:?}"))?
        .queue_url
        .ok_or("CreateQueue answered without a URL")?;
    // Two messages of group a, one of group b, and a1 again (same deduplication id).
    let entries = [
        ("a", "d1", "a1"),
        ("a", "d2", "a2"),
        ("b", "d3", "b1"),
        ("a", "d1", "a1 again"),
    ]
    .iter()
    .enumerate()
    .map(|(i, (group, dedup, body))| {
        SendMessageBatchRequestEntry::builder()
            .id(i.to_string())
            .message_group_id(*group)
            .message_deduplication_id(*dedup)
            .message_body(*body)
            .build()
            .unwrap()
    })
    .collect();
    let sent = c
        .send_message_batch()
        .queue_url(&url)
        .set_entries(Some(entries))
        .send()
        .await
        .map_err(|e| format!("SendMessageBatch with group and deduplication ids: {e:?}"))?;
    if !sent.failed.is_empty() {
        return Err(format!("SendMessageBatch refused {:?}", sent.failed));
    }
    let bodies = |m: &[(String, String)]| m.iter().map(|(b, _)| b.clone()).collect::<Vec<_>>();
    let first = receive_some(&c, &url, 1).await?;
    if bodies(&first) != ["a1"] {
        return Err(format!(
            "FIFO order: first receive gave {:?}, not [a1]",
            bodies(&first)
        ));
    }
    // a1 is in flight: a2 must wait (group locking); b1 may come.
    let second = receive_some(&c, &url, 10).await?;
    if bodies(&second) != ["b1"] {
        return Err(format!(
            "FIFO group locking or deduplication: with a1 in flight a receive gave {:?}, not [b1]",
            bodies(&second)
        ));
    }
    let back = c
        .change_message_visibility_batch()
        .queue_url(&url)
        .entries(
            ChangeMessageVisibilityBatchRequestEntry::builder()
                .id("0")
                .receipt_handle(&first[0].1)
                .visibility_timeout(0)
                .build()
                .unwrap(),
        )
        .send()
        .await
        .map_err(|e| format!("ChangeMessageVisibilityBatch: {e:?}"))?;
    if !back.failed.is_empty() {
        return Err(format!(
            "ChangeMessageVisibilityBatch refused {:?}",
            back.failed
        ));
    }
    // a1 handed back: it comes again before a2 (which may come in the same receive).
    let mut third = receive_some(&c, &url, 10).await?;
    if !matches!(bodies(&third).as_slice(), [a] | [a, _] if a == "a1")
        || bodies(&third).get(1).is_some_and(|b| b != "a2")
    {
        return Err(format!(
            "ChangeMessageVisibilityBatch to 0 then receive gave {:?}, not [a1] or [a1, a2]",
            bodies(&third)
        ));
    }
    let n = held(&c, &url).await?;
    if n != 3 {
        return Err(format!("GetQueueAttributes counts {n} messages, not 3"));
    }
    let mut receipts: Vec<String> = second
        .into_iter()
        .chain(third.drain(..))
        .map(|m| m.1)
        .collect();
    loop {
        let entries = receipts
            .iter()
            .enumerate()
            .map(|(i, r)| {
                DeleteMessageBatchRequestEntry::builder()
                    .id(i.to_string())
                    .receipt_handle(r)
                    .build()
                    .unwrap()
            })
            .collect();
        let deleted = c
            .delete_message_batch()
            .queue_url(&url)
            .set_entries(Some(entries))
            .send()
            .await
            .map_err(|e| format!("DeleteMessageBatch: {e:?}"))?;
        if !deleted.failed.is_empty() {
            return Err(format!("DeleteMessageBatch refused {:?}", deleted.failed));
        }
        let rest = receive_some(&c, &url, 10).await?;
        if rest.is_empty() {
            break;
        }
        if bodies(&rest) != ["a2"] {
            return Err(format!(
                "after the deletes a receive gave {:?}",
                bodies(&rest)
            ));
        }
        receipts = rest.into_iter().map(|m| m.1).collect();
    }
    let n = held(&c, &url).await?;
    if n != 0 {
        return Err(format!(
            "GetQueueAttributes counts {n} messages after deleting all"
        ));
    }
    let _ = c.delete_queue().queue_url(&url).send().await;
    Ok(())
}

/// When an event was sent and when it first arrived (wall-clock µs since the epoch, and as an
/// instant).
type Arrival = (f64, f64, Instant);

/// The first arrival at the webhook of each event, by its `n`.
#[derive(Clone, Default)]
struct Arrivals(Arc<std::sync::Mutex<std::collections::HashMap<u64, Arrival>>>);

impl Arrivals {
    /// Records what `rx` receives (and answers 200 at once).
    fn record(rx: &Receiver) -> Arrivals {
        let arrivals = Arrivals::default();
        let sink = arrivals.0.clone();
        rx.respond_with(move |body| {
            let (at, at_micros) = (Instant::now(), now_micros());
            if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body)
                && let Some(n) = v["data"]["n"].as_u64()
            {
                let sent = v["data"]["sentAt"].as_f64().unwrap_or(0.0);
                sink.lock()
                    .unwrap()
                    .entry(n)
                    .or_insert((sent, at_micros, at));
            }
            (200, "{}".into())
        });
        arrivals
    }

    /// Waits until every event numbered in `range` arrived; returns their (sent, arrived wall
    /// µs, arrived instant).
    async fn all(&self, range: std::ops::Range<u64>) -> Vec<Arrival> {
        let want = (range.end - range.start) as usize;
        eventually(
            Duration::from_secs(600),
            "every event at the webhook",
            || async {
                let map = self.0.lock().unwrap();
                let got: Vec<_> = map
                    .iter()
                    .filter(|(n, _)| range.contains(n))
                    .map(|(_, a)| *a)
                    .collect();
                (got.len() == want).then_some(got)
            },
        )
        .await
    }
}

/// One event of the cluster runs: key `k<n mod keys>`, carrying its number and send time.
fn numbered(n: u64) -> serde_json::Value {
    insert(
        "items",
        &format!("k{}", n % CLUSTER_KEYS),
        json!({"n": n, "sentAt": now_micros(), "name": format!("item {n}")}),
    )
}

/// `rate` single-event posts a second for `secs`, to the hosts in turn; the milliseconds from
/// each post to its arrival at the webhook, sorted.
async fn light_stream(hosts: &[Host], arrivals: &Arrivals, rate: u64, secs: u64) -> Vec<f64> {
    let http = reqwest::Client::new();
    let urls: Vec<String> = hosts.iter().map(|h| h.url("/v1/events")).collect();
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
    let total = rate * secs;
    let mut posts = Vec::new();
    for n in 0..total {
        tick.tick().await;
        let body = json!([numbered(n)]);
        let (http, url) = (http.clone(), urls[n as usize % urls.len()].clone());
        posts.push(tokio::spawn(async move {
            let r = http.post(&url).json(&body).send().await.unwrap();
            assert_eq!(r.status(), 202);
        }));
    }
    for p in posts {
        p.await.unwrap();
    }
    let mut ms: Vec<f64> = arrivals
        .all(0..total)
        .await
        .iter()
        .map(|(sent, at, _)| (at - sent) / 1000.0)
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// Posts `total` events (numbered from `HEAVY_FIRST`) in batches of `batch` from `clients`
/// clients, each sending its batches to the hosts in turn; returns once all are acknowledged.
async fn post_spread(hosts: &[Host], total: u64, batch: u64, clients: u64) {
    let http = reqwest::Client::new();
    let urls: Vec<String> = hosts.iter().map(|h| h.url("/v1/events")).collect();
    let posts: Vec<_> = (0..clients)
        .map(|c| {
            let (http, urls) = (http.clone(), urls.clone());
            tokio::spawn(async move {
                let (mut i, mut turn) = (c * batch, c as usize);
                while i < total {
                    let events: Vec<_> = (i..i + batch.min(total - i))
                        .map(|k| numbered(HEAVY_FIRST + k))
                        .collect();
                    let r = http
                        .post(&urls[turn % urls.len()])
                        .json(&events)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(r.status(), 202);
                    i += batch * clients;
                    turn += 1;
                }
            })
        })
        .collect();
    for p in posts {
        p.await.unwrap();
    }
}

fn print_latency(label: &str, rate: u64, ms: &[f64]) {
    println!(
        "{label:<44} {rate} events/s: p50 {:>6.1} ms  p99 {:>6.1} ms  max {:>6.1} ms  ({} events)",
        percentile(ms, 0.5),
        percentile(ms, 0.99),
        ms[ms.len() - 1],
        ms.len()
    );
}

/// Cluster mode on the SQS server that has what it needs (fauxqs if it does, else moto).
async fn cluster() {
    let mut chosen = None;
    for var in ["SQS_ENDPOINT", "MOTO_ENDPOINT"] {
        let Ok(endpoint) = std::env::var(var) else {
            continue;
        };
        let (name, pid) = sqs_server(&endpoint);
        match fifo_check(&endpoint).await {
            Ok(()) => {
                println!(
                    "cluster: {name} ({var}) has what cluster mode needs: FIFO CreateQueue, SendMessageBatch with group and deduplication ids (deduplicated), ReceiveMessage with a visibility timeout and group locking, ChangeMessageVisibilityBatch, DeleteMessageBatch, GetQueueAttributes"
                );
                chosen = Some((name, pid, endpoint));
                break;
            }
            Err(e) => println!("cluster: {name} ({var}) lacks what cluster mode needs: {e}"),
        }
    }
    let Some((server, server_pid, endpoint)) = chosen else {
        println!(
            "cluster: no SQS server with FIFO semantics (set SQS_ENDPOINT or MOTO_ENDPOINT); skipped"
        );
        return;
    };
    let (rate, secs, total, batch, clients) = (50u64, 10u64, cluster_events(), 100u64, 4u64);
    // More keys of the `cluster` section, e.g. BENCH_CLUSTER_CONFIG="sequencers: 8, maxClockSkew: 5ms".
    let extra: String = std::env::var("BENCH_CLUSTER_CONFIG")
        .unwrap_or_default()
        .split(',')
        .filter(|kv| !kv.trim().is_empty())
        .map(|kv| format!("  {}\n", kv.trim()))
        .collect();
    if !extra.is_empty() {
        println!("cluster: with {}", extra.trim().replace("\n ", ","));
    }

    // The local journal: one host, the same light stream.
    {
        let rx = Receiver::start().await;
        let arrivals = Arrivals::record(&rx);
        let host = Host::start(&format!(
            "replicators:\n  - id: hook\n    driver: webhook\n    resources: [items]\n    config: {{url: \"{}\"}}\n",
            rx.url("/hook")
        ))
        .await;
        let ms = light_stream(std::slice::from_ref(&host), &arrivals, rate, secs).await;
        print_latency("latency, local journal, 1 host,", rate, &ms);
    }

    for n_hosts in 1..=3usize {
        let rx = Receiver::start().await;
        let arrivals = Arrivals::record(&rx);
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let prefix = format!("bench-{}-{nanos}-{n_hosts}-", std::process::id());
        // The hosts' shared state (dead letters, heartbeats): a directory of this run's.
        let state = S3dbTarget::file();
        let config = format!(
            "cluster:\n  queuePrefix: {prefix}\n  endpoint: {endpoint}\n  region: us-east-1\n  credentials: {{accessKeyId: test, secretAccessKey: test}}\n  visibilityTimeout: 30s\n  waitTimeSeconds: 1\n  stateDatabase: {}\n{extra}replicators:\n  - id: hook\n    driver: webhook\n    resources: [items]\n    config: {{url: \"{}\"}}\n",
            state.conn,
            rx.url("/hook")
        );
        let mut hosts = Vec::new();
        for _ in 0..n_hosts {
            hosts.push(Host::start(&config).await);
        }
        let plural = if n_hosts == 1 { "host" } else { "hosts" };
        tokio::time::sleep(Duration::from_secs(1)).await;
        let ms = light_stream(&hosts, &arrivals, rate, secs).await;
        print_latency(
            &format!("latency, cluster ({server}), {n_hosts} {plural},"),
            rate,
            &ms,
        );

        let pids: Vec<u32> = hosts.iter().filter_map(Host::pid).collect();
        let host_cpu = || pids.iter().map(|p| cpu_seconds(*p)).sum::<f64>();
        let server_cpu = || server_pid.map_or(0.0, cpu_seconds);
        let own_cpu = || cpu_seconds(std::process::id());
        let before = (host_cpu(), server_cpu(), own_cpu());
        let requests_before = rx.received().len();
        let start = Instant::now();
        post_spread(&hosts, total, batch, clients).await;
        let acknowledged = start.elapsed();
        let heavy = arrivals.all(HEAVY_FIRST..HEAVY_FIRST + total).await;
        let last = heavy.iter().map(|a| a.2).max().unwrap();
        let elapsed = last - start;
        let wall = start.elapsed().as_secs_f64();
        let (hosts_s, server_s, own_s) = (
            host_cpu() - before.0,
            server_cpu() - before.1,
            own_cpu() - before.2,
        );
        let requests = rx.received().len() - requests_before;
        println!(
            "cluster ({server}), {n_hosts} {plural:<5} {:>8.0} events/s end to end ({total} events over {CLUSTER_KEYS} keys in {:.2} s), intake {:>6.0} events/s (all acknowledged after {:.2} s), {} webhook requests",
            total as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64(),
            total as f64 / acknowledged.as_secs_f64(),
            acknowledged.as_secs_f64(),
            requests
        );
        println!(
            "cluster ({server}), {n_hosts} {plural:<5} CPU over {wall:.1} s ({:.1} core-s available): hosts {hosts_s:.1} s, {server} {}, bench clients and receiver {own_s:.1} s",
            wall * std::thread::available_parallelism().map_or(1.0, |n| n.get() as f64),
            if server_pid.is_some() {
                format!("{server_s:.1} s")
            } else {
                "n/a".into()
            }
        );
    }
}
