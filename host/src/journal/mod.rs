//! The journal: events, per-replicator progress, dead letters and the replication log, in one
//! crash-safe redb file. All writes go through one writer thread that commits everything
//! waiting in a single fsynced transaction (group commit); reads run concurrently.

pub mod observed;
pub mod records;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot, watch};

use crate::event::{BackfillTag, Event, StoredEvent};
pub use observed::{Observation, Observed, Outcome, RecordKey, Seen};
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
/// Dead letters per replicator, kept with every change so status never scans the queue.
const DEAD_LETTER_COUNTS: TableDefinition<&str, u64> = TableDefinition::new("dead_letter_counts");
/// `META` flag: `DEAD_LETTER_COUNTS` was filled from the queue once (journals made before it).
const COUNTS_FILLED: &str = "dead_letter_counts_filled";

/// Jobs handed to the writer per transaction, at most.
const MAX_GROUP: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    /// The file could not be read or written. Shared: one failed commit fails every write
    /// of its group with the same cause.
    #[error("journal storage error: {0}")]
    Storage(#[source] Arc<redb::Error>),
    #[error("journal record cannot be encoded or decoded: {0}")]
    Encoding(#[from] serde_json::Error),
    #[error("cannot create the journal directory {path}: {source}")]
    CreateDir {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the journal writer thread: {0}")]
    Thread(#[source] std::io::Error),
    #[error("a journal read stopped: {0}")]
    Read(#[from] tokio::task::JoinError),
    #[error("journal is closed")]
    Closed,
}

macro_rules! storage_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for JournalError {
            fn from(e: $t) -> Self { JournalError::Storage(Arc::new(e.into())) }
        }
    )*};
}
storage_errors!(
    redb::Error,
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
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

/// One write waiting for the writer. `run` may be called again in a fresh transaction when
/// another job of its group failed (so it must not consume what it captured); `answer` is
/// called once, after the commit.
trait Job: Send {
    fn run(&mut self, txn: &mut Txn) -> Result<(), JournalError>;
    fn answer(self: Box<Self>, outcome: Result<(), JournalError>);
}

struct Write<F, R> {
    f: F,
    value: Option<R>,
    reply: oneshot::Sender<Result<R, JournalError>>,
}

impl<F, R> Job for Write<F, R>
where
    F: FnMut(&mut Txn) -> Result<R, JournalError> + Send,
    R: Send,
{
    fn run(&mut self, txn: &mut Txn) -> Result<(), JournalError> {
        self.value = Some((self.f)(txn)?);
        Ok(())
    }

    fn answer(self: Box<Self>, outcome: Result<(), JournalError>) {
        let Write { value, reply, .. } = *self;
        let _ = reply.send(outcome.and_then(|()| value.ok_or(JournalError::Closed)));
    }
}

pub struct Journal {
    db: Arc<Database>,
    jobs: mpsc::Sender<Box<dyn Job>>,
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
        std::fs::create_dir_all(dir).map_err(|source| JournalError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
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
            tx.open_table(observed::OBSERVED)?;
            tx.open_table(observed::CAPTURE_POSITIONS)?;
            fill_dead_letter_counts(&tx)?;
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
        let (jobs, rx) = mpsc::channel::<Box<dyn Job>>(MAX_GROUP);
        let (head, _) = watch::channel(counters.next_sequence - 1);
        let live_bytes = Arc::new(AtomicU64::new(counters.live_bytes));
        let writer_db = db.clone();
        let writer_head = head.clone();
        let writer_bytes = live_bytes.clone();
        let handle = std::thread::Builder::new()
            .name("journal-writer".into())
            .spawn(move || writer(writer_db, rx, counters, writer_head, writer_bytes))
            .map_err(JournalError::Thread)?;
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
        f: impl FnMut(&mut Txn) -> Result<R, JournalError> + Send + 'static,
    ) -> Result<R, JournalError> {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Write {
            f,
            value: None,
            reply,
        });
        self.jobs
            .send(job)
            .await
            .map_err(|_| JournalError::Closed)?;
        answer.await.map_err(|_| JournalError::Closed)?
    }

    /// Runs a read on the blocking pool: redb reads touch the disk.
    async fn reading<R: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<R, JournalError> + Send + 'static,
    ) -> Result<R, JournalError> {
        let db = self.db.clone();
        tokio::task::spawn_blocking(move || f(&db)).await?
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
    pub async fn read(&self, from: u64, max: usize) -> Result<Vec<StoredEvent>, JournalError> {
        self.reading(move |db| {
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
    }

    /// Events before `before`, newest first, at most `max`.
    pub async fn read_before(
        &self,
        before: u64,
        max: usize,
    ) -> Result<Vec<StoredEvent>, JournalError> {
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(EVENTS)?;
            let mut out = Vec::with_capacity(max.min(4096));
            for item in table.range(..before)?.rev().take(max) {
                let (_, v) = item?;
                out.push(serde_json::from_slice(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// The oldest sequence still stored (head + 1 when empty).
    pub async fn first_retained(&self) -> Result<u64, JournalError> {
        let empty = self.head() + 1;
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(EVENTS)?;
            Ok(table.first()?.map(|(k, _)| k.value()).unwrap_or(empty))
        })
        .await
    }

    /// The first stored sequence accepted at or after `at_ms`.
    pub async fn sequence_at(&self, at_ms: i64) -> Result<Option<u64>, JournalError> {
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(EVENTS)?;
            for item in table.iter()? {
                let (k, v) = item?;
                let e: StoredEvent = serde_json::from_slice(v.value())?;
                if e.received_at_ms >= at_ms {
                    return Ok(Some(k.value()));
                }
            }
            Ok(None)
        })
        .await
    }

    /// Everything up to and including this sequence is done for `replicator`.
    pub async fn cursor(&self, replicator: &str) -> Result<Option<u64>, JournalError> {
        let replicator = replicator.to_string();
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(CURSORS)?;
            Ok(table.get(replicator.as_str())?.map(|v| v.value()))
        })
        .await
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
            count_dead_letters(txn.tx, &entry.replicator, 1)?;
            Ok(entry.id)
        })
        .await
    }

    pub async fn dead_letters(
        &self,
        filter: DeadLetterFilter,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, JournalError> {
        self.reading(move |db| scan(db, DEAD_LETTERS, limit, |d: &DeadLetter| filter.matches(d)))
            .await
    }

    /// Dead letters of each replicator that has any.
    pub async fn dead_letter_counts(
        &self,
    ) -> Result<std::collections::HashMap<String, u64>, JournalError> {
        self.reading(|db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(DEAD_LETTER_COUNTS)?;
            let mut out = std::collections::HashMap::new();
            for item in table.iter()? {
                let (k, v) = item?;
                out.insert(k.value().to_string(), v.value());
            }
            Ok(out)
        })
        .await
    }

    pub async fn dead_letter_by_id(&self, id: u64) -> Result<Option<DeadLetter>, JournalError> {
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(DEAD_LETTERS)?;
            Ok(match table.get(id)? {
                Some(v) => Some(serde_json::from_slice(v.value())?),
                None => None,
            })
        })
        .await
    }

    /// Moves the given dead letters to the redrive queue; returns the moved entries.
    pub async fn redrive(&self, ids: Vec<u64>) -> Result<Vec<DeadLetter>, JournalError> {
        self.write(move |txn| {
            let mut dlq = txn.tx.open_table(DEAD_LETTERS)?;
            let mut queue = txn.tx.open_table(REDRIVES)?;
            let mut moved = Vec::new();
            for &id in &ids {
                let Some(bytes) = dlq.remove(id)?.map(|v| v.value().to_vec()) else {
                    continue;
                };
                let mut entry: DeadLetter = serde_json::from_slice(&bytes)?;
                entry.redrives += 1;
                queue.insert(id, serde_json::to_vec(&entry)?.as_slice())?;
                moved.push(entry);
            }
            for entry in &moved {
                count_dead_letters(txn.tx, &entry.replicator, -1)?;
            }
            Ok(moved)
        })
        .await
    }

    /// Redriven entries still waiting to be delivered.
    pub async fn pending_redrives(
        &self,
        replicator: &str,
    ) -> Result<Vec<DeadLetter>, JournalError> {
        let replicator = replicator.to_string();
        self.reading(move |db| {
            scan(db, REDRIVES, usize::MAX, |d: &DeadLetter| {
                d.replicator == replicator
            })
        })
        .await
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
            let mut gone = Vec::new();
            for &id in &ids {
                if let Some(v) = dlq.remove(id)? {
                    gone.push(serde_json::from_slice::<DeadLetter>(v.value())?.replicator);
                }
            }
            for replicator in &gone {
                count_dead_letters(txn.tx, replicator, -1)?;
            }
            Ok(gone.len())
        })
        .await
    }

    pub async fn log(&self, entries: Vec<LogEntry>) -> Result<(), JournalError> {
        self.write(move |txn| {
            let mut table = txn.tx.open_table(LOG)?;
            for e in &entries {
                let log_id = txn.counters.next_log;
                txn.counters.next_log += 1;
                let stored = LogEntry {
                    log_id,
                    ..e.clone()
                };
                table.insert(log_id, serde_json::to_vec(&stored)?.as_slice())?;
            }
            Ok(())
        })
        .await
    }

    /// Log entries after `log_id`, oldest first.
    pub async fn logs_after(&self, log_id: u64, max: usize) -> Result<Vec<LogEntry>, JournalError> {
        self.reading(move |db| {
            let tx = db.begin_read()?;
            let table = tx.open_table(LOG)?;
            let mut out = Vec::new();
            for item in table.range(log_id + 1..)?.take(max) {
                let (_, v) = item?;
                out.push(serde_json::from_slice(v.value())?);
            }
            Ok(out)
        })
        .await
    }

    /// The newest log entries first.
    pub async fn logs(
        &self,
        filter: LogFilter,
        limit: usize,
    ) -> Result<Vec<LogEntry>, JournalError> {
        self.reading(move |db| {
            let tx = db.begin_read()?;
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
        })
        .await
    }

    /// Deletes events up to `floor` accepted before `keep_after_ms`, at most `max` of them,
    /// and trims the log to `log.keep` entries, never past what `log.shipped_to` has not
    /// shipped yet. Returns how many events went.
    pub async fn prune(
        &self,
        floor: u64,
        keep_after_ms: i64,
        max: usize,
        log: LogRetention,
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
            let mut table = txn.tx.open_table(LOG)?;
            let mut keep_from = txn.counters.next_log.saturating_sub(log.keep);
            if let Some(shipped) = log.shipped_to {
                keep_from = keep_from.min(shipped + 1);
            }
            table.retain_in(..keep_from, |_, _| false)?;
            Ok(removed)
        })
        .await
    }
}

