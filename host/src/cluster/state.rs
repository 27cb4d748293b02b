//! What every host of a cluster sees alike, kept in an s3db database (`cluster.stateDatabase`)
//! under `replicator-cluster/`: the dead letters (one object each, listed in id order) and
//! each host's heartbeat, from which status lists the hosts seen.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::journal::{DeadLetter, DeadLetterFilter};
use crate::s3db::Connection;
use crate::s3db::store::{Put, Store, StoreError};

const DEAD_LETTERS: &str = "replicator-cluster/dead-letters/";
const HOSTS: &str = "replicator-cluster/hosts/";
const PAGE: usize = 1000;

/// A host's heartbeat, written every few seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Heartbeat {
    pub host_id: String,
    pub started_at: String,
    pub seen_at_ms: i64,
    /// What this host is doing for each replicator.
    pub replicators: BTreeMap<String, HostWork>,
}

/// One replicator's work on one host.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HostWork {
    /// Messages received and not yet done.
    pub held: u64,
    /// When the oldest of them was accepted (ms since the epoch; 0: none).
    pub oldest_pending_ms: i64,
}

pub struct SharedState {
    store: Store,
    connection: Connection,
}

impl SharedState {
    pub async fn open(connection: &Connection) -> SharedState {
        SharedState {
            store: Store::open(connection).await,
            connection: connection.clone(),
        }
    }

    fn key(&self, key: String) -> String {
        self.connection.key(&key)
    }

    /// Stores a dead letter under a new id (`make_id` is asked again if the id is taken).
    pub async fn put_dead_letter(
        &self,
        mut entry: DeadLetter,
        make_id: impl Fn() -> u64,
    ) -> Result<u64, StoreError> {
        loop {
            entry.id = make_id();
            let body = serde_json::to_vec(&entry).expect("a dead letter serializes");
            let key = self.key(dead_letter_key(entry.id, &entry.replicator));
            let put = self
                .store
                .put(
                    &key,
                    &body,
                    &BTreeMap::new(),
                    Some("application/json"),
                    true,
                )
                .await?;
            if put == Put::Written {
                return Ok(entry.id);
            }
        }
    }

    /// Every dead letter's key, id and replicator, oldest first.
    async fn keys(&self, prefix: &str) -> Result<Vec<(String, u64, String)>, StoreError> {
        let prefix = self.key(format!("{DEAD_LETTERS}{prefix}"));
        let mut out = Vec::new();
        let mut after: Option<String> = None;
        loop {
            let page = self.store.list(&prefix, after.as_deref(), PAGE).await?;
            let full = page.len() == PAGE;
            after = page.last().map(|l| l.key.clone());
            out.extend(page.into_iter().filter_map(|l| {
                let (id, replicator) = parse_dead_letter_key(&l.key)?;
                Some((l.key, id, replicator))
            }));
            if !full {
                return Ok(out);
            }
        }
    }

    async fn read(&self, key: &str) -> Result<Option<DeadLetter>, StoreError> {
        Ok(self
            .store
            .get(key)
            .await?
            .and_then(|o| serde_json::from_slice(&o.body).ok()))
    }

    /// Dead letters matching `filter`, oldest first, at most `limit`.
    pub async fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, StoreError> {
        let mut out = Vec::new();
        for (key, _, replicator) in self.keys("").await? {
            if out.len() >= limit {
                break;
            }
            if filter.replicator.as_ref().is_some_and(|r| *r != replicator) {
                continue;
            }
            if let Some(d) = self.read(&key).await?
                && filter.matches(&d)
            {
                out.push(d);
            }
        }
        Ok(out)
    }

    pub async fn dead_letter(&self, id: u64) -> Result<Option<DeadLetter>, StoreError> {
        for (key, _, _) in self.keys(&format!("{id:020}-")).await? {
            if let Some(d) = self.read(&key).await? {
                return Ok(Some(d));
            }
        }
        Ok(None)
    }

    /// Dead letters per replicator (from the keys alone).
    pub async fn dead_letter_counts(&self) -> Result<HashMap<String, u64>, StoreError> {
        let mut counts = HashMap::new();
        for (_, _, replicator) in self.keys("").await? {
            *counts.entry(replicator).or_insert(0) += 1;
        }
        Ok(counts)
    }

    /// The dead letters with these ids, read for a redrive.
    pub async fn take(&self, ids: &[u64]) -> Result<Vec<(String, DeadLetter)>, StoreError> {
        let wanted: BTreeSet<u64> = ids.iter().copied().collect();
        let mut out = Vec::new();
        for (key, id, _) in self.keys("").await? {
            if wanted.contains(&id)
                && let Some(d) = self.read(&key).await?
            {
                out.push((key, d));
            }
        }
        Ok(out)
    }

