//! One replicator's delivery loop: read from its cursor, route, transform, batch, deliver,
//! retry, dead-letter, and move the cursor past what is finished.
//!
//! Ordering: a key (`route`, `resource`, `id`) has at most one delivery in flight or waiting
//! for a retry; its later events queue behind it (`keys`). Different keys run in parallel
//! batches. A batch's records stay here while the driver works on copies, so a task that
//! panics or fails loses nothing: its records count a failed attempt and go again.

mod keys;
mod outcome;
mod progress;
mod redrive;
mod transform_stage;

use std::collections::{BTreeMap, HashMap};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::backfill::Backfills;
use super::telemetry::{MonitorEvent, ReplicatorCounters, State};
use crate::cluster::feed::Feed;
use crate::cluster::{Cluster, Envelope};
use crate::delivery::{self as retry, Backoff};
use crate::delivery::{DeliveryPolicy, Route, RouteIndex};
use crate::drivers::{BatchOutcome, Delivery, DeliveryError, Driver};
use crate::event::{StoredEvent, now_rfc3339};
use crate::journal::{Attempt, DeadLetter, Journal, JournalError, LogEntry, LogStatus};
use crate::plugins::{Live, Transform};
use keys::{Key, KeyQueues};
use outcome::{BatchVerdict, Verdict};
use progress::Progress;
use redrive::{RedriveQueue, Redrives};
use transform_stage::TransformStage;

/// Instructions from the admin API.
pub enum Control {
    /// Start again from `from` (a replay); answers once the cursor moved.
    Rewind {
        from: u64,
        done: oneshot::Sender<()>,
    },
    /// Deliver these dead letters again.
    Redrive(Vec<DeadLetter>),
    /// Save progress and stop.
    Stop,
}

/// A redriven dead letter's identity, carried by each delivery made of it.
#[derive(Debug, Clone, Copy)]
struct Redriven {
    dead_letter: u64,
    /// Redrives before this one.
    redrives: u32,
    /// The event's sequence (in cluster mode, the version its queue message is held by).
    version: u64,
}

/// One event on its way to one route.
struct Item {
    event: Arc<StoredEvent>,
    route: usize,
    attempts: Vec<Attempt>,
    retries: Option<Backoff>,
    outage: Option<Backoff>,
    redriven: Option<Redriven>,
}

impl Item {
    fn new(event: Arc<StoredEvent>, route: usize) -> Item {
        Item {
            event,
            route,
            attempts: Vec::new(),
            retries: None,
            outage: None,
            redriven: None,
        }
    }
}

/// Why a dead letter could not be stored.
#[derive(Debug, thiserror::Error)]
enum DeadLetterError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Shared(#[from] crate::s3db::store::StoreError),
}

/// What the worker and its tasks share.
struct Shared {
    id: String,
    routes: Vec<Arc<Route>>,
    driver: Arc<dyn Driver>,
    policy: DeliveryPolicy,
    journal: Arc<Journal>,
    counters: ReplicatorCounters,
    log_errors: bool,
    /// In cluster mode dead letters go to the cluster's shared state.
    cluster: Option<Arc<Cluster>>,
}

impl Shared {
    fn monitor(&self, name: &'static str, item: &Item, error: Option<String>) -> MonitorEvent {
        let e = &item.event.event;
        MonitorEvent {
            name,
            replicator: self.id.clone(),
            source: None,
            resource: Some(e.resource.clone()),
            operation: Some(e.action.as_str().into()),
            id: Some(e.id.clone()),
            sequence: Some(item.event.sequence),
            attempt: Some(item.attempts.len() as u32 + 1),
            error,
            plugin: None,
        }
    }

    fn log_entry(&self, item: &Item, status: LogStatus, error: Option<String>) -> LogEntry {
        let e = &item.event.event;
        LogEntry {
            log_id: 0,
            at: now_rfc3339(),
            replicator: self.id.clone(),
            resource: e.resource.clone(),
            destination: self.routes[item.route].destination.clone(),
            action: e.action.as_str().into(),
            id: e.id.clone(),
            sequence: item.event.sequence,
            status,
            error,
            attempts: item.attempts.len() as u32 + u32::from(status == LogStatus::Success),
        }
    }