impl Journal {
    /// Records a running backfill; its id is the next free one.
    pub async fn save_backfill(&self, backfill: Backfill) -> Result<Backfill, JournalError> {
        self.write(move |txn| {
            let mut table = txn.tx.open_table(BACKFILLS)?;
            let mut saved = backfill.clone();
            if saved.id == 0 {
                saved.id = table.last()?.map(|(k, _)| k.value()).unwrap_or(0) + 1;
            }
            table.insert(saved.id, serde_json::to_vec(&saved)?.as_slice())?;
            Ok(saved)
        })
        .await
    }

    pub async fn backfills(&self) -> Result<Vec<Backfill>, JournalError> {
        self.reading(|db| scan(db, BACKFILLS, usize::MAX, |_: &Backfill| true))
            .await
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

/// How much of the replication log pruning keeps.
#[derive(Debug, Clone, Copy)]
pub struct LogRetention {
    /// Entries kept at most.
    pub keep: u64,
    /// The last entry the log shipper has written out, when it runs: nothing after it goes.
    pub shipped_to: Option<u64>,
}

/// Adds `delta` to a replicator's dead-letter count.
fn count_dead_letters(
    tx: &WriteTransaction,
    replicator: &str,
    delta: i64,
) -> Result<(), JournalError> {
    let mut counts = tx.open_table(DEAD_LETTER_COUNTS)?;
    let now = counts.get(replicator)?.map(|v| v.value()).unwrap_or(0);
    let next = now.saturating_add_signed(delta);
    if next == 0 {
        counts.remove(replicator)?;
    } else {
        counts.insert(replicator, next)?;
    }
    Ok(())
}

/// Journals made before the counts were kept get them from one scan of the queue.
fn fill_dead_letter_counts(tx: &WriteTransaction) -> Result<(), JournalError> {
    let mut meta = tx.open_table(META)?;
    if meta.get(COUNTS_FILLED)?.is_some() {
        return Ok(());
    }
    let mut counts: std::collections::HashMap<String, u64> = Default::default();
    for item in tx.open_table(DEAD_LETTERS)?.iter()? {
        let (_, v) = item?;
        let entry: DeadLetter = serde_json::from_slice(v.value())?;
        *counts.entry(entry.replicator).or_default() += 1;
    }
    let mut table = tx.open_table(DEAD_LETTER_COUNTS)?;
    for (replicator, n) in counts {
        table.insert(replicator.as_str(), n)?;
    }
    meta.insert(COUNTS_FILLED, 1)?;
    Ok(())
}

/// The writer thread: takes every job waiting, runs them in one transaction, commits once.
/// A job that fails gets its own error and leaves the group; the others run again, in their
/// order, in a fresh transaction, so one bad write never fails or loses its neighbours.
fn writer(
    db: Arc<Database>,
    mut rx: mpsc::Receiver<Box<dyn Job>>,
    mut counters: Counters,
    head: watch::Sender<u64>,
    live_bytes: Arc<AtomicU64>,
) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    while let Some(first) = rx.blocking_recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match rx.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let outcome = loop {
            let before = counters;
            match commit_group(&db, &mut group, &mut counters) {
                Ok(()) => break Ok(()),
                Err(GroupFailure::Job(i, e)) => {
                    counters = before;
                    group.remove(i).answer(Err(e));
                    if group.is_empty() {
                        break Ok(());
                    }
                }
                Err(GroupFailure::Commit(e)) => {
                    counters = before;
                    tracing::error!(error = %e, "journal commit failed; the writes of this group were not accepted");
                    break Err(e);
                }
            }
        };
        if outcome.is_ok() {
            live_bytes.store(counters.live_bytes, Ordering::Relaxed);
            head.send_if_modified(|h| {
                let new = counters.next_sequence - 1;
                let changed = *h != new;
                *h = new;
                changed
            });
        }
        for job in group.drain(..) {
            job.answer(outcome.clone().map_err(JournalError::Storage));
        }
    }
}

