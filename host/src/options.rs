//! A reader over one JSON object of the config that records every problem with its key path.
//!
//! serde stops at the first error; users fixing a config want all of them at once, each
//! named like `replicators[1].resources.users.actions[0]`.

use serde_json::{Map, Value};
use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt;
use std::time::Duration;

use crate::event::kind_of;

/// One problem found in a config, with the key path it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Collects problems while the config is read.
#[derive(Default)]
pub struct Problems(RefCell<Vec<Problem>>);

impl Problems {
    pub fn add(&self, path: impl Into<String>, message: impl Into<String>) {
        self.0.borrow_mut().push(Problem {
            path: path.into(),
            message: message.into(),
        });
    }

    pub fn into_vec(self) -> Vec<Problem> {
        self.0.into_inner()
    }
}

/// `parent.key`, or `key` at the root.
pub fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `parent[index]`.
pub fn index(parent: &str, i: usize) -> String {
    format!("{parent}[{i}]")
}

/// A typed view of one config object. Call [`Section::finish`] to report unknown keys.
pub struct Section<'a> {
    path: String,
    map: &'a Map<String, Value>,
    problems: &'a Problems,
    read: Vec<String>,
    /// Keys that were merged in from elsewhere keep the path they were written at.
    origins: HashMap<String, String>,
}

impl<'a> Section<'a> {
    /// Opens `value` as an object, or reports that it is not one.
    pub fn open(value: &'a Value, path: String, problems: &'a Problems) -> Option<Self> {
        match value {
            Value::Object(map) => Some(Section {
                path,
                map,
                problems,
                read: Vec::new(),
                origins: HashMap::new(),
            }),
            other => {
                problems.add(path, format!("must be an object, found {}", kind_of(other)));
                None
            }
        }
    }

    pub fn with_origins(mut self, origins: HashMap<String, String>) -> Self {
        self.origins = origins;
        self
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    pub fn problems(&self) -> &'a Problems {
        self.problems
    }

    /// The key path of `key` inside this section.
    pub fn path_of(&self, key: &str) -> String {
        self.origins
            .get(key)
            .cloned()
            .unwrap_or_else(|| join(&self.path, key))
    }

    pub fn problem(&self, key: &str, message: impl Into<String>) {
        self.problems.add(self.path_of(key), message);
    }

    /// The raw value of `key`, marking it as known. `null` counts as absent.
    pub fn value(&mut self, key: &str) -> Option<&'a Value> {
        self.read.push(key.to_string());
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn has(&self, key: &str) -> bool {
        self.map.get(key).is_some_and(|v| !v.is_null())
    }

