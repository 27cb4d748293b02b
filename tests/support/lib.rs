//! Test harness: runs the real `replicator` binary, a recording HTTP receiver, and
//! connections to the PostgreSQL that `tests/run` started.
//!
//! Nothing here imitates a destination: the host talks to real servers on 127.0.0.1
//! (PostgreSQL, the S3 server, moto's SQS, the BigQuery emulator, local HTTP receivers).

pub mod bigquery;
pub mod load;
pub mod s3dbjs;
pub mod sqs;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The `replicator` binary under test.
pub fn binary() -> PathBuf {
    match std::env::var_os("REPLICATOR_BIN") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/debug/replicator"),
    }
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `limit`.
pub async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A running `replicator serve` with its own journal directory.
pub struct Host {
    pub dir: tempfile::TempDir,
    pub port: u16,
    pub config_path: PathBuf,
    child: Option<Child>,
    pub http: reqwest::Client,
    token: Option<String>,
}

impl Host {
    /// Starts the host with `config` (YAML, without `server` and `journal`, which are added).
    pub async fn start(config: &str) -> Host {
        Self::start_with(config, "", "").await
    }

    /// Like [`Host::start`], with extra lines for the `server` and `journal` sections
    /// (e.g. `  token: x`).
    pub async fn start_with(config: &str, server_extra: &str, journal_extra: &str) -> Host {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let full = format!(
            "server:\n  listen: 127.0.0.1:{port}\n{server_extra}\njournal:\n  path: {}\n{journal_extra}\n{config}",
            dir.path().join("journal").display()
        );
        let config_path = dir.path().join("config.yaml");
        std::fs::write(&config_path, full).unwrap();
        let token = server_extra
            .lines()
            .find_map(|l| l.trim().strip_prefix("token: ").map(str::to_string));
        let mut host = Host {
            dir,
            port,
            config_path,
            child: None,
            http: reqwest::Client::new(),
            token,
        };
        host.spawn().await;
        host
    }

