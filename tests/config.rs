//! `replicator validate`: every syntax accepted, every problem reported with its key path.

use replicator_tests::binary;
use std::process::{Command, Output};

fn validate(name: &str, text: &str, env: &[(&str, &str)]) -> Output {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new(binary());
    cmd.args(["validate", "--config"]).arg(&path);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().unwrap()
}

#[test]
fn accepts_every_resources_syntax_and_interpolates_secrets() {
    let out = validate(
        "ok.yaml",
        r#"
verbose: true
batchSize: 50
maxRetries: 5
timeout: 10000
logErrors: true
persistReplicatorLog: false
replicators:
  - driver: postgres
    resources:
      users: people
      orders: {table: order_rows, actions: [insert, update]}
      carts: true
      events: [events_a, {table: events_b, actions: [delete]}]
    config:
      connectionString: "postgres://app:${PG_PASSWORD}@127.0.0.1:5432/app"
  - id: hook
    driver: webhook
    resources: [users, orders]
    url: https://example.com/hook
    auth: {type: apikey, header: X-Key, value: "${HOOK_KEY}"}
    retryStrategy: fixed
    retryOnStatus: [429, 503]
"#,
        &[("PG_PASSWORD", "pw"), ("HOOK_KEY", "k")],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}{}",
        stdout,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains(
            "postgresql-0 (postgresql): carts -> carts [insert,update,delete]; events -> events_a"
        ),
        "{stdout}"
    );
    assert!(stdout.contains("events -> events_b [delete]"));
    assert!(stdout.contains("hook (webhook): users -> users"));
}

#[test]
fn json_configs_work_too() {
    let out = validate(
        "ok.json",
        r#"{"replicators": [{"driver": "webhook", "resources": {"users": {"resource": "people"}}, "config": {"url": "http://127.0.0.1:9/x"}}]}"#,
        &[],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn reports_every_problem_with_its_path_and_exits_1() {
    let out = validate(
        "bad.yaml",
        r#"
batchSze: 10
server: {listen: "nowhere"}
replicators:
  - driver: webhook
    resources: {users: {actions: [inserted]}}
    config: {timeout: "soon"}
  - driver: postgresql
    resources: [users]
    config: {connectionString: "postgres://u:${MISSING}@h/db"}
  - driver: webhook
    resources: {users: {transform: ./strip.wasm}}
    config: {url: "http://127.0.0.1/x"}
  - driver: sqs
    resources: {users: true, orders: {queueUrl: "sqs/orders"}}
    config: {messageGroupId: "has space", credentials: {accessKeyId: AK}}
  - driver: bigquery
    resources: {users: {table: user-rows, mutability: sometimes}}
    config: {projectId: p, datasetId: analytics, mutability: always}
"#,
        &[],
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "batchSze: unknown option \"batchSze\" (did you mean \"batchSize\"?)",
        "server.listen: must be an address like 127.0.0.1:7700, found \"nowhere\"",
        "replicators[0].resources.users.actions[0]: unknown action \"inserted\"",
        "replicators[0].config.url: is required",
        "replicators[0].config.timeout: invalid duration \"soon\"",
        "replicators[1].config.connectionString: environment variable MISSING is not set",
        "replicators[2].resources.users.transform: no component file ./strip.wasm",
        "replicators[3].config.messageGroupId: \"has space\" is not an SQS id",
        "replicators[3].config.credentials.secretAccessKey: is required",
        "replicators[3].resources.users: no queue for resource \"users\"",
        "replicators[3].resources.orders: \"sqs/orders\" is neither a queue URL nor a queue name",
        "replicators[4].config.mutability: unknown value \"always\"",
        "replicators[4].resources.users.mutability: unknown value \"sometimes\"",
        "replicators[4].resources.users: \"user-rows\" is not a BigQuery table name",
    ] {
        assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
    }
}

#[test]
fn syntax_errors_name_the_position() {
    let out = validate("broken.yaml", "replicators: [\n  - driver: webhook\n", &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("invalid YAML") && err.contains("line"),
        "{err}"
    );
}
