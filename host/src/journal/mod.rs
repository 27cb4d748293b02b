//! The journal: events, per-replicator progress, dead letters and the replication log, in one
//! crash-safe redb file. All writes go through one writer thread that commits everything
//! waiting in a single fsynced transaction (group commit); reads run concurrently.

pub mod records;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};

use crate::event::{BackfillTag, Event, StoredEvent};
pub use records::{
    Attempt, Backfill, DeadLetter, DeadLetterFilter, LogEntry, LogFilter, LogStatus,
};

const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");
const CURSORS: TableDefinition<&str, u64> = TableDefinition::new("cursors");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const REDRIVES: TableDefinition<u64, &[u8]> = TableDefinition::new("redrives");
const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const BACKFILLS: TableDefinition<u64, &[u8]> = TableDefinition::new("backfills");

/// Jobs handed to the writer per transaction, at most.
const MAX_GROUP: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal storage error: {0}")]
    Storage(String),
    #[error("journal is closed")]
    Closed,
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for JournalError {
            fn from(e: $t) -> Self { JournalError::Storage(e.to_string()) }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError,
    serde_json::Error
);

/// Counters kept in `META`, mirrored in memory by the writer.
#[derive(Debug, Clone, Copy, Default)]
struct Counters {
    next_sequence: u64,
    next_dead_letter: u64,
    next_log: u64,
    live_bytes: u64,
}

/// What a job sees: the open transaction and the counters.
pub struct Txn<'a> {
    tx: &'a WriteTransaction,
    counters: &'a mut Counters,
}

type Done = Box<dyn FnOnce(Result<(), &JournalError>) + Send>;
type Job = Box<dyn FnOnce(&mut Txn) -> Result<Done, JournalError> + Send>;

pub struct Journal {
    db: Arc<Database>,
    jobs: mpsc::Sender<Job>,
    head: watch::Sender<u64>,
    live_bytes: Arc<AtomicU64>,
    writer: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Journal {
    /// Lets the writer finish what it was given, so the file can be opened again at once.
    fn drop(&mut self) {
        let (closed, _) = mpsc::channel(1);
        drop(std::mem::replace(&mut self.jobs, closed));
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl Journal {
    /// Opens (or creates) the journal in `dir`, caching at most `cache_bytes` of it in memory.
    pub fn open(dir: &Path, cache_bytes: usize) -> Result<Arc<Journal>, JournalError> {
        std::fs::create_dir_all(dir)
            .map_err(|e| JournalError::Storage(format!("cannot create {}: {e}", dir.display())))?;
        let db = Arc::new(
            Database::builder()
                .set_cache_size(cache_bytes)
                .create(dir.join("journal.redb"))?,
        );
        let tx = db.begin_write()?;
        let counters = {
            for t in [EVENTS, DEAD_LETTERS, REDRIVES, LOG, BACKFILLS] {
                tx.open_table(t)?;
            }
            tx.open_table(CURSORS)?;
            let meta = tx.open_table(META)?;
            let get = |k: &str| -> Result<u64, JournalError> {
                Ok(meta.get(k)?.map(|v| v.value()).unwrap_or(0))
            };
            Counters {
                next_sequence: get("next_sequence")?.max(1),
                next_dead_letter: get("next_dead_letter")?.max(1),
                next_log: get("next_log")?.max(1),
                live_bytes: get("live_bytes")?,
            }
        };
        tx.commit()?;
        let (jobs, rx) = mpsc::channel::<Job>(MAX_GROUP);
        let (head, _) = watch::channel(counters.next_sequence - 1);
        let live_bytes = Arc::new(AtomicU64::new(counters.live_bytes));
        let writer_db = db.clone();
        let writer_head = head.clone();
        let writer_bytes = live_bytes.clone();
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer(writer_db, rx, counters, writer_head, writer_bytes))
            .map_err(|e| JournalError::Storage(e.to_string()))?;
        Ok(Arc::new(Journal {
            db,
            jobs,
            head,
            live_bytes,
            writer: Some(handle),
        }))
    }

    /// Runs `f` in the next group transaction and answers once it is durable.
    async fn write<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Txn) -> Result<R, JournalError> + Send + 'static,
    ) -> Result<R, JournalError> {
        let (reply, answer) = oneshot::channel();
        let job: Job = Box::new(move |txn| {
            let value = f(txn)?;
            Ok(Box::new(move |committed: Result<(), &JournalError>| {
                let _ = reply.send(
                    committed
                        .map(|()| value)
                        .map_err(|e| JournalError::Storage(e.to_string())),
                );
            }))
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Appends events durably and returns their sequences.
    pub async fn append(
        &self,
        events: Vec<Event>,
        received_at_ms: i64,
        backfill: Option<BackfillTag>,
    ) -> Result<Range<u64>, JournalError> {
        // Serialise outside the writer thread; only the sequence is filled in there.
        let encoded: Vec<Vec<u8>> = events
            .into_iter()
            .map(|event| {
                serde_json::to_vec(&StoredEvent {
                    sequence: 0,
                    received_at_ms,
                    event,
                    backfill: backfill.clone(),
                })
            })
            .collect::<Result<_, _>>()?;
        self.write(move |txn| {
            let first = txn.counters.next_sequence;
            let mut table = txn.tx.open_table(EVENTS)?;
            for (i, bytes) in encoded.iter().enumerate() {
                table.insert(
                    first + i as u64,
                    patch_sequence(bytes, first + i as u64).as_slice(),
                )?;
                txn.counters.live_bytes += bytes.len() as u64;
            }
            txn.counters.next_sequence += encoded.len() as u64;
            Ok(first..txn.counters.next_sequence)
        })
        .await
    }

    /// The newest sequence (0 when nothing was ever appended).
    pub fn head(&self) -> u64 {
        *self.head.borrow()
    }

    pub fn subscribe_head(&self) -> watch::Receiver<u64> {
        self.head.subscribe()
    }

    /// Bytes of events not yet pruned.
    pub fn live_bytes(&self) -> u64 {
        self.live_bytes.load(Ordering::Relaxed)
    }

    /// Events from `from` on, at most `max`.
    pub async fn read(
        self: &Arc<Self>,
        from: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || {
            let tx = db.begin_read()?;
            let table = tx.open_table(EVENTS)?;
            let mut out = Vec::with_capacity(max.min(4096));
            for item in table.range(from..)?.take(max) {
                let (_, v) = item?;
                out.push(serde_json::from_slice(v.value())?);
            }
            Ok(out)
        })
        .await
        .map_err(|e| JournalError::Storage(e.to_string()))?
    }

    /// The oldest sequence still stored (head + 1 when empty).
    pub fn first_retained(&self) -> Result<u64, JournalError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(EVENTS)?;
        Ok(table
            .first()?
            .map(|(k, _)| k.value())
            .unwrap_or(self.head() + 1))
    }

    /// The first stored sequence accepted at or after `at_ms`.
    pub fn sequence_at(&self, at_ms: i64) -> Result<Option<u64>, JournalError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(EVENTS)?;
        for item in table.iter()? {
            let (k, v) = item?;
            let e: StoredEvent = serde_json::from_slice(v.value())?;
            if e.received_at_ms >= at_ms {
                return Ok(Some(k.value()));
            }
        }
        Ok(None)
    }