    async fn spawn(&mut self) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("host.log"))
            .unwrap();
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&self.config_path)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {}: {e} (build it first, or set REPLICATOR_BIN)",
                    binary().display()
                )
            });
        self.child = Some(child);
        let url = self.url("/healthz");
        let http = self.http.clone();
        let log_path = self.dir.path().join("host.log");
        let child = self.child.as_mut().unwrap();
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "host exited with {status}:\n{}",
                    std::fs::read_to_string(&log_path).unwrap_or_default()
                );
            }
            if http
                .get(&url)
                .send()
                .await
                .is_ok_and(|r| r.status().is_success())
            {
                break;
            }
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "host did not start"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The status of `GET /healthz` (200: the process is up).
    pub async fn healthz(&self) -> u16 {
        self.http
            .get(self.url("/healthz"))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    /// The host's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("host.log")).unwrap_or_default()
    }

    fn auth(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    /// Posts events and returns (status, body).
    pub async fn post_events(&self, body: &Value) -> (u16, Value) {
        let r = self
            .auth(self.http.post(self.url("/v1/events")).json(body))
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(Value::Null))
    }

    /// Posts and expects 202; returns the sequences.
    pub async fn send(&self, body: Value) -> Vec<u64> {
        let (status, out) = self.post_events(&body).await;
        assert_eq!(status, 202, "{out}");
        out["sequences"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_u64().unwrap())
            .collect()
    }

    pub async fn get(&self, path: &str) -> Value {
        let r = self
            .auth(self.http.get(self.url(path)))
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "GET {path}: {}", r.status());
        r.json().await.unwrap()
    }

    pub async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        let r = self
            .auth(self.http.post(self.url(path)).json(&body))
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
    }

    /// The status entry of one replicator.
    pub async fn replicator(&self, id: &str) -> Value {
        let s = self.get("/v1/status").await;
        s["replicators"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap()
    }

    /// Waits until the replicator has no backlog.
    pub async fn drained(&self, id: &str) -> Value {
        eventually(
            Duration::from_secs(30),
            &format!("{id} to drain"),
            || async {
                let r = self.replicator(id).await;
                (r["backlog"] == 0).then_some(r)
            },
        )
        .await
    }

    /// The Prometheus text of `/metrics`.
    pub async fn metrics(&self) -> String {
        reqwest::get(self.url("/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// Each dead letter's record id with its error.
    pub async fn dead_letter_reasons(
        &self,
        query: &str,
    ) -> std::collections::BTreeMap<String, String> {
        self.dead_letters(query)
            .await
            .iter()
            .map(|d| {
                (
                    d["recordId"].as_str().unwrap().to_string(),
                    d["error"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    }

    pub async fn dead_letters(&self, query: &str) -> Vec<Value> {
        self.get(&format!("/v1/dlq?{query}")).await["deadLetters"]
            .as_array()
            .unwrap()
            .clone()
    }

    /// SIGKILL, as a crash.
    pub fn kill9(&mut self) {
        if let Some(mut c) = self.child.take() {
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }

    /// Starts the host again on the same journal.
    pub async fn restart(&mut self) {
        self.kill9();
        self.spawn().await;
    }

    /// SIGTERM and wait: a clean stop.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill").arg(c.id().to_string()).status();
            let deadline = Instant::now() + Duration::from_secs(15);
            while c.try_wait().unwrap().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("---- host log ----\n{}", self.log());
        }
        self.kill9();
    }
}

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
    /// Wall-clock receipt time, microseconds since the Unix epoch (for latency figures).
    pub at_wall_micros: f64,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A scripted answer: status, optional Retry-After, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<&'static str>,
}

/// Computes an answer from a request body: status and response body.
pub type Responder = Arc<dyn Fn(&[u8]) -> (u16, String) + Send + Sync>;

#[derive(Default)]
struct ReceiverState {
    /// Answers computed from the request (after the script and the refusals).
    responder: Option<Responder>,
    received: Vec<Received>,
    /// Answers to give next, in order; after them, 200 (or `refuse_containing`).
    script: VecDeque<Answer>,
    /// Bodies containing this string get 400 (a record the receiver rejects).
    refuse_containing: Option<String>,
    /// Delay before answering.
    delay: Duration,
}

/// A real HTTP server on 127.0.0.1 that records every request (the webhook destination).
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub port: u16,
}

impl Receiver {
    pub async fn start() -> Receiver {
        Self::start_on(0).await
    }

    pub async fn start_on(port: u16) -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
            .await
            .unwrap();
        let port = listener.local_addr().unwrap().port();
        let app = Router::new().fallback(record).with_state(state.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { state, port }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    pub fn refuse_containing(&self, needle: &str) {
        self.state.lock().unwrap().refuse_containing = Some(needle.into());
    }

    /// Stops refusing (undoes [`Receiver::refuse_containing`]).
    pub fn accept_all(&self) {
        self.state.lock().unwrap().refuse_containing = None;
    }

    pub fn respond_with(&self, f: impl Fn(&[u8]) -> (u16, String) + Send + Sync + 'static) {
        self.state.lock().unwrap().responder = Some(Arc::new(f));
    }

    pub fn delay(&self, d: Duration) {
        self.state.lock().unwrap().delay = d;
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    /// Successfully answered requests only.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| r.path != "refused")
            .collect()
    }

    /// The accepted events (one per request body) grouped by `key`, each group in sequence
    /// order.
    pub fn by_key(
        &self,
        key: impl Fn(&Value) -> String,
    ) -> std::collections::BTreeMap<String, Vec<Value>> {
        let mut events: Vec<Value> = self.accepted().iter().map(Received::json).collect();
        events.sort_by_key(|e| e["sequence"].as_u64().unwrap());
        let mut keys: std::collections::BTreeMap<String, Vec<Value>> = Default::default();
        for e in events {
            keys.entry(key(&e)).or_default().push(e);
        }
        keys
    }

    /// Waits until `n` requests were answered with success.
    pub async fn wait_for_accepted(&self, n: usize) -> Vec<Received> {
        eventually(
            Duration::from_secs(30),
            &format!("{n} accepted webhook requests"),
            || async {
                let got = self.accepted();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }

    /// Waits until `n` requests arrived.
    pub async fn wait_for(&self, n: usize) -> Vec<Received> {
        eventually(
            Duration::from_secs(30),
            &format!("{n} webhook requests"),
            || async {
                let got = self.received();
                (got.len() >= n).then_some(got)
            },
        )
        .await
    }
}

async fn record(
    State(state): State<Arc<Mutex<ReceiverState>>>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (answer, delay, computed) = {
        let mut s = state.lock().unwrap();
        let refused = s
            .refuse_containing
            .as_ref()
            .is_some_and(|n| String::from_utf8_lossy(&body).contains(n.as_str()));
        let mut computed = None;
        let answer = if refused {
            Answer {
                status: 400,
                retry_after: None,
            }
        } else if let Some(a) = s.script.pop_front() {
            a
        } else if let Some(f) = &s.responder {
            let (status, text) = f(&body);
            computed = Some(text);
            Answer {
                status,
                retry_after: None,
            }
        } else {
            Answer {
                status: 200,
                retry_after: None,
            }
        };
        let path = if answer.status < 300 {
            uri.path().to_string()
        } else {
            "refused".into()
        };
        let at_wall_micros = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_micros() as f64;
        s.received.push(Received {
            path,
            headers,
            body,
            at: Instant::now(),
            at_wall_micros,
        });
        (answer, s.delay, computed)
    };
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let text = computed.unwrap_or_else(|| "answer".into());
    let mut resp = (
        StatusCode::from_u16(answer.status).unwrap(),
        [("content-type", "application/json")],
        text,
    )
        .into_response();
    if let Some(ra) = answer.retry_after {
        resp.headers_mut()
            .insert("retry-after", ra.parse().unwrap());
    }
    resp
}

/// A PostgreSQL client on the test server, with a fresh schema for this test.
pub struct Pg {
    pub client: tokio_postgres::Client,
    pub schema: String,
    pub url: String,
}

impl Pg {
    pub async fn connect(test: &str) -> Pg {
        let url = std::env::var("DATABASE_URL").expect(
            "DATABASE_URL is not set: run the tests with tests/run, which starts PostgreSQL",
        );
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        let schema = format!("t_{test}_{}", std::process::id());
        client
            .batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {schema} CASCADE; CREATE SCHEMA {schema}"
            ))
            .await
            .unwrap();
        Pg {
            client,
            schema,
            url,
        }
    }

    /// Rows of `table` as JSON objects ordered by id.
    pub async fn rows(&self, table: &str) -> Vec<Value> {
        let sql = format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY t.id), '[]') FROM {}.\"{table}\" t",
            self.schema
        );
        match self.client.query_one(&sql, &[]).await {
            Ok(row) => {
                let v: Value = row.get(0);
                v.as_array().unwrap().clone()
            }
            Err(_) => Vec::new(),
        }
    }

    /// `{column: data_type}` of a table.
    pub async fn columns(&self, table: &str) -> Value {
        let rows = self
            .client
            .query(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                &[&self.schema, &table],
            )
            .await
            .unwrap();
        let mut m = serde_json::Map::new();
        for r in rows {
            m.insert(r.get::<_, String>(0), Value::String(r.get(1)));
        }
        Value::Object(m)
    }

    /// A replicator config block writing to this schema.
    pub fn replicator(&self, id: &str, resources: &str, extra: &str) -> String {
        format!(
            "  - id: {id}\n    driver: postgresql\n    resources: {resources}\n    config:\n      connectionString: {}\n      schema: {}\n{extra}",
            self.url, self.schema
        )
    }
}

/// An insert event.
pub fn insert(resource: &str, id: &str, data: Value) -> Value {
    let mut data = data;
    data["id"] = json!(id);
    json!({"resource": resource, "action": "insert", "id": id, "data": data})
}

pub fn update(resource: &str, id: &str, data: Value) -> Value {
    let mut data = data;
    data["id"] = json!(id);
    json!({"resource": resource, "action": "update", "id": id, "data": data})
}

pub fn delete(resource: &str, id: &str) -> Value {
    json!({"resource": resource, "action": "delete", "id": id})
}

/// An s3db database for a test: on the S3 test server (`tests/servers/s3.sh`) or in a directory.
pub struct S3dbTarget {
    pub conn: String,
    /// Keeps a `file://` database alive for the test.
    _dir: Option<tempfile::TempDir>,
}

impl S3dbTarget {
    /// A fresh prefix in the `s3db` bucket of the S3 test server.
    pub fn s3(test: &str) -> S3dbTarget {
        let endpoint = std::env::var("S3_ENDPOINT").expect(
            "S3_ENDPOINT is not set: run the tests with tests/run, which starts the S3 server",
        );
        let host = endpoint.trim_start_matches("http://");
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        S3dbTarget {
            conn: format!("http://test:testsecret@{host}/s3db/{test}-{nanos}"),
            _dir: None,
        }
    }

    /// An existing database.
    pub fn at(conn: String) -> S3dbTarget {
        S3dbTarget { conn, _dir: None }
    }

    /// A fresh directory in s3db.js's FileSystemClient layout.
    pub fn file() -> S3dbTarget {
        let dir = tempfile::tempdir().unwrap();
        S3dbTarget {
            conn: format!("file://{}", dir.path().display()),
            _dir: Some(dir),
        }
    }

    /// Runs s3db.js operations (see tests/js/s3db-tool.mjs) and returns their results.
    pub fn js(&self, commands: Value) -> Vec<Value> {
        let tool = Path::new(env!("CARGO_MANIFEST_DIR")).join("js/s3db-tool.mjs");
        let mut child = Command::new("node")
            .arg(&tool)
            .arg(&self.conn)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("node runs (tests/run installs s3db.js with tests/servers/s3db-js.sh)");
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(commands.to_string().as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "s3db-tool failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        match serde_json::from_slice(&out.stdout).unwrap() {
            Value::Array(results) => results,
            other => panic!("s3db-tool answered {other}"),
        }
    }
}

/// A record without the keys s3db.js adds on read (`_v`, `_etag`...).
pub fn without_internal(record: &Value) -> Value {
    match record {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !k.starts_with('_'))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// A plugin component built by `guest-examples/build.sh` (which `tests/run` runs).
pub fn guest(name: &str) -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../guest-examples/dist")
        .join(format!("{name}.wasm"));
    assert!(
        path.is_file(),
        "{} is missing: run guest-examples/build.sh (tests/run does)",
        path.display()
    );
    path.canonicalize().unwrap()
}