enum GroupFailure {
    /// The job at this index failed: the transaction was dropped.
    Job(usize, JournalError),
    Commit(Arc<redb::Error>),
}

/// Runs every job of a group in one transaction and commits it.
fn commit_group(
    db: &Database,
    group: &mut [Box<dyn Job>],
    counters: &mut Counters,
) -> Result<(), GroupFailure> {
    let storage = |e: redb::Error| GroupFailure::Commit(Arc::new(e));
    let tx = db.begin_write().map_err(|e| storage(e.into()))?;
    let mut txn = Txn {
        tx: &tx,
        counters: &mut *counters,
    };
    for (i, job) in group.iter_mut().enumerate() {
        job.run(&mut txn).map_err(|e| GroupFailure::Job(i, e))?;
    }
    {
        let mut meta = tx.open_table(META).map_err(|e| storage(e.into()))?;
        for (key, value) in [
            ("next_sequence", counters.next_sequence),
            ("next_dead_letter", counters.next_dead_letter),
            ("next_log", counters.next_log),
            ("live_bytes", counters.live_bytes),
        ] {
            meta.insert(key, value).map_err(|e| storage(e.into()))?;
        }
    }
    tx.commit().map_err(|e| storage(e.into()))
}

#[cfg(test)]
mod tests {
    use super::records::fixtures::{dead_letter, insert};
    use super::*;

