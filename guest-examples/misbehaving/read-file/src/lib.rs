//! Misbehaving guest: when a record has `data.escape == true`, tries to leave the sandbox:
//! read `/etc/passwd`, connect to `127.0.0.1:22`, read `$HOME`. If any succeeds the record is
//! kept with `data.escaped = "<what succeeded>"`; if all fail it fails with
//! `invalid-record {code: "sandboxed", message: <the errors>}`. Other records are kept unchanged.

include!("../../common.rs");

fn misbehave(_event: Event, mut data: Map<String, Value>) -> Outcome {
    if data.get("escape") != Some(&Value::Bool(true)) {
        return Outcome::Keep;
    }
    let mut escaped = Vec::new();
    let mut errors = Vec::new();
    match std::fs::read_to_string("/etc/passwd") {
        Ok(text) => escaped.push(format!("read /etc/passwd ({} bytes)", text.len())),
        Err(e) => errors.push(format!("read /etc/passwd: {e}")),
    }
    match std::net::TcpStream::connect("127.0.0.1:22") {
        Ok(_) => escaped.push("connected to 127.0.0.1:22".to_string()),
        Err(e) => errors.push(format!("connect 127.0.0.1:22: {e}")),
    }
    match std::env::var("HOME") {
        Ok(home) => escaped.push(format!("env HOME={home}")),
        Err(e) => errors.push(format!("env HOME: {e}")),
    }
    if escaped.is_empty() {
        return Outcome::Failed(TransformError::InvalidRecord(ErrorInfo {
            code: "sandboxed".into(),
            message: errors.join("; "),
        }));
    }
    data.insert("escaped".into(), Value::String(escaped.join("; ")));
    Outcome::Update(Documents {
        data: Some(serde_json::to_vec(&data).expect("a JSON value serializes")),
        before: None,
    })
}