    /// Stores a dead letter; `transformed`: the event is the route's transform output.
    async fn dead_letter(
        &self,
        item: &Item,
        error: &str,
        transformed: bool,
    ) -> Result<(), DeadLetterError> {
        let e = &item.event.event;
        let route = &self.routes[item.route];
        let entry = DeadLetter {
            id: 0,
            replicator: self.id.clone(),
            resource: e.resource.clone(),
            destination: route.destination.clone(),
            action: e.action.as_str().into(),
            record_id: e.id.clone(),
            sequence: item.event.sequence,
            error: error.to_string(),
            attempts: item.attempts.clone(),
            dead_lettered_at: now_rfc3339(),
            redrives: item.redriven.map_or(0, |r| r.redrives),
            route: route.resource.clone(),
            transformed,
            event: (*item.event).clone(),
        };
        let stored = match &self.cluster {
            Some(c) => c
                .state
                .put_dead_letter(entry, || c.clock.next())
                .await
                .map_err(DeadLetterError::from),
            None => self
                .journal
                .dead_letter(entry)
                .await
                .map_err(DeadLetterError::from),
        };
        let id = stored.inspect_err(|e| {
            tracing::error!(replicator = %self.id, error = %e, "cannot store a dead letter; the record stays queued");
        })?;
        self.counters.dead_lettered();
        tracing::warn!(replicator = %self.id, resource = %e.resource, id = %e.id, sequence = item.event.sequence, dead_letter = id, error, "dead-lettered");
        let mut ev = self.monitor("dead_lettered", item, Some(error.to_string()));
        ev.attempt = Some(item.attempts.len() as u32);
        self.counters.emit(ev);
        Ok(())
    }

    /// Stores a dead letter, trying again until the journal takes it: a record that failed
    /// for good is never dropped.
    async fn dead_letter_surely(&self, item: &Item, error: &str, transformed: bool) {
        while self.dead_letter(item, error, transformed).await.is_err() {
            tokio::time::sleep(self.policy.retry_delay.max(Duration::from_millis(100))).await;
        }
    }

    /// Appends replication-log entries in the background; a failure is reported, not waited on.
    fn log(self: &Arc<Self>, entries: Vec<LogEntry>) {
        if entries.is_empty() {
            return;
        }
        let s = self.clone();
        tokio::spawn(async move {
            if let Err(e) = s.journal.log(entries).await {
                s.counters.emit(MonitorEvent::replicator_wide(
                    "replicator_log_error",
                    &s.id,
                    e.to_string(),
                ));
            }
        });
    }
}

pub struct Worker {
    shared: Arc<Shared>,
    routes: RouteIndex,
    control: mpsc::Receiver<Control>,
    keys: KeyQueues<Item>,
    /// Batches refused as a whole, to be tried as halves before anything else.
    halves: Vec<Vec<(Key, Item)>>,
    /// Driver calls under way; each batch's records wait in `flights` under its task id.
    in_flight: JoinSet<BatchOutcome>,
    flights: HashMap<tokio::task::Id, Vec<(Key, Item)>>,
    transforms: TransformStage,
    progress: Progress,
    redrives: Redrives,
    /// Destination requests already added to the metric.
    requests_reported: u64,
    backfills: Arc<Backfills>,
    /// In cluster mode: where events come from instead of the journal.
    feed: Option<Arc<Feed>>,
    /// While backfills run: the newest live sequence of each record after `tracking`.
    tracking: Option<u64>,
    live_keys: HashMap<u64, u64>,
}

pub struct WorkerParts {
    pub id: String,
    pub routes: Vec<Route>,
    /// The transform of each route, if any.
    pub transforms: Vec<Option<Arc<Live<Transform>>>>,
    pub driver: Arc<dyn Driver>,
    pub policy: DeliveryPolicy,
    pub journal: Arc<Journal>,
    pub counters: ReplicatorCounters,
    pub log_errors: bool,
    pub control: mpsc::Receiver<Control>,
    pub backfills: Arc<Backfills>,
    /// Events one input may become through a transform.
    pub max_fan_out: usize,
    /// In cluster mode: the replicator's queue on this host, read instead of the journal.
    pub feed: Option<Arc<Feed>>,
}

