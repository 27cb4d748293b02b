//! The number encodings of s3db.js: base62 values, base36 metadata keys, and JavaScript's
//! `Number.prototype.toString`, which s3db.js copies verbatim into decimals.

const ALPHABET: &[u8; 62] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";

fn digits(mut n: u64, radix: u64) -> String {
    if n == 0 {
        return "0".into();
    }
    let mut out = Vec::new();
    while n > 0 {
        out.push(ALPHABET[(n % radix) as usize]);
        n /= radix;
    }
    out.reverse();
    String::from_utf8(out).expect("alphabet is ASCII")
}

fn value(c: char, radix: u64) -> Option<u64> {
    let v = match c {
        '0'..='9' => c as u64 - '0' as u64,
        'a'..='z' => c as u64 - 'a' as u64 + 10,
        'A'..='Z' => c as u64 - 'A' as u64 + 36,
        _ => return None,
    };
    (v < radix).then_some(v)
}

fn parse(s: &str, radix: u64) -> Option<i64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let mut r: u64 = 0;
    for c in body.chars() {
        r = r.checked_mul(radix)?.checked_add(value(c, radix)?)?;
    }
    let r = i64::try_from(r).ok()?;
    Some(if neg { -r } else { r })
}

/// `encode`: base62 of `floor(n)`, `-` for negatives.
pub fn encode(n: f64) -> String {
    if !n.is_finite() {
        return "undefined".into();
    }
    if n < 0.0 {
        return format!("-{}", encode(-n.floor()));
    }
    digits(n.floor() as u64, 62)
}

/// `decode`; `""` is 0.
pub fn decode(s: &str) -> Option<i64> {
    if s.is_empty() { Some(0) } else { parse(s, 62) }
}

/// Metadata keys: base36 of a registry index (S3 lower-cases keys).
pub fn encode_key(index: u64) -> String {
    digits(index, 36)
}

pub fn decode_key(s: &str) -> Option<u64> {
    parse(s, 36).and_then(|v| u64::try_from(v).ok())
}

/// `encodeDecimal`: base62 integer part, then the fraction digits of JavaScript's `toString`.
pub fn encode_decimal(n: f64) -> String {
    if !n.is_finite() {
        return "undefined".into();
    }
    let sign = if n < 0.0 { "-" } else { "" };
    let text = js_number(n.abs());
    let (int_part, frac) = match text.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (text.as_str(), None),
    };
    // JavaScript's Number("1e+21") is the number itself; encode floors it.
    let int_value: f64 = int_part.parse().unwrap_or(f64::NAN);
    match frac {
        Some(f) => format!("{sign}{}.{f}", encode(int_value)),
        None => format!("{sign}{}", encode(int_value)),
    }
}

/// `decodeDecimal`.
pub fn decode_decimal(s: &str) -> Option<f64> {
    let (neg, body) = match s.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, s),
    };
    let (int_part, frac) = match body.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (body, None),
    };
    let int = decode(int_part)?;
    let n = match frac {
        Some(f) if !f.is_empty() => format!("{int}.{f}").parse::<f64>().ok()?,
        _ => int as f64,
    };
    Some(if neg { -n } else { n })
}

/// JavaScript's `Number.prototype.toString()` for a finite number (ryu-js implements
/// ECMAScript's Number::toString).
pub fn js_number(n: f64) -> String {
    ryu_js::Buffer::new().format_finite(n).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_from_the_notes() {
        assert_eq!(encode_decimal(42.0), "G");
        assert_eq!(encode_decimal(31.0), "v");
        assert_eq!(encode_decimal(1.5), "1.5");
        assert_eq!(encode_decimal(-7.25), "-7.25");
        assert_eq!(encode_decimal(12345678.0), "PNFQ");
        assert_eq!(encode(0.0), "0");
        assert_eq!(encode_key(0), "0");
        assert_eq!(encode_key(10), "a");
        assert_eq!(encode_key(35), "z");
        assert_eq!(encode_key(36), "10");
        assert_eq!(decode_key("10"), Some(36));
        assert_eq!(decode_decimal("PNFQ"), Some(12345678.0));
        assert_eq!(decode_decimal("-7.25"), Some(-7.25));
        assert_eq!(decode("-G"), Some(-42));
    }

    #[test]
    fn javascript_number_text() {
        for (n, js) in [
            (1.0, "1"),
            (0.1 + 0.2, "0.30000000000000004"),
            (1e21, "1e+21"),
            (1e20, "100000000000000000000"),
            (1.5e-7, "1.5e-7"),
            (0.000001, "0.000001"),
            (123.456, "123.456"),
            (-2.5, "-2.5"),
        ] {
            assert_eq!(js_number(n), js, "{n}");
        }
    }
}
