//! Differences between two JSON documents, one line per changed path (`/a/b`), for people.

use serde_json::Value;

/// What changed from `from` to `to`: `+ /path: value`, `- /path: value`,
/// `~ /path: old -> new`; empty when they are equal.
pub fn lines(from: &Value, to: &Value) -> Vec<String> {
    json_patch::diff(from, to)
        .iter()
        .filter_map(|op| {
            use json_patch::PatchOperation::*;
            let old = |path: &str| from.pointer(path).map(short).unwrap_or_default();
            Some(match op {
                Add(a) => format!("+ {}: {}", a.path, short(&a.value)),
                Remove(r) => format!("- {}: {}", r.path, old(r.path.as_str())),
                Replace(r) => format!(
                    "~ {}: {} -> {}",
                    r.path,
                    old(r.path.as_str()),
                    short(&r.value)
                ),
                // `diff` makes only the three above.
                Move(_) | Copy(_) | Test(_) => return None,
            })
        })
        .collect()
}

/// A value as compact JSON, cut at 200 characters.
pub fn short(v: &Value) -> String {
    let text = v.to_string();
    match text.char_indices().nth(200) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_changed_path() {
        let from = json!({"a": 1, "b": {"c": "x"}, "gone": true});
        let to = json!({"a": 2, "b": {"c": "x", "d": [1]}});
        let mut got = lines(&from, &to);
        got.sort();
        assert_eq!(got, vec!["+ /b/d: [1]", "- /gone: true", "~ /a: 1 -> 2"]);
        assert!(lines(&from, &from).is_empty());
    }
}