    #[tokio::test]
    async fn appends_survive_reopen_and_prune_respects_the_floor() {
        let dir = tempfile::tempdir().unwrap();
        {
            let j = Journal::open(dir.path(), 1 << 20).unwrap();
            let (a, b) = tokio::join!(
                j.append(vec![insert("a"), insert("b")], 1, None),
                j.append(vec![insert("c")], 2, None)
            );
            let (a, b) = (a.unwrap(), b.unwrap());
            assert_eq!(a.end - a.start + b.end - b.start, 3);
            assert_eq!(j.head(), 3);
            j.commit_cursor("r", 2).await.unwrap();
        }
        let j = Journal::open(dir.path(), 1 << 20).unwrap();
        assert_eq!(j.head(), 3);
        assert_eq!(j.cursor("r").await.unwrap(), Some(2));
        let all = j.read(1, 10).await.unwrap();
        assert_eq!(
            all.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [1, 2, 3]
        );
        let log = LogRetention {
            keep: 10,
            shipped_to: None,
        };
        assert_eq!(j.prune(2, i64::MAX, 100, log).await.unwrap(), 2);
        assert_eq!(j.first_retained().await.unwrap(), 3);
        assert_eq!(j.append(vec![insert("d")], 3, None).await.unwrap(), 4..5);
    }

