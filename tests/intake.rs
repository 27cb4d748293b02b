//! `POST /v1/events` and `replicator send`: formats, all-or-nothing batches, auth, limits.

use replicator_tests::*;
use serde_json::json;
use std::process::Command;

async fn head(host: &Host) -> u64 {
    host.get("/v1/status").await["journal"]["head"]
        .as_u64()
        .unwrap()
}

#[tokio::test]
async fn accepts_one_event_an_array_and_ndjson() {
    let host = Host::start("").await;
    assert_eq!(host.send(insert("users", "u1", json!({}))).await, [1]);
    assert_eq!(
        host.send(json!([
            insert("users", "u2", json!({})),
            delete("users", "u1")
        ]))
        .await,
        [2, 3]
    );
    let nd = format!(
        "{}\n{}\n",
        insert("users", "u3", json!({})),
        json!({"resource": "users", "action": "update", "data": {"id": "u3", "x": 1}})
    );
    let r = host
        .http
        .post(host.url("/v1/events"))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["sequences"], json!([4, 5]));
    assert_eq!(head(&host).await, 5);
}

#[tokio::test]
async fn a_bad_item_rejects_the_whole_batch_and_is_named() {
    let host = Host::start("").await;
    let (code, body) = host
        .post_events(&json!([
            insert("users", "u1", json!({})),
            {"resource": "users", "action": "inserted", "id": "u2", "data": {}},
            {"resource": "users", "action": "update", "id": "u3"},
            "not an object"
        ]))
        .await;
    assert_eq!(code, 400);
    let items = body["items"].as_array().unwrap();
    assert_eq!(
        items
            .iter()
            .map(|i| i["index"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert!(
        items[0]["errors"][0]
            .as_str()
            .unwrap()
            .contains("unknown action \"inserted\"")
    );
    assert!(
        items[1]["errors"][0]
            .as_str()
            .unwrap()
            .contains("\"data\" is required")
    );
    assert_eq!(head(&host).await, 0, "nothing of the batch was accepted");
    let (code, body) = host.post_events(&json!([])).await;
    assert_eq!(code, 400, "{body}");
}

#[tokio::test]
async fn token_size_limit_and_disk_budget() {
    // A paused replicator holds on to every event, so the journal fills up.
    let paused = "replicators:\n  - {id: paused, driver: webhook, enabled: false, resources: [users], config: {url: 'http://127.0.0.1:9/x'}}\n";
    let host = Host::start_with(
        paused,
        "  token: let-me-in\n  maxBodyBytes: 2048",
        "  maxBytes: 600",
    )
    .await;
    let anon = host
        .http
        .post(host.url("/v1/events"))
        .json(&insert("users", "u1", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let wrong = host
        .http
        .post(host.url("/v1/events"))
        .bearer_auth("nope")
        .json(&insert("users", "u1", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 401);
    assert_eq!(host.healthz().await, 200);

    let (code, _) = host
        .post_events(&insert("users", "big", json!({"blob": "x".repeat(4000)})))
        .await;
    assert_eq!(code, 413);

    let mut accepted = 0;
    let answer = loop {
        let (code, body) = host
            .post_events(&insert(
                "users",
                &format!("u{accepted}"),
                json!({"pad": "y".repeat(100)}),
            ))
            .await;
        if code != 202 {
            break (code, body);
        }
        accepted += 1;
        assert!(accepted < 50, "the budget is never enforced");
    };
    assert_eq!(answer.0, 503, "{}", answer.1);
    assert!(
        answer.1["error"]
            .as_str()
            .unwrap()
            .contains("journal.maxBytes")
    );
    let r = host
        .http
        .post(host.url("/v1/events"))
        .bearer_auth("let-me-in")
        .json(&insert("users", "z", json!({})))
        .send()
        .await
        .unwrap();
    assert_eq!(r.headers()["retry-after"], "5");
}

#[tokio::test]
async fn send_posts_files_and_names_bad_lines() {
    let host = Host::start("").await;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.ndjson");
    std::fs::write(
        &good,
        (0..2500)
            .map(|i| format!("{}\n", insert("users", &format!("u{i}"), json!({}))))
            .collect::<String>(),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["send", "--url", &host.url(""), "--batch", "1000"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("accepted 2500"));
    assert_eq!(head(&host).await, 2500);

    let bad = dir.path().join("bad.ndjson");
    std::fs::write(
        &bad,
        format!(
            "{}\n{{\"resource\":\"users\",\"action\":\"upsert\",\"id\":\"x\"}}\n",
            insert("users", "a", json!({}))
        ),
    )
    .unwrap();
    let out = Command::new(binary())
        .args(["send", "--url", &host.url("")])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.ndjson:line 2: unknown action \"upsert\""),
        "{err}"
    );
    assert_eq!(
        head(&host).await,
        2500,
        "a file with a bad line sends nothing"
    );

    let out = Command::new(binary())
        .args(["send", "--url", &host.url(""), "--event"])
        .arg(json!({"resource": "users", "action": "delete", "id": "u1"}).to_string())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(head(&host).await, 2501);
}
