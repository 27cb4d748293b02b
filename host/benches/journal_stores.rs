//! The journal's workload on two embedded stores, redb and fjall: durable appends in
//! groups (one fsync per group, as group commit does), a scan from a cursor, and pruning.
//!
//! `cargo bench -p replicator --bench journal_stores` prints events/s for each.

use std::time::{Duration, Instant};

const EVENTS: u64 = 200_000;
const PAYLOAD: usize = 300;

trait Store {
    fn name(&self) -> &'static str;
    /// Appends `keys` with one durable commit.
    fn append(&mut self, keys: std::ops::Range<u64>, value: &[u8]);
    fn scan(&self, from: u64) -> u64;
    fn prune(&mut self, below: u64);
}

struct Redb(redb::Database);
const T: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");

impl Store for Redb {
    fn name(&self) -> &'static str {
        "redb 4"
    }
    fn append(&mut self, keys: std::ops::Range<u64>, value: &[u8]) {
        let tx = self.0.begin_write().unwrap();
        {
            let mut t = tx.open_table(T).unwrap();
            for k in keys {
                t.insert(k, value).unwrap();
            }
        }
        tx.commit().unwrap();
    }
    fn scan(&self, from: u64) -> u64 {
        use redb::ReadableDatabase;
        let tx = self.0.begin_read().unwrap();
        let t = tx.open_table(T).unwrap();
        let mut n = 0;
        for item in t.range(from..).unwrap() {
            let (_, v) = item.unwrap();
            n += v.value().len() as u64 / PAYLOAD as u64;
        }
        n
    }
    fn prune(&mut self, below: u64) {
        let tx = self.0.begin_write().unwrap();
        tx.open_table(T)
            .unwrap()
            .retain_in(..below, |_, _| false)
            .unwrap();
        tx.commit().unwrap();
    }
}

struct Fjall {
    db: fjall::Database,
    events: fjall::Keyspace,
}

impl Store for Fjall {
    fn name(&self) -> &'static str {
        "fjall 3"
    }
    fn append(&mut self, keys: std::ops::Range<u64>, value: &[u8]) {
        let mut b = self.db.batch();
        for k in keys {
            b.insert(&self.events, k.to_be_bytes(), value);
        }
        b.commit().unwrap();
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
    fn scan(&self, from: u64) -> u64 {
        let mut n = 0;
        for kv in self.events.range(from.to_be_bytes()..) {
            let v = kv.value().unwrap();
            n += v.len() as u64 / PAYLOAD as u64;
        }
        n
    }
    fn prune(&mut self, below: u64) {
        let mut b = self.db.batch();
        for kv in self.events.range(..below.to_be_bytes()) {
            b.remove(&self.events, kv.key().unwrap());
        }
        b.commit().unwrap();
        self.db.persist(fjall::PersistMode::SyncAll).unwrap();
    }
}

fn rate(n: u64, d: Duration) -> String {
    format!("{:>10.0}/s", n as f64 / d.as_secs_f64())
}

fn run(store: &mut dyn Store) {
    let value = vec![b'x'; PAYLOAD];
    let mut next = 0u64;
    for group in [1u64, 100, 1000] {
        let n = if group == 1 { 2_000 } else { EVENTS };
        let start = Instant::now();
        for _ in 0..n / group {
            store.append(next..next + group, &value);
            next += group;
        }
        println!(
            "{:<8} durable append, {group:>4} events per commit: {}",
            store.name(),
            rate(n, start.elapsed())
        );
    }
    let start = Instant::now();
    let read = store.scan(next - EVENTS);
    println!(
        "{:<8} scan from a cursor:                     {}",
        store.name(),
        rate(read, start.elapsed())
    );
    let start = Instant::now();
    store.prune(next - EVENTS / 2);
    println!(
        "{:<8} prune (delete a delivered range):       {}",
        store.name(),
        rate(EVENTS, start.elapsed())
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut redb = Redb(redb::Database::create(dir.path().join("r.redb")).unwrap());
    run(&mut redb);
    let db = fjall::Database::builder(dir.path().join("fjall"))
        .open()
        .unwrap();
    let events = db
        .keyspace("events", fjall::KeyspaceCreateOptions::default)
        .unwrap();
    run(&mut Fjall { db, events });
}