    fn typed<T>(
        &mut self,
        key: &str,
        expected: &str,
        get: impl FnOnce(&'a Value) -> Option<T>,
    ) -> Option<T> {
        let value = self.value(key)?;
        let got = get(value);
        if got.is_none() {
            self.problem(key, format!("must be {expected}, found {}", kind_of(value)));
        }
        got
    }

    pub fn string(&mut self, key: &str) -> Option<String> {
        self.typed(key, "a string", |v| v.as_str().map(str::to_string))
    }

    /// An `http://` or `https://` URL (an endpoint), reported with secrets masked otherwise.
    pub fn http_url(&mut self, key: &str) -> Option<String> {
        let text = self.string(key)?;
        if url::Url::parse(&text).is_ok_and(|u| matches!(u.scheme(), "http" | "https")) {
            return Some(text);
        }
        self.problem(
            key,
            format!(
                "must be an http:// or https:// URL, found \"{}\"",
                crate::redact::url(&text)
            ),
        );
        None
    }

    pub fn required_string(&mut self, key: &str) -> Option<String> {
        let s = self.string(key);
        match &s {
            None if !self.has(key) => self.problem(key, "is required"),
            Some(text) if text.trim().is_empty() => self.problem(key, "must not be empty"),
            _ => {}
        }
        s.filter(|t| !t.trim().is_empty())
    }

    pub fn bool(&mut self, key: &str) -> Option<bool> {
        self.typed(key, "true or false", Value::as_bool)
    }

    pub fn u64(&mut self, key: &str) -> Option<u64> {
        self.typed(key, "a whole number", Value::as_u64)
    }

    /// A whole number in `min..=max`.
    pub fn u64_in(&mut self, key: &str, min: u64, max: u64) -> Option<u64> {
        let n = self.u64(key)?;
        if n < min || n > max {
            self.problem(key, format!("must be between {min} and {max}, found {n}"));
            return None;
        }
        Some(n)
    }

    /// A duration: a number of milliseconds (as s3db.js writes them) or a string like `"5s"`.
    pub fn duration(&mut self, key: &str) -> Option<Duration> {
        let value = self.value(key)?;
        match value {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64().map(Duration::from_millis),
            Value::String(s) => match humantime::parse_duration(s) {
                Ok(d) => Some(d),
                Err(e) => {
                    self.problem(key, format!("invalid duration \"{s}\": {e}"));
                    None
                }
            },
            other => {
                self.problem(
                    key,
                    format!(
                        "must be milliseconds or a duration like \"30s\", found {}",
                        kind_of(other)
                    ),
                );
                None
            }
        }
    }

    /// A size in bytes: a number or a string like `"10 GiB"`.
    pub fn bytes(&mut self, key: &str) -> Option<u64> {
        let value = self.value(key)?;
        match value {
            Value::Number(n) if n.as_u64().is_some() => n.as_u64(),
            Value::String(s) => match s.parse::<bytesize::ByteSize>() {
                Ok(b) => Some(b.as_u64()),
                Err(e) => {
                    self.problem(key, format!("invalid size \"{s}\": {e}"));
                    None
                }
            },
            other => {
                self.problem(
                    key,
                    format!(
                        "must be bytes or a size like \"10 GiB\", found {}",
                        kind_of(other)
                    ),
                );
                None
            }
        }
    }

    /// One of `choices`.
    pub fn choice(&mut self, key: &str, choices: &[&'static str]) -> Option<&'static str> {
        let s = self.string(key)?;
        let found = choices.iter().find(|c| **c == s).copied();
        if found.is_none() {
            self.problem(
                key,
                format!("unknown value \"{s}\" (expected {})", choices.join(", ")),
            );
        }
        found
    }

    /// A map of string to string (HTTP headers and the like).
    pub fn string_map(&mut self, key: &str) -> Option<Vec<(String, String)>> {
        let path = self.path_of(key);
        let value = self.value(key)?;
        let Some(map) = value.as_object() else {
            self.problem(key, format!("must be an object, found {}", kind_of(value)));
            return None;
        };
        let mut out = Vec::new();
        for (k, v) in map {
            match v {
                Value::String(s) => out.push((k.clone(), s.clone())),
                Value::Number(n) => out.push((k.clone(), n.to_string())),
                Value::Bool(b) => out.push((k.clone(), b.to_string())),
                other => self.problems.add(
                    join(&path, k),
                    format!("must be a string, found {}", kind_of(other)),
                ),
            }
        }
        Some(out)
    }

    /// An id (of a replicator, a source): letters, digits, `-`, `_` and `.`; `default` when absent.
    pub fn id(&mut self, key: &str, default: impl FnOnce() -> String) -> String {
        let id = self.string(key).unwrap_or_else(default);
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        {
            self.problem(
                key,
                format!("must use only letters, digits, '-', '_' and '.', found \"{id}\""),
            );
        }
        id
    }

    /// A nested object.
    pub fn section(&mut self, key: &str) -> Option<Section<'a>> {
        let path = self.path_of(key);
        let value = self.value(key)?;
        Section::open(value, path, self.problems)
    }

    /// The keys of this object that have not been read.
    pub fn unread(&self) -> Vec<&'a String> {
        self.map
            .keys()
            .filter(|k| !self.read.iter().any(|r| r == *k))
            .collect()
    }

    /// Reports every key that no reader asked for.
    pub fn finish(self) {
        for key in self.unread() {
            let known: Vec<&str> = self.read.iter().map(String::as_str).collect();
            let hint = closest(key, &known)
                .map(|k| format!(" (did you mean \"{k}\"?)"))
                .unwrap_or_default();
            self.problem(key, format!("unknown option \"{key}\"{hint}"));
        }
    }
}

/// The known key closest to a misspelt one, when it is close enough to be a typo.
fn closest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (strsim::levenshtein(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let problems = Problems::default();
        let v = json!({"batchSze": 3, "verbose": true});
        let mut s = Section::open(&v, "".into(), &problems).unwrap();
        s.bool("verbose");
        s.u64("batchSize");
        s.finish();
        let list = problems.into_vec();
        assert_eq!(
            list[0].to_string(),
            "batchSze: unknown option \"batchSze\" (did you mean \"batchSize\"?)"
        );
    }

    #[test]
    fn durations_take_milliseconds_or_text() {
        let problems = Problems::default();
        let v = json!({"a": 1500, "b": "2s", "c": "soon"});
        let mut s = Section::open(&v, "x".into(), &problems).unwrap();
        assert_eq!(s.duration("a"), Some(Duration::from_millis(1500)));
        assert_eq!(s.duration("b"), Some(Duration::from_secs(2)));
        assert_eq!(s.duration("c"), None);
        assert!(
            problems.into_vec()[0]
                .to_string()
                .starts_with("x.c: invalid duration")
        );
    }
}