    /// Everything up to and including this sequence is done for `replicator`.
    pub fn cursor(&self, replicator: &str) -> Result<Option<u64>, JournalError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(CURSORS)?;
        Ok(table.get(replicator)?.map(|v| v.value()))
    }

    pub async fn commit_cursor(&self, replicator: &str, position: u64) -> Result<(), JournalError> {
        let replicator = replicator.to_string();
        self.write(move |txn| {
            txn.tx
                .open_table(CURSORS)?
                .insert(replicator.as_str(), position)?;
            Ok(())
        })
        .await
    }

    /// Stores a dead letter and returns its id.
    pub async fn dead_letter(&self, mut entry: DeadLetter) -> Result<u64, JournalError> {
        self.write(move |txn| {
            entry.id = txn.counters.next_dead_letter;
            txn.counters.next_dead_letter += 1;
            txn.tx
                .open_table(DEAD_LETTERS)?
                .insert(entry.id, serde_json::to_vec(&entry)?.as_slice())?;
            Ok(entry.id)
        })
        .await
    }

    pub fn dead_letters(
        &self,
        filter: &DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, JournalError> {
        scan(&self.db, DEAD_LETTERS, limit, |d: &DeadLetter| {
            filter.matches(d)
        })
    }

    pub fn dead_letter_count(&self, replicator: &str) -> Result<u64, JournalError> {
        let filter = DeadLetterFilter {
            replicator: Some(replicator.into()),
            ..Default::default()
        };
        Ok(self.dead_letters(&filter, usize::MAX)?.len() as u64)
    }

    pub fn dead_letter_by_id(&self, id: u64) -> Result<Option<DeadLetter>, JournalError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(DEAD_LETTERS)?;
        Ok(match table.get(id)? {
            Some(v) => Some(serde_json::from_slice(v.value())?),
            None => None,
        })
    }

    /// Moves the given dead letters to the redrive queue; returns the moved entries.
    pub async fn redrive(&self, ids: Vec<u64>) -> Result<Vec<DeadLetter>, JournalError> {
        self.write(move |txn| {
            let mut dlq = txn.tx.open_table(DEAD_LETTERS)?;
            let mut queue = txn.tx.open_table(REDRIVES)?;
            let mut moved = Vec::new();
            for id in ids {
                let Some(bytes) = dlq.remove(id)?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                let mut entry: DeadLetter = serde_json::from_slice(&bytes)?;
                entry.redrives += 1;
                queue.insert(id, serde_json::to_vec(&entry)?.as_slice())?;
                moved.push(entry);
            }
            Ok(moved)
        })
        .await
    }

    /// Redriven entries still waiting to be delivered.
    pub fn pending_redrives(&self, replicator: &str) -> Result<Vec<DeadLetter>, JournalError> {
        scan(&self.db, REDRIVES, usize::MAX, |d: &DeadLetter| {
            d.replicator == replicator
        })
    }

    /// A redriven entry was delivered or dead-lettered again.
    pub async fn redrive_done(&self, id: u64) -> Result<(), JournalError> {
        self.write(move |txn| {
            txn.tx.open_table(REDRIVES)?.remove(id)?;
            Ok(())
        })
        .await
    }

    /// Deletes dead letters; returns how many existed.
    pub async fn discard(&self, ids: Vec<u64>) -> Result<usize, JournalError> {
        self.write(move |txn| {
            let mut dlq = txn.tx.open_table(DEAD_LETTERS)?;
            let mut n = 0;
            for id in ids {
                n += usize::from(dlq.remove(id)?.is_some());
            }
            Ok(n)
        })
        .await
    }

    pub async fn log(&self, entries: Vec<LogEntry>) -> Result<(), JournalError> {
        self.write(move |txn| {
            let mut table = txn.tx.open_table(LOG)?;
            for mut e in entries {
                e.log_id = txn.counters.next_log;
                txn.counters.next_log += 1;
                table.insert(e.log_id, serde_json::to_vec(&e)?.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    /// Log entries after `log_id`, oldest first.
    pub fn logs_after(&self, log_id: u64, max: usize) -> Result<Vec<LogEntry>, JournalError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(LOG)?;
        let mut out = Vec::new();
        for item in table.range(log_id + 1..)?.take(max) {
            let (_, v) = item?;
            out.push(serde_json::from_slice(v.value())?);
        }
        Ok(out)
    }

    /// The newest log entries first.
    pub fn logs(&self, filter: &LogFilter, limit: usize) -> Result<Vec<LogEntry>, JournalError> {
        let tx = self.db.begin_read()?;
        let table = tx.open_table(LOG)?;
        let mut out = Vec::new();
        for item in table.iter()?.rev() {
            let (_, v) = item?;
            let e: LogEntry = serde_json::from_slice(v.value())?;
            if filter.matches(&e) {
                out.push(e);
                if out.len() >= limit {
                    break;
                }
            }
        }
        Ok(out)
    }

    /// Deletes events up to `floor` accepted before `keep_after_ms`, at most `max` of them,
    /// and trims the log to `log_keep` entries. Returns how many events went.
    pub async fn prune(
        &self,
        floor: u64,
        keep_after_ms: i64,
        max: usize,
        log_keep: u64,
    ) -> Result<usize, JournalError> {
        self.write(move |txn| {
            let mut table = txn.tx.open_table(EVENTS)?;
            let mut removed = 0;
            let mut freed = 0u64;
            while removed < max {
                let Some((k, v)) = table.first()? else { break };
                let seq = k.value();
                let bytes = v.value().len() as u64;
                let received = serde_json::from_slice::<StoredEvent>(v.value())?.received_at_ms;
                drop((k, v));
                if seq > floor || received >= keep_after_ms {
                    break;
                }
                table.remove(seq)?;
                removed += 1;
                freed += bytes;
            }
            txn.counters.live_bytes = txn.counters.live_bytes.saturating_sub(freed);
            let mut log = txn.tx.open_table(LOG)?;
            let keep_from = txn.counters.next_log.saturating_sub(log_keep);
            log.retain_in(..keep_from, |_, _| false)?;
            Ok(removed)
        })
        .await
    }
}

impl Journal {
    /// Records a running backfill; its id is the next free one.
    pub async fn save_backfill(&self, mut backfill: Backfill) -> Result<Backfill, JournalError> {
        self.write(move |txn| {
            let mut table = txn.tx.open_table(BACKFILLS)?;
            if backfill.id == 0 {
                backfill.id = table.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1;
            }
            table.insert(backfill.id, serde_json::to_vec(&backfill)?.as_slice())?;
            Ok(backfill)
        })
        .await
    }

    pub fn backfills(&self) -> Result<Vec<Backfill>, JournalError> {
        scan(&self.db, BACKFILLS, usize::MAX, |_: &Backfill| true)
    }

    pub async fn remove_backfill(&self, id: u64) -> Result<(), JournalError> {
        self.write(move |txn| {
            txn.tx.open_table(BACKFILLS)?.remove(id)?;
            Ok(())
        })
        .await
    }
}

/// Entries of a JSON table matching `keep`, oldest first.
fn scan<T: serde::de::DeserializeOwned>(
    db: &Database,
    def: TableDefinition<u64, &[u8]>,
    limit: usize,
    keep: impl Fn(&T) -> bool,
) -> Result<Vec<T>, JournalError> {
    let tx = db.begin_read()?;
    let table = tx.open_table(def)?;
    let mut out = Vec::new();
    for item in table.iter()? {
        let (_, v) = item?;
        let value: T = serde_json::from_slice(v.value())?;
        if keep(&value) {
            out.push(value);
            if out.len() >= limit {
                break;
            }
        }
    }
    Ok(out)
}

/// Events are serialised before their sequence is known; `"sequence":0` is always their
/// first field, so the writer rewrites just that.
fn patch_sequence(bytes: &[u8], sequence: u64) -> Vec<u8> {
    const PREFIX: &[u8] = b"{\"sequence\":0";
    debug_assert!(bytes.starts_with(PREFIX));
    let mut out = Vec::with_capacity(bytes.len() + 20);
    out.extend_from_slice(b"{\"sequence\":");
    out.extend_from_slice(sequence.to_string().as_bytes());
    out.extend_from_slice(&bytes[PREFIX.len()..]);
    out
}

/// The writer thread: takes every job waiting, runs them in one transaction, commits once.
fn writer(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Job>,
    mut counters: Counters,
    head: watch::Sender<u64>,
    live_bytes: Arc<AtomicU64>,
) {
    let mut group: Vec<Job> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let before = counters;
        let mut done: Vec<Done> = Vec::with_capacity(group.len());
        let result = (|| -> Result<(), JournalError> {
            let tx = db.begin_write()?;
            {
                let mut txn = Txn {
                    tx: &tx,
                    counters: &mut counters,
                };
                for job in group.drain(..) {
                    done.push(job(&mut txn)?);
                }
                let mut meta = tx.open_table(META)?;
                meta.insert("next_sequence", counters.next_sequence)?;
                meta.insert("next_dead_letter", counters.next_dead_letter)?;
                meta.insert("next_log", counters.next_log)?;
                meta.insert("live_bytes", counters.live_bytes)?;
            }
            tx.commit()?;
            Ok(())
        })();
        match &result {
            Ok(()) => {
                live_bytes.store(counters.live_bytes, Ordering::Relaxed);
                head.send_if_modified(|h| {
                    let new = counters.next_sequence - 1;
                    let changed = *h != new;
                    *h = new;
                    changed
                });
            }
            Err(e) => {
                tracing::error!(error = %e, "journal commit failed; the writes of this group were not accepted");
                counters = before;
            }
        }
        group.clear();
        for d in done {
            d(result.as_ref().map(|_| ()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Action;

    fn event(id: &str) -> Event {
        Event {
            resource: "users".into(),
            action: Action::Insert,
            id: id.into(),
            data: Some(serde_json::json!({"id": id})),
            before: None,
            timestamp: "2026-11-23T10:00:00.000Z".into(),
            source: None,
            metadata: None,
        }
    }

    #[tokio::test]
    async fn appends_survive_reopen_and_prune_respects_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path(), 1 << 20).unwrap();
            let (a, b) = tokio::join!(
                j.append(vec![event("a"), event("b")], 1, None),
                j.append(vec![event("c")], 2, None)
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.end - a.start + b.end - b.start, 3);
            assert_eq!(j.head(), 3);
            j.commit_cursor("r", 2).await.unwrap();
        }
        let j = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(j.head(), 3);
        assert_eq!(j.cursor("r").unwrap(), Some(2));
        let all = j.read(1, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        assert_eq!(j.prune(2, i64::MAX, 100, 10).await.unwrap(), 2);
        assert_eq!(j.first_retained().unwrap(), 3);
        assert_eq!(j.append(vec![event("d")], 3, None).await.unwrap(), 4..5);
    }
}