    #[tokio::test]
    async fn a_failing_write_gets_its_own_error_and_its_group_commits() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1 << 20).unwrap();
        let failing = j.write(|_| -> Result<(), JournalError> {
            Err(JournalError::Encoding(
                serde_json::from_str::<u8>("x").unwrap_err(),
            ))
        });
        let (a, bad, b, c) = tokio::join!(
            j.append(vec![insert("a")], 1, None),
            failing,
            j.append(vec![insert("b")], 1, None),
            j.commit_cursor("r", 1),
        );
        assert!(matches!(bad, Err(JournalError::Encoding(_))), "{bad:?}");
        let (a, b) = (a.unwrap(), b.unwrap());
        c.unwrap();
        assert_eq!(
            b.start, a.end,
            "sequences stay dense after the failed job left"
        );
        assert_eq!(j.head(), 2);
        assert_eq!(j.read(1, 10).await.unwrap().len(), 2);
        assert_eq!(j.cursor("r").await.unwrap(), Some(1));
    }

    #[tokio::test]
    async fn dead_letter_counts_follow_the_queue_and_log_pruning_waits_for_the_shipper() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::open(dir.path(), 1 << 20).unwrap();
        let one = j.dead_letter(dead_letter("r1", "a")).await.unwrap();
        let two = j.dead_letter(dead_letter("r1", "a")).await.unwrap();
        j.dead_letter(dead_letter("r2", "a")).await.unwrap();
        j.redrive(vec![one]).await.unwrap();
        j.discard(vec![two, 999]).await.unwrap();
        let counts = j.dead_letter_counts().await.unwrap();
        assert_eq!(counts.get("r1"), None);
        assert_eq!(counts.get("r2"), Some(&1));

        let entry = |id: &str| LogEntry {
            log_id: 0,
            at: String::new(),
            replicator: "r1".into(),
            resource: "users".into(),
            destination: "users".into(),
            action: "insert".into(),
            id: id.into(),
            sequence: 1,
            status: LogStatus::Success,
            error: None,
            attempts: 1,
        };
        j.log((0..5).map(|i| entry(&i.to_string())).collect())
            .await
            .unwrap();
        let retention = LogRetention {
            keep: 1,
            shipped_to: Some(2),
        };
        j.prune(0, 0, 10, retention).await.unwrap();
        let left: Vec<u64> = j
            .logs_after(0, 10)
            .await
            .unwrap()
            .iter()
            .map(|e| e.log_id)
            .collect();
        assert_eq!(left, [3, 4, 5], "entries the shipper has not written stay");
        let retention = LogRetention {
            keep: 1,
            shipped_to: None,
        };
        j.prune(0, 0, 10, retention).await.unwrap();
        assert_eq!(j.logs_after(0, 10).await.unwrap().len(), 1);
    }
}
