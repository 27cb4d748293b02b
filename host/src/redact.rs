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
                let secret = [
                    "token",
                    "key",
                    "secret",
                    "password",
                    "signature",
                    "auth",
                    "sig",
                ]
                .iter()
                .any(|s| k.to_ascii_lowercase().contains(s));
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

/// Masks every occurrence of `secret` in `text` (for messages of libraries that echo input).
pub fn mask(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        text.to_string()
    } else {
        text.replace(secret, "***")
    }
}

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
}
