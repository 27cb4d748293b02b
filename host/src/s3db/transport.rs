//! Transport encoding of metadata values (`metadataEncode`/`metadataDecode` of s3db.js):
//! dictionary codes `d:`, percent-encoding `u:` and base64 `b:` for what S3 headers can't carry.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};

const CONTENT_TYPES: [(&str, &str); 20] = [
    ("application/json", "j"),
    ("application/xml", "X"),
    ("application/ld+json", "J"),
    ("text/html", "H"),
    ("text/plain", "T"),
    ("text/css", "C"),
    ("text/javascript", "V"),
    ("text/csv", "v"),
    ("image/png", "P"),
    ("image/jpeg", "I"),
    ("image/gif", "G"),
    ("image/svg+xml", "S"),
    ("image/webp", "W"),
    ("application/pdf", "Q"),
    ("application/zip", "z"),
    ("application/octet-stream", "o"),
    ("application/x-www-form-urlencoded", "u"),
    ("multipart/form-data", "F"),
    ("font/woff", "w"),
    ("font/woff2", "f"),
];

const STATUSES: [(&str, &str); 17] = [
    ("processing", "p"),
    ("completed", "c"),
    ("succeeded", "s"),
    ("failed", "f"),
    ("cancelled", "x"),
    ("timeout", "t"),
    ("retrying", "r"),
    ("authorized", "a"),
    ("captured", "K"),
    ("refunded", "R"),
    ("declined", "d"),
    ("shipped", "h"),
    ("delivered", "D"),
    ("returned", "e"),
    ("in_transit", "i"),
    ("initialized", "n"),
    ("terminated", "m"),
];

const URL_PREFIXES: [(&str, &str); 16] = [
    ("/api/v1/", "@1"),
    ("/api/v2/", "@2"),
    ("/api/v3/", "@3"),
    ("/api/", "@a"),
    ("https://api.example.com/", "@A"),
    ("https://api.", "@H"),
    ("https://www.", "@W"),
    ("https://", "@h"),
    ("http://", "@t"),
    ("https://s3.amazonaws.com/", "@s"),
    ("https://s3-", "@S"),
    ("http://localhost:", "@L"),
    ("http://localhost", "@l"),
    ("/v1/", "@v"),
    ("/users/", "@u"),
    ("/products/", "@p"),
];

/// What `encodeURIComponent` leaves alone: `A-Z a-z 0-9 - _ . ! ~ * ' ( )`.
const URI_COMPONENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'!')
    .remove(b'~')
    .remove(b'*')
    .remove(b'\'')
    .remove(b'(')
    .remove(b')');

fn dictionary(value: &str) -> Option<String> {
    if let Some((_, code)) = CONTENT_TYPES
        .iter()
        .chain(STATUSES.iter())
        .find(|(word, _)| *word == value)
    {
        return Some(format!("d:{code}"));
    }
    URL_PREFIXES
        .iter()
        .filter(|(prefix, _)| value.starts_with(prefix))
        .max_by_key(|(prefix, _)| prefix.len())
        .map(|(prefix, code)| format!("d:{code}{}", &value[prefix.len()..]))
}

/// Encodes one metadata value as s3db.js's clients do before sending it.
pub fn encode(value: &str) -> String {
    if ["d:", "u:", "b:", "z:", "z85:"]
        .iter()
        .any(|p| value.starts_with(p))
    {
        return format!("b:{}", STANDARD.encode(value));
    }
    if let Some(short) = dictionary(value).filter(|d| d.len() < value.len()) {
        return short;
    }
    if value.chars().all(|c| (' '..='~').contains(&c)) {
        return value.to_string();
    }
    let (mut latin1, mut multibyte, mut len) = (0usize, 0usize, 0usize);
    for unit in value.encode_utf16() {
        len += 1;
        match unit {
            0x20..=0x7e => {}
            0x80..=0xff => latin1 += 1,
            _ => multibyte += 1,
        }
    }
    let use_base64 = if multibyte > 0 {
        multibyte as f64 / len as f64 > 0.3
    } else {
        latin1 as f64 / len as f64 > 0.5
    };
    if use_base64 {
        format!("b:{}", STANDARD.encode(value))
    } else {
        format!("u:{}", utf8_percent_encode(value, URI_COMPONENT))
    }
}

/// Decodes a metadata value. `None` is JavaScript's `undefined`; `Some(None)` is `null`.
pub fn decode(value: &str) -> Option<Option<String>> {
    match value {
        "null" => return Some(None),
        "undefined" => return None,
        _ => {}
    }
    let text = if let Some(code) = value.strip_prefix("d:") {
        let exact = CONTENT_TYPES
            .iter()
            .chain(STATUSES.iter())
            .find(|(_, c)| *c == code)
            .map(|(w, _)| w.to_string());
        exact.or_else(|| {
            URL_PREFIXES
                .iter()
                .find(|(_, c)| code.starts_with(c))
                .map(|(prefix, c)| format!("{prefix}{}", &code[c.len()..]))
        })
    } else if let Some(rest) = value.strip_prefix("u:").filter(|r| !r.is_empty()) {
        percent_decode_str(rest)
            .decode_utf8()
            .ok()
            .map(|s| s.into_owned())
    } else if let Some(rest) = value.strip_prefix("b:").filter(|r| !r.is_empty()) {
        STANDARD
            .decode(rest)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
    } else {
        None
    };
    Some(Some(text.unwrap_or_else(|| value.to_string())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn examples_from_the_notes() {
        assert_eq!(
            encode("héllo wörld 日本"),
            "u:h%C3%A9llo%20w%C3%B6rld%20%E6%97%A5%E6%9C%AC"
        );
        assert_eq!(encode("completed"), "d:c");
        assert_eq!(encode("application/json"), "d:j");
        assert_eq!(encode("https://x.io/a"), "d:@hx.io/a");
        assert_eq!(encode("/v1/"), "/v1/");
        assert_eq!(encode("plain text"), "plain text");
        assert!(encode("日本語").starts_with("b:"));
        assert!(encode("u:looks encoded").starts_with("b:"));
    }

    #[test]
    fn round_trips() {
        for v in [
            "héllo wörld 日本",
            "completed",
            "https://x.io/a",
            "日本語",
            "u:x",
            "a\nb",
            "€",
            "ÿÿ",
        ] {
            assert_eq!(decode(&encode(v)), Some(Some(v.to_string())), "{v}");
        }
        assert_eq!(decode("null"), Some(None));
        assert_eq!(decode("undefined"), None);
    }
}