impl Worker {
    pub fn new(p: WorkerParts) -> Self {
        let routes = RouteIndex::new(&p.routes);
        let cursor = p.counters.stats.cursor();
        let (progress, redrive_queue) = match &p.feed {
            Some(feed) => (
                Progress::listing_finished(),
                RedriveQueue::Cluster(feed.clone()),
            ),
            None => (
                Progress::from_cursor(cursor),
                RedriveQueue::Journal(p.journal.clone()),
            ),
        };
        Worker {
            transforms: TransformStage::new(p.transforms, p.max_fan_out),
            shared: Arc::new(Shared {
                id: p.id,
                routes: p.routes.into_iter().map(Arc::new).collect(),
                driver: p.driver,
                policy: p.policy,
                journal: p.journal,
                counters: p.counters,
                log_errors: p.log_errors,
                cluster: p.feed.as_ref().map(|f| f.cluster().clone()),
            }),
            routes,
            control: p.control,
            keys: KeyQueues::default(),
            halves: Vec::new(),
            in_flight: JoinSet::new(),
            flights: HashMap::new(),
            progress,
            redrives: Redrives::new(redrive_queue),
            requests_reported: 0,
            backfills: p.backfills,
            feed: p.feed,
            tracking: None,
            live_keys: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        if !self.init_driver().await {
            return;
        }
        let mut head = match &self.feed {
            Some(feed) => {
                feed.open();
                feed.subscribe()
            }
            None => {
                self.load_redrives().await;
                self.shared.journal.subscribe_head()
            }
        };
        let mut backfills = self.backfills.subscribe();
        self.follow_backfills().await;
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(e) = self.fill().await {
                self.report_stall(&format!("cannot read the journal: {e}"));
            }
            self.dispatch();
            if let Some(feed) = &self.feed {
                feed.done(self.progress.take_finished());
            }
            let policy = &self.shared.policy;
            let linger_until = self.keys.ready_since().map(|t| t + policy.linger);
            let transform_retry_at = self.transforms.retry_at();
            tokio::select! {
                Some(joined) = self.in_flight.join_next_with_id(), if !self.in_flight.is_empty() => {
                    self.batch_returned(joined).await;
                }
                Some(joined) = self.transforms.join_next(), if self.transforms.running() => {
                    self.transform_returned(joined).await;
                }
                () = sleep_until(transform_retry_at), if transform_retry_at.is_some() => {
                    self.transforms.restart();
                }
                key = self.keys.next_expired(), if self.keys.has_delayed() => {
                    self.keys.release(key);
                }
                changed = head.changed() => {
                    if changed.is_err() { break; }
                }
                _ = backfills.changed() => self.follow_backfills().await,
                message = self.control.recv() => match message {
                    Some(Control::Rewind { from, done }) => { self.rewind(from).await; let _ = done.send(()); }
                    Some(Control::Redrive(entries)) => self.redrive(entries).await,
                    Some(Control::Stop) | None => break,
                },
                () = sleep_until(linger_until), if linger_until.is_some() => {
                    self.keys.linger_over(self.shared.policy.linger);
                }
                _ = tick.tick() => self.checkpoint().await,
            }
        }
        self.in_flight.shutdown().await;
        self.transforms.shutdown().await;
        self.checkpoint().await;
        self.shared.driver.close().await;
    }