    pub async fn remove(&self, keys: &[String]) -> Result<(), StoreError> {
        for key in keys {
            self.store.delete(key).await?;
        }
        Ok(())
    }

    /// Deletes the dead letters with these ids; how many there were.
    pub async fn discard(&self, ids: &[u64]) -> Result<usize, StoreError> {
        let taken = self.take(ids).await?;
        let keys: Vec<String> = taken.into_iter().map(|(k, _)| k).collect();
        self.remove(&keys).await?;
        Ok(keys.len())
    }

    pub async fn beat(&self, heartbeat: &Heartbeat) -> Result<(), StoreError> {
        let key = self.key(format!("{HOSTS}{}.json", encode(&heartbeat.host_id)));
        let body = serde_json::to_vec(heartbeat).expect("a heartbeat serializes");
        self.store
            .put(
                &key,
                &body,
                &BTreeMap::new(),
                Some("application/json"),
                false,
            )
            .await?;
        Ok(())
    }

    /// Removes a host's heartbeat (it stopped cleanly).
    pub async fn forget(&self, host_id: &str) -> Result<(), StoreError> {
        self.store
            .delete(&self.key(format!("{HOSTS}{}.json", encode(host_id))))
            .await
    }

    /// Every host's last heartbeat.
    pub async fn hosts(&self) -> Result<Vec<Heartbeat>, StoreError> {
        let prefix = self.key(HOSTS.to_string());
        let mut out = Vec::new();
        for listed in self.store.list(&prefix, None, PAGE).await? {
            if let Some(o) = self.store.get(&listed.key).await?
                && let Ok(h) = serde_json::from_slice(&o.body)
            {
                out.push(h);
            }
        }
        Ok(out)
    }
}

/// `<id, 20 digits>-<replicator, encoded>.json`: listed in id order.
fn dead_letter_key(id: u64, replicator: &str) -> String {
    format!("{DEAD_LETTERS}{id:020}-{}.json", encode(replicator))
}

fn parse_dead_letter_key(key: &str) -> Option<(u64, String)> {
    let name = key.rsplit('/').next()?.strip_suffix(".json")?;
    let (id, replicator) = name.split_once('-')?;
    Some((id.parse().ok()?, decode(replicator)?))
}

/// Letters, digits, `_` and `.` as they are; any other byte as `-XX`.
fn encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b == b'_' || b == b'.' {
            out.push(b as char);
        } else {
            out.push_str(&format!("-{b:02X}"));
        }
    }
    out
}

fn decode(text: &str) -> Option<String> {
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        if b == b'-' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            bytes.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            bytes.push(b);
            rest = tail;
        }
    }
    String::from_utf8(bytes).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dead_letter_keys_sort_by_id_and_give_back_the_replicator() {
        let key = dead_letter_key(42, "pg-main/2 ü");
        assert_eq!(
            key,
            "replicator-cluster/dead-letters/00000000000000000042-pg-2Dmain-2F2-20-C3-BC.json"
        );
        assert_eq!(
            parse_dead_letter_key(&format!("prefix/{key}")),
            Some((42, "pg-main/2 ü".to_string()))
        );
        assert!(dead_letter_key(9, "z") < dead_letter_key(10, "a"));
        assert_eq!(
            parse_dead_letter_key("replicator-cluster/dead-letters/x.json"),
            None
        );
    }

    #[tokio::test]
    async fn dead_letters_are_stored_listed_counted_and_discarded() {
        let dir = tempfile::tempdir().unwrap();
        let conn = Connection::parse(&format!("file://{}", dir.path().display())).unwrap();
        let state = SharedState::open(&conn).await;
        let ids = std::sync::atomic::AtomicU64::new(100);
        let next = || ids.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut entry = crate::journal::records::fixtures::dead_letter("pg", "u1");
        state.put_dead_letter(entry.clone(), next).await.unwrap();
        entry.replicator = "hook".into();
        entry.record_id = "u2".into();
        state.put_dead_letter(entry, next).await.unwrap();
        let all = state
            .dead_letters(&DeadLetterFilter::default(), 10)
            .await
            .unwrap();
        assert_eq!(all.iter().map(|d| d.id).collect::<Vec<_>>(), [100, 101]);
        let counts = state.dead_letter_counts().await.unwrap();
        assert_eq!(counts.get("pg"), Some(&1));
        assert_eq!(
            state.dead_letter(101).await.unwrap().unwrap().record_id,
            "u2"
        );
        assert_eq!(state.discard(&[100, 7]).await.unwrap(), 1);
        assert_eq!(state.dead_letter_counts().await.unwrap().len(), 1);
    }
}
