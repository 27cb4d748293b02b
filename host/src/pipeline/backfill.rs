//! Running backfills, shared by the admin API (start, finish), intake (tagging copies) and
//! the workers, which let a live event win over an older backfilled copy of the same key.
//!
//! A copy yields when a live event of its key was accepted after the backfill started: that
//! live event is newer than (or as new as) the state the backfill read. In cluster mode a
//! backfill starts at a version, and its copies are versioned below it (see the sequencer),
//! so the destinations' guards keep any live change made since.

use std::sync::{Arc, Mutex};
use tokio::sync::watch;

use crate::cluster::Cluster;
use crate::event::{BackfillTag, now_rfc3339};
use crate::journal::{Backfill, Journal, JournalError};

pub struct Backfills {
    journal: Arc<Journal>,
    /// In cluster mode backfills start at a version rather than the journal's head.
    cluster: Option<Arc<Cluster>>,
    entries: Mutex<Vec<Backfill>>,
    changed: watch::Sender<u64>,
}

impl Backfills {
    pub async fn load(
        journal: Arc<Journal>,
        cluster: Option<Arc<Cluster>>,
    ) -> Result<Arc<Backfills>, JournalError> {
        let entries = journal.backfills().await?;
        Ok(Arc::new(Backfills {
            journal,
            cluster,
            entries: Mutex::new(entries),
            changed: watch::channel(0).0,
        }))
    }

    fn notify(&self) {
        self.changed.send_modify(|n| *n += 1);
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    pub fn list(&self) -> Vec<Backfill> {
        self.entries.lock().expect("backfills lock").clone()
    }

    pub async fn start(
        &self,
        replicators: Vec<String>,
        source: String,
    ) -> Result<Backfill, JournalError> {
        let b = Backfill {
            id: 0,
            // A live change made from now on gets a larger version wherever it is versioned.
            since: match &self.cluster {
                Some(c) => c.clock.behind_every_host(),
                None => self.journal.head(),
            },
            replicators,
            source,
            started_at: now_rfc3339(),
            finished_at_head: None,
        };
        let saved = self.journal.save_backfill(b).await?;
        self.entries
            .lock()
            .expect("backfills lock")
            .push(saved.clone());
        self.notify();
        Ok(saved)
    }

    /// The tag for copies of a running backfill, or why there is none.
    pub fn tag(&self, id: u64) -> Result<BackfillTag, String> {
        let entries = self.entries.lock().expect("backfills lock");
        match entries.iter().find(|b| b.id == id) {
            Some(b) if b.finished_at_head.is_none() => Ok(BackfillTag {
                since: b.since,
                replicators: b.replicators.clone(),
            }),
            Some(_) => Err(format!("backfill {id} has finished")),
            None => Err(format!("no running backfill {id}")),
        }
    }

    pub async fn finish(&self, id: u64) -> Result<Option<Backfill>, JournalError> {
        let found = {
            let mut entries = self.entries.lock().expect("backfills lock");
            entries.iter_mut().find(|b| b.id == id).map(|b| {
                b.finished_at_head.get_or_insert(self.journal.head());
                b.clone()
            })
        };
        if let Some(b) = &found {
            self.journal.save_backfill(b.clone()).await?;
        }
        Ok(found)
    }

    /// Live events after this sequence must be remembered by a worker at `cursor`: the
    /// smallest start of the backfills whose copies it has not all passed.
    pub fn tracking_since(&self, cursor: u64) -> Option<u64> {
        self.entries
            .lock()
            .expect("backfills lock")
            .iter()
            .filter(|b| b.finished_at_head.is_none_or(|h| h > cursor))
            .map(|b| b.since)
            .min()
    }

    /// Events after this must stay in the journal (a restarted worker re-reads them).
    pub fn prune_floor(&self) -> Option<u64> {
        self.entries
            .lock()
            .expect("backfills lock")
            .iter()
            .map(|b| b.since)
            .min()
    }

    /// Forgets finished backfills every replicator is past.
    pub async fn forget_passed(&self, floor: u64) -> Result<(), JournalError> {
        let passed: Vec<u64> = self
            .entries
            .lock()
            .expect("backfills lock")
            .iter()
            .filter(|b| b.finished_at_head.is_some_and(|h| h <= floor))
            .map(|b| b.id)
            .collect();
        for id in passed {
            self.journal.remove_backfill(id).await?;
            self.entries
                .lock()
                .expect("backfills lock")
                .retain(|b| b.id != id);
            self.notify();
        }
        Ok(())
    }
}