    /// Connects the driver, retrying while the destination is away; meanwhile the status shows
    /// the backlog and how long it has waited. False when told to stop first.
    async fn init_driver(&mut self) -> bool {
        let s = self.shared.clone();
        let mut delays = retry::for_outage(&s.policy);
        loop {
            let error = match s.driver.init().await {
                Ok(()) => break,
                Err(e) => e,
            };
            tracing::warn!(replicator = %s.id, error = %error, "destination not ready; retrying");
            s.counters.stats.set_state(State::Failing);
            s.counters.stats.set_error(Some(error.message.clone()));
            self.report_waiting().await;
            let retry_at = Instant::now() + delays.next().unwrap_or(Duration::from_secs(30));
            // Backlog and lag keep growing while we wait: the metrics follow them each second.
            let mut report = tokio::time::interval(Duration::from_secs(1));
            report.reset();
            loop {
                tokio::select! {
                    () = tokio::time::sleep_until(retry_at.into()) => break,
                    _ = report.tick() => self.report_waiting().await,
                    message = self.control.recv() => match message {
                        Some(Control::Rewind { from, done }) => { self.rewind(from).await; let _ = done.send(()); }
                        // Found in the journal again once the destination answers.
                        Some(Control::Redrive(_)) => {}
                        Some(Control::Stop) | None => return false,
                    },
                }
            }
        }
        s.counters.stats.initialised.store(true, Ordering::Relaxed);
        s.counters.stats.set_state(State::Running);
        s.counters.stats.set_error(None);
        tracing::info!(replicator = %s.id, "replicator running");
        true
    }

    /// Backlog and lag while nothing is read yet: from the first event after the cursor.
    async fn report_waiting(&self) {
        let s = &self.shared;
        if let Some(feed) = &self.feed {
            s.counters.progress(0, feed.backlog(), 0);
            return;
        }
        let cursor = self.progress.committed;
        let oldest = match s.journal.read(cursor + 1, 1).await {
            Ok(events) => events.first().map_or(0, |e| e.received_at_ms),
            Err(_) => 0,
        };
        let backlog = s.journal.head().saturating_sub(cursor);
        s.counters.progress(cursor, backlog, oldest);
    }

    /// A failure that stops the replicator from making progress: status, metrics and stream.
    fn report_stall(&self, error: &str) {
        let s = &self.shared;
        tracing::error!(replicator = %s.id, error, "replicator stalled");
        s.counters.stalled(error, None);
    }

    fn enqueue(&mut self, item: Item) {
        let e = &item.event.event;
        let key = Key::of(item.route, &e.resource, &e.id);
        self.keys.push(key, item);
    }

    /// Reads more of the journal while there is room in memory. Events bound for transformed
    /// routes go to the transform stage (one read at a time, on another task) while this
    /// loop keeps delivering; the rest are queued at once.
    async fn fill(&mut self) -> Result<(), JournalError> {
        if let Some(feed) = self.feed.clone() {
            self.fill_from(&feed).await;
            return Ok(());
        }
        let s = self.shared.clone();
        while self.transforms.idle()
            && self.keys.len() < s.policy.buffer_events
            && self.progress.read_pos <= s.journal.head()
        {
            let room = s.policy.buffer_events - self.keys.len();
            let events = s
                .journal
                .read(self.progress.read_pos, self.transforms.read_size(room))
                .await?;
            let Some(last) = events.last().map(|e| e.sequence) else {
                // Nothing stored from here (pruned by a rewind past retention): skip ahead.
                self.progress.read_pos = s.journal.head() + 1;
                break;
            };
            self.take_in(events);
            self.progress.read_pos = last + 1;
        }
        Ok(())
    }

    /// In cluster mode: takes what the feed received while there is room; an event no
    /// route takes is done at once.
    async fn fill_from(&mut self, feed: &Arc<Feed>) {
        let s = self.shared.clone();
        while self.transforms.idle() && self.keys.len() < s.policy.buffer_events {
            let room = s.policy.buffer_events - self.keys.len();
            let received = feed.take(self.transforms.read_size(room));
            if received.is_empty() {
                break;
            }
            let mut events = Vec::with_capacity(received.len());
            for envelope in received {
                match envelope {
                    Envelope::Event(e) => events.push(*e),
                    Envelope::Redrive(entry) => self.redrive(vec![*entry]).await,
                }
            }
            let sequences: Vec<u64> = events.iter().map(|e| e.sequence).collect();
            self.take_in(events);
            let untaken: Vec<u64> = sequences
                .into_iter()
                .filter(|v| !self.progress.tracks(*v))
                .collect();
            feed.done(untaken);
        }
    }

