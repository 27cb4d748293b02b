//! `${VAR}` and `${VAR:-default}` in config strings, so secrets stay out of config files.
//!
//! Done on the parsed tree (never on raw text), so a value can never inject config structure.

use serde_json::Value;

use crate::options::{Problems, index, join};

/// Replaces every `${VAR}` in the string values of `value`, reporting unset variables.
pub fn interpolate(
    value: &mut Value,
    path: &str,
    env: &dyn Fn(&str) -> Option<String>,
    problems: &Problems,
) {
    match value {
        Value::String(s) if s.contains("${") => match expand(s, env) {
            Ok(out) => *s = out,
            Err(msg) => problems.add(path, msg),
        },
        Value::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                interpolate(item, &index(path, i), env, problems);
            }
        }
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                interpolate(v, &join(path, k), env, problems);
            }
        }
        _ => {}
    }
}

fn expand(text: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find('}') else {
            return Err(format!("unclosed \"${{\" in \"{text}\""));
        };
        let inner = &after[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            return Err(format!(
                "invalid variable name \"{name}\" in \"${{{inner}}}\""
            ));
        }
        match env(name).or_else(|| default.map(str::to_string)) {
            Some(v) => out.push_str(&v),
            None => return Err(format!("environment variable {name} is not set")),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn expands_and_reports_missing() {
        let env = |k: &str| (k == "PW").then(|| "s3cret".to_string());
        let problems = Problems::default();
        let mut v = json!({"a": "postgres://u:${PW}@h/db", "b": ["${NOPE}"], "c": "${NOPE:-x}"});
        interpolate(&mut v, "", &env, &problems);
        assert_eq!(v["a"], "postgres://u:s3cret@h/db");
        assert_eq!(v["c"], "x");
        let list = problems.into_vec();
        assert_eq!(
            list[0].to_string(),
            "b[0]: environment variable NOPE is not set"
        );
    }
}
