//! Keeps secrets out of logs, status and errors.
//!
//! Passwords in connection strings and token-like query parameters become `***`.

/// A URL or connection string with its password and secret-looking query values masked.
/// Text that is not a URL is returned unchanged.
pub fn url(text: &str) -> String {
    let Ok(mut parsed) = url::Url::parse(text) else {
        return text.to_string();
    };
    if parsed.password().is_none() && parsed.query().is_none() {
        return text.to_string();
    }
    if parsed.password().is_some() {
        let _ = parsed.set_password(Some("***"));
    }
    if parsed.query().is_some() {
        let pairs: Vec<(String, String)> = parsed
            .query_pairs()
            .map(|(k, v)| {
                let secret = looks_secret(&k);
                (
                    k.into_owned(),
                    if secret { "***".into() } else { v.into_owned() },
                )
            })
            .collect();
        parsed.query_pairs_mut().clear().extend_pairs(pairs);
    }
    parsed.to_string()
}

/// Whether a field or parameter of that name holds a secret.
fn looks_secret(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    [
        "token",
        "key",
        "secret",
        "password",
        "signature",
        "auth",
        "sig",
    ]
    .iter()
    .any(|s| name.contains(s))
}

/// The secrets of a plugin's config, to mask in what the plugin says (its log lines, errors,
/// trap messages). Cheap to clone: every instance of the plugin shares them.
#[derive(Debug, Clone, Default)]
pub struct Secrets(std::sync::Arc<[String]>);

impl Secrets {
    /// The secrets in a plugin's JSON config: see [`secrets_in`].
    pub fn in_config(config: &serde_json::Value) -> Secrets {
        Secrets(secrets_in(config).into())
    }

    /// `text` with every secret masked.
    pub fn mask(&self, text: &str) -> String {
        self.0
            .iter()
            .fold(text.to_string(), |text, secret| mask(&text, secret))
    }
}

/// The string values of secret-looking keys (and everything under them), numbers included,
/// URL passwords and token-like query values. Strings under 4 characters are left out:
/// masking them would garble words.
fn secrets_in(config: &serde_json::Value) -> Vec<String> {
    fn walk(v: &serde_json::Value, secret: bool, out: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if secret => out.push(s.clone()),
            serde_json::Value::Number(n) if secret => out.push(n.to_string()),
            serde_json::Value::String(s) => {
                let Ok(u) = url::Url::parse(s) else {
                    return;
                };
                if let Some(p) = u.password() {
                    out.push(p.to_string());
                    // Messages may show the password as it stood in the URL, or decoded.
                    if let Ok(decoded) = percent_decode(p) {
                        out.push(decoded);
                    }
                }
                // Token-like query values, as `url` masks them.
                for (k, v) in u.query_pairs() {
                    if looks_secret(&k) {
                        out.push(v.into_owned());
                    }
                }
            }
            serde_json::Value::Array(list) => list.iter().for_each(|v| walk(v, secret, out)),
            serde_json::Value::Object(map) => map
                .iter()
                .for_each(|(k, v)| walk(v, secret || looks_secret(k), out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    walk(config, false, &mut out);
    out.retain(|s| s.chars().count() >= 4);
    // Longest first, so a secret that contains another is masked whole.
    out.sort_by_key(|s| std::cmp::Reverse(s.len()));
    out.dedup();
    out
}

fn percent_decode(text: &str) -> Result<String, std::str::Utf8Error> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .map(|s| s.into_owned())
}

/// Masks every occurrence of `secret` in `text` (for messages of libraries that echo input).
pub fn mask(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "***")
    }
}

/// A string that must never be printed (tokens, passwords, signing secrets): its `Debug` is
/// redacted, its memory wiped on drop, and reading it takes `expose_secret`.
pub use secrecy::{ExposeSecret, SecretString as Secret};

#[cfg(test)]
mod tests {
    #[test]
    fn masks_passwords_and_tokens() {
        assert_eq!(
            super::url("postgres://app:hunter2@db:5432/x?sslmode=require"),
            "postgres://app:***@db:5432/x?sslmode=require"
        );
        assert_eq!(
            super::url("https://h/hook?api_key=abc&x=1"),
            "https://h/hook?api_key=***&x=1"
        );
        assert_eq!(super::url("not a url"), "not a url");
    }

    #[test]
    fn finds_the_secrets_of_a_plugin_config() {
        let config = serde_json::json!({
            "url": "https://bot:p%40ss@chat.example/hook",
            "hook": "https://h/x?api_key=k3y-456&x=1",
            "apiKey": 12345678,
            "apiToken": "tok-123",
            "auth": {"user": "deploy", "password": "hunter2", "pin": "42"},
            "index": "app",
            "tokenless": 3,
        });
        let secrets = super::secrets_in(&config);
        for s in [
            "p%40ss", "p@ss", "tok-123", "deploy", "hunter2", "k3y-456", "12345678",
        ] {
            assert!(secrets.contains(&s.to_string()), "{s}: {secrets:?}");
        }
        for s in ["app", "42", "https://bot:p%40ss@chat.example/hook"] {
            assert!(!secrets.contains(&s.to_string()), "{s}: {secrets:?}");
        }
        assert_eq!(
            super::Secrets::in_config(&config)
                .mask("GET https://bot:p%40ss@chat.example/hook: 401 for tok-123"),
            "GET https://bot:***@chat.example/hook: 401 for ***"
        );
    }
}