    /// Routes read events: queued for delivery, or handed to the transform stage (one read
    /// at a time, on another task) while this loop keeps delivering.
    fn take_in(&mut self, events: Vec<StoredEvent>) {
        let mut to_transform: BTreeMap<usize, Vec<Arc<StoredEvent>>> = BTreeMap::new();
        for stored in events {
            let stored = Arc::new(stored);
            if !self.is_for_this_replicator(&stored) {
                continue;
            }
            let routes = self.routes_of(&stored);
            if routes.is_empty() {
                continue;
            }
            // A transformed route holds one place until its outputs are known.
            self.progress
                .track(stored.sequence, routes.len() as u32, stored.received_at_ms);
            for route in routes {
                if self.transforms.has(route) {
                    to_transform.entry(route).or_default().push(stored.clone());
                } else {
                    self.enqueue(Item::new(stored.clone(), route));
                }
            }
        }
        self.transforms.start(to_transform);
    }

    /// The routes that take this event; counts it skipped when its resource is routed but
    /// none of those routes takes its action.
    fn routes_of(&self, stored: &StoredEvent) -> Vec<usize> {
        let e = &stored.event;
        match self.routes.routes_of(&e.resource, e.action) {
            Some(routes) => {
                if routes.is_empty() {
                    self.shared.counters.skipped();
                }
                routes
            }
            None => Vec::new(),
        }
    }

    /// Whether an event is for this replicator: a backfilled copy is not when it is aimed at
    /// other replicators, or when a live event of its record came after its backfill started.
    /// Live events are remembered while backfills run.
    fn is_for_this_replicator(&mut self, stored: &StoredEvent) -> bool {
        let record = record_key(&stored.event.resource, &stored.event.id);
        match &stored.backfill {
            None => {
                if self.tracking.is_some_and(|since| stored.sequence > since) {
                    self.live_keys.insert(record, stored.sequence);
                }
                true
            }
            Some(tag)
                if !tag.replicators.is_empty() && !tag.replicators.contains(&self.shared.id) =>
            {
                false
            }
            Some(tag) => {
                let newer_live = self
                    .live_keys
                    .get(&record)
                    .is_some_and(|live| *live > tag.since);
                if newer_live {
                    self.shared.counters.skipped();
                }
                !newer_live
            }
        }
    }

    /// Follows the running backfills: starts remembering live records from the earliest
    /// one's start (re-reading what was already read past it), or forgets them when none is
    /// left.
    async fn follow_backfills(&mut self) {
        if let Err(e) = self.remember_live_records().await {
            self.report_stall(&format!("cannot read the journal: {e}"));
        }
    }

    async fn remember_live_records(&mut self) -> Result<(), JournalError> {
        let since = self.backfills.tracking_since(self.progress.committed);
        let earlier = match (since, self.tracking) {
            (Some(new), Some(old)) => new < old,
            (Some(_), None) => true,
            _ => false,
        };
        self.tracking = since;
        match since {
            None => self.live_keys.clear(),
            Some(since) if earlier => {
                let read_pos = self.progress.read_pos;
                let mut from = since + 1;
                while from < read_pos {
                    let events = self.shared.journal.read(from, 4096).await?;
                    let Some(last) = events.last().map(|e| e.sequence) else {
                        break;
                    };
                    for e in events
                        .iter()
                        .filter(|e| e.backfill.is_none() && e.sequence < read_pos)
                    {
                        self.live_keys
                            .insert(record_key(&e.event.resource, &e.event.id), e.sequence);
                    }
                    from = last + 1;
                }
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// Starts batches while there are free slots.
    fn dispatch(&mut self) {
        let shared = self.shared.clone();
        let policy = &shared.policy;
        while self.in_flight.len() < policy.concurrency {
            if let Some(batch) = self.halves.pop() {
                self.launch(batch);
                continue;
            }
            if self.keys.ready_count() == 0 {
                break;
            }
            let lingered = self
                .keys
                .ready_since()
                .is_some_and(|t| t.elapsed() >= policy.linger);
            if self.keys.ready_count() < policy.batch_size
                && !self.in_flight.is_empty()
                && !lingered
            {
                break;
            }
            let batch = self.keys.take_batch(policy.batch_size);
            self.launch(batch);
        }
    }

    /// Hands copies of a batch's events to the driver in a task; the records wait here.
    fn launch(&mut self, batch: Vec<(Key, Item)>) {
        let s = self.shared.clone();
        let deliveries: Vec<Delivery> = batch
            .iter()
            .map(|(_, item)| Delivery {
                event: item.event.clone(),
                route: s.routes[item.route].clone(),
            })
            .collect();
        let task = self.in_flight.spawn(async move {
            let started = Instant::now();
            let outcome =
                match tokio::time::timeout(s.policy.timeout, s.driver.deliver(&deliveries)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(DeliveryError::transient(format!(
                        "attempt timed out after {:?}",
                        s.policy.timeout
                    ))),
                };
            s.counters.destination_call(started.elapsed().as_secs_f64());
            outcome
        });
        self.flights.insert(task.id(), batch);
    }

    /// A driver call ended: a panic or a cancelled task is a failed attempt of its records.
    async fn batch_returned(
        &mut self,
        joined: Result<(tokio::task::Id, BatchOutcome), tokio::task::JoinError>,
    ) {
        let (task, outcome) = match joined {
            Ok(returned) => returned,
            Err(e) => {
                let task = e.id();
                let reason = if e.is_panic() {
                    format!("the driver panicked: {}", panic_message(e.into_panic()))
                } else {
                    "the delivery task was cancelled".to_string()
                };
                (task, Err(DeliveryError::transient(reason)))
            }
        };
        let Some(batch) = self.flights.remove(&task) else {
            return;
        };
        match outcome::judge_batch(outcome, batch.len()) {
            BatchVerdict::Split => {
                tracing::debug!(replicator = %self.shared.id, size = batch.len(), "batch refused; trying its halves to isolate the record");
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                self.halves.push(second);
                self.halves.push(first);
            }
            BatchVerdict::PerRecord(results) => self.settle(batch, results).await,
        }
    }

    /// Applies each record's verdict: done, or queued again with its delay.
    async fn settle(&mut self, batch: Vec<(Key, Item)>, results: Vec<Result<(), DeliveryError>>) {
        let s = self.shared.clone();
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut logs = Vec::new();
        let mut any_delivered = false;
        let mut any_waiting = false;
        let mut to_dead_letter = Vec::new();
        for ((key, mut item), result) in batch.into_iter().zip(results) {
            let err = match result {
                Ok(()) => {
                    any_delivered = true;
                    let waited = (now_ms - item.event.received_at_ms).max(0) as f64 / 1000.0;
                    s.counters.delivered(waited);
                    let e = &item.event.event;
                    if s.counters.verbose() {
                        tracing::info!(replicator = %s.id, resource = %e.resource, destination = %s.routes[item.route].destination, action = %e.action, id = %e.id, sequence = item.event.sequence, "replicated");
                    }
                    if s.counters.watched() {
                        s.counters.emit(s.monitor("replicated", &item, None));
                    }
                    if s.policy.log_successes {
                        logs.push(s.log_entry(&item, LogStatus::Success, None));
                    }
                    self.finish(key, item);
                    continue;
                }
                Err(err) => err,
            };
            let verdict = outcome::judge(&err, item.attempts.len() as u32, s.policy.max_retries);
            s.counters.failed(&err.message);
            if verdict.spends_attempt() {
                item.attempts.push(Attempt {
                    at: now_rfc3339(),
                    error: err.message.clone(),
                });
            }
            let e = &item.event.event;
            let attempt = item.attempts.len() as u32;
            tracing::warn!(replicator = %s.id, resource = %e.resource, id = %e.id, sequence = item.event.sequence, attempt, error = %err, "delivery failed");
            let mut ev = s.monitor("replicator_error", &item, Some(err.message.clone()));
            ev.attempt = Some(attempt);
            s.counters.emit(ev);
            if s.log_errors {
                let status = if verdict == Verdict::DeadLetter {
                    LogStatus::DeadLettered
                } else {
                    LogStatus::Failed
                };
                logs.push(s.log_entry(&item, status, Some(err.message.clone())));
            }
            let delay = match verdict {
                Verdict::DeadLetter => {
                    to_dead_letter.push((key, item, err.message));
                    continue;
                }
                Verdict::AwaitDestination => item
                    .outage
                    .get_or_insert_with(|| retry::for_outage(&s.policy))
                    .next(),
                Verdict::Retry { after } => {
                    let planned = item
                        .retries
                        .get_or_insert_with(|| retry::for_retries(&s.policy))
                        .next();
                    after.or(planned)
                }
            };
            any_waiting = true;
            self.keys
                .retry(key, item, delay.unwrap_or(s.policy.max_retry_delay));
        }
        // Written together: one group commit for the batch's dead letters.
        let stored = futures::future::join_all(to_dead_letter.iter().map(|(_, item, error)| {
            let transformed = s.routes[item.route].transform.is_some();
            s.dead_letter(item, error, transformed)
        }))
        .await;
        for ((key, item, _), stored) in to_dead_letter.into_iter().zip(stored) {
            match stored {
                Ok(()) => self.finish(key, item),
                // Never dropped: delivered again until the dead letter can be stored.
                Err(_) => {
                    any_waiting = true;
                    self.keys.retry(key, item, s.policy.max_retry_delay);
                }
            }
        }
        if any_delivered {
            s.counters.stats.set_error(None);
        }
        s.counters
            .stats
            .set_state(if !any_delivered && any_waiting {
                State::Failing
            } else {
                State::Running
            });
        s.log(logs);
    }

    /// A delivery is over (delivered or dead-lettered): free its key and count it done.
    fn finish(&mut self, key: Key, item: Item) {
        self.keys.done(key);
        match item.redriven {
            Some(r) => self.redrives.one_done(r),
            None => self.progress.finish_one(item.event.sequence),
        }
    }

    /// Moves the cursor past finished events and publishes the backlog figures.
    async fn checkpoint(&mut self) {
        let s = &self.shared;
        if let Some(feed) = &self.feed {
            s.counters
                .progress(0, feed.backlog(), self.progress.oldest_accepted_at_ms());
            self.report_requests();
            return;
        }
        let done_to = self.progress.done_to();
        if done_to > self.progress.committed {
            match s.journal.commit_cursor(&s.id, done_to).await {
                Ok(()) => self.progress.committed = done_to,
                Err(e) => self.report_stall(&format!("cannot save progress: {e}")),
            }
        }
        let backlog = s.journal.head().saturating_sub(done_to);
        s.counters.progress(
            self.progress.committed,
            backlog,
            self.progress.oldest_accepted_at_ms(),
        );
        if self.tracking.is_some()
            && self
                .backfills
                .tracking_since(self.progress.committed)
                .is_none()
        {
            self.tracking = None;
            self.live_keys.clear();
        }
        self.report_requests();
    }

    /// Adds the destination requests made since last time to the metric.
    fn report_requests(&mut self) {
        let s = &self.shared;
        let requests = s.driver.requests_made();
        if requests > self.requests_reported {
            s.counters
                .destination_requests(requests - self.requests_reported);
            self.requests_reported = requests;
        }
    }

    /// Forgets everything in memory and starts again at `from`.
    async fn rewind(&mut self, from: u64) {
        self.in_flight.shutdown().await;
        self.flights.clear();
        self.transforms.shutdown().await;
        self.keys.clear();
        self.halves.clear();
        self.redrives = Redrives::new(RedriveQueue::Journal(self.shared.journal.clone()));
        self.progress.rewind(from.max(1) - 1);
        let s = self.shared.clone();
        if let Err(e) = s
            .journal
            .commit_cursor(&s.id, self.progress.committed)
            .await
        {
            self.report_stall(&format!("cannot save the rewound cursor: {e}"));
        }
        s.counters
            .stats
            .cursor
            .store(self.progress.committed, Ordering::Relaxed);
        tracing::info!(replicator = %s.id, from, "replaying from sequence");
        self.load_redrives().await;
    }
}

/// A record's identity across routes, for backfill yielding.
fn record_key(resource: &str, id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    resource.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

/// What a panic carried, when it was text.
fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => match payload.downcast::<&'static str>() {
            Ok(s) => s.to_string(),
            Err(_) => "no message".into(),
        },
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::ActionSet;
    use crate::journal::records::fixtures::insert;
    use crate::pipeline::telemetry::{ReplicatorStats, Telemetry};
    use std::sync::Mutex;
    use std::sync::atomic::AtomicU32;

    /// Panics on its first call, then writes everything.
    struct PanicsOnce {
        calls: AtomicU32,
        written: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl Driver for PanicsOnce {
        async fn init(&self) -> Result<(), DeliveryError> {
            Ok(())
        }

        async fn deliver(&self, batch: &[Delivery]) -> BatchOutcome {
            if self.calls.fetch_add(1, Ordering::SeqCst) == 0 {
                panic!("the destination's answer made no sense");
            }
            let mut written = self.written.lock().unwrap();
            written.extend(batch.iter().map(|d| d.event.event.id.clone()));
            Ok(vec![Ok(()); batch.len()])
        }
    }

    #[tokio::test]
    async fn a_driver_call_that_panics_is_a_failed_attempt_and_nothing_stays_stuck() {
        let dir = tempfile::tempdir().unwrap();
        let journal = Journal::open(dir.path(), 1 << 20).unwrap();
        journal
            .append(vec![insert("u1"), insert("u2")], 1, None)
            .await
            .unwrap();
        let driver = Arc::new(PanicsOnce {
            calls: AtomicU32::new(0),
            written: Mutex::new(Vec::new()),
        });
        let telemetry = Arc::new(Telemetry::new(false));
        let mut stream = telemetry.monitor.subscribe();
        let stats = Arc::new(ReplicatorStats::new(0, State::Starting));
        let (control, control_rx) = mpsc::channel(4);
        let policy = DeliveryPolicy {
            retry_delay: Duration::from_millis(10),
            max_retry_delay: Duration::from_millis(50),
            linger: Duration::from_millis(1),
            ..DeliveryPolicy::default()
        };
        let worker = Worker::new(WorkerParts {
            id: "r".into(),
            routes: vec![Route {
                resource: "users".into(),
                destination: "users".into(),
                named: false,
                actions: ActionSet::ALL,
                transform: None,
                options: Default::default(),
            }],
            transforms: vec![None],
            driver: driver.clone(),
            policy,
            journal: journal.clone(),
            counters: ReplicatorCounters::new("r", stats.clone(), telemetry.clone()),
            log_errors: true,
            control: control_rx,
            backfills: Backfills::load(journal.clone(), None).await.unwrap(),
            max_fan_out: 100,
            feed: None,
        });
        let task = tokio::spawn(worker.run());
        let reported = tokio::time::timeout(Duration::from_secs(10), async {
            loop {
                let event = stream.recv().await.unwrap();
                if event.name == "replicator_error" {
                    return event;
                }
            }
        })
        .await
        .expect("the panic reached the stream");
        assert!(
            reported.error.as_deref().is_some_and(
                |e| e.contains("the driver panicked: the destination's answer made no sense")
            ),
            "{reported:?}"
        );
        tokio::time::timeout(Duration::from_secs(10), async {
            while stats.delivered.load(Ordering::Relaxed) < 2 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("both records delivered after the panic, without a restart");
        assert_eq!(
            stats.failed.load(Ordering::Relaxed),
            2,
            "one failed attempt each"
        );
        let mut written = driver.written.lock().unwrap().clone();
        written.sort();
        assert_eq!(written, ["u1", "u2"]);
        control.send(Control::Stop).await.unwrap();
        task.await.unwrap();
        assert_eq!(journal.cursor("r").await.unwrap(), Some(2));
        let metrics = telemetry.metrics.encode();
        assert!(
            metrics.contains("replicator_events_failed_total{replicator=\"r\"} 2"),
            "{metrics}"
        );
    }
}
