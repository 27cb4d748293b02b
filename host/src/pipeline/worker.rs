//! One replicator's delivery loop: read from its cursor, route, batch, deliver, retry,
//! dead-letter, and move the cursor past what is finished.
//!
//! Ordering: a key (`route`, `resource`, `id`) has at most one delivery in flight or waiting
//! for a retry; its later events queue behind it. Different keys run in parallel batches.

use std::collections::hash_map::DefaultHasher;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::time::DelayQueue;

use super::backfill::Backfills;
use super::retry::{self, Backoff};
use super::telemetry::{MonitorEvent, ReplicatorLabel, ReplicatorStats, State, Telemetry};
use crate::config::{DeliveryPolicy, Route};
use crate::drivers::{Delivery, DeliveryError, Driver, ErrorKind};
use crate::event::{StoredEvent, now_rfc3339};
use crate::journal::{Attempt, DeadLetter, Journal, LogEntry, LogStatus};
use crate::plugins::{Transform, TransformOutcome};

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

/// One event on its way to one route.
struct Item {
    event: Arc<StoredEvent>,
    route: usize,
    attempts: Vec<Attempt>,
    retries: Option<Backoff>,
    outage: Option<Backoff>,
    /// Set when this is a redriven dead letter: its id and earlier redrives.
    redrive: Option<(u64, u32)>,
}

impl Item {
    fn new(event: Arc<StoredEvent>, route: usize) -> Item {
        Item {
            event,
            route,
            attempts: Vec::new(),
            retries: None,
            outage: None,
            redrive: None,
        }
    }
}

/// Events per call into a transform.
const TRANSFORM_BATCH: usize = 100;

/// A read's events through each transformed route: the route, its transform, its inputs.
type TransformWork = Vec<(usize, Arc<Transform>, Vec<Arc<StoredEvent>>)>;

/// Per route, each input with what its transform made of it, in journal order.
type Transformed = Vec<(usize, Vec<(Arc<StoredEvent>, TransformOutcome)>)>;

/// Runs a read through its routes' transforms, `TRANSFORM_BATCH` events per call.
async fn transform_stage(work: TransformWork) -> Transformed {
    let mut done = Vec::with_capacity(work.len());
    for (route, transform, inputs) in work {
        let mut outcomes = Vec::with_capacity(inputs.len());
        for chunk in inputs.chunks(TRANSFORM_BATCH) {
            outcomes.extend(transform.apply(chunk).await);
        }
        done.push((route, inputs.into_iter().zip(outcomes).collect()));
    }
    done
}

/// What became of one item after a delivery attempt.
enum Fate {
    Delivered,
    DeadLettered,
    Retry(Duration),
}

/// A finished batch call.
enum Flight {
    Done(Vec<(u64, Item, Fate)>),
    /// The batch failed as a whole for good: try its halves to find the record at fault.
    Split(Vec<(u64, Item)>),
}

/// Everything a flight needs, shared with the worker.
struct Shared {
    id: String,
    routes: Vec<Arc<Route>>,
    driver: Arc<dyn Driver>,
    policy: DeliveryPolicy,
    journal: Arc<Journal>,
    telemetry: Arc<Telemetry>,
    stats: Arc<ReplicatorStats>,
    label: ReplicatorLabel,
    log_errors: bool,
}

pub struct Worker {
    shared: Arc<Shared>,
    transforms: Vec<Option<Arc<Transform>>>,
    by_resource: HashMap<String, Vec<usize>>,
    control: mpsc::Receiver<Control>,
    queues: HashMap<u64, VecDeque<Item>>,
    ready: VecDeque<u64>,
    busy: HashSet<u64>,
    delayed: DelayQueue<u64>,
    forced: VecDeque<Vec<(u64, Item)>>,
    in_flight: JoinSet<Flight>,
    /// The read going through the transforms (at most one, so outputs keep journal order).
    transforming: JoinSet<Transformed>,
    /// Unfinished events: sequence -> (deliveries left, accepted at ms).
    pending: BTreeMap<u64, (u32, i64)>,
    buffered: usize,
    read_pos: u64,
    committed: u64,
    ready_since: Option<Instant>,
    /// Destination requests already added to the metric.
    requests_reported: u64,
    backfills: Arc<Backfills>,
    /// While backfills run: the newest live sequence of each (resource, id) after `tracking`.
    tracking: Option<u64>,
    live_keys: HashMap<u64, u64>,
}

pub struct WorkerParts {
    pub id: String,
    pub routes: Vec<Route>,
    /// The transform of each route, if any.
    pub transforms: Vec<Option<Arc<Transform>>>,
    pub driver: Arc<dyn Driver>,
    pub policy: DeliveryPolicy,
    pub journal: Arc<Journal>,
    pub telemetry: Arc<Telemetry>,
    pub stats: Arc<ReplicatorStats>,
    pub log_errors: bool,
    pub control: mpsc::Receiver<Control>,
    pub backfills: Arc<Backfills>,
}

impl Worker {
    pub fn new(p: WorkerParts) -> Self {
        let mut by_resource: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, r) in p.routes.iter().enumerate() {
            by_resource.entry(r.resource.clone()).or_default().push(i);
        }
        let cursor = p.stats.cursor();
        Worker {
            transforms: p.transforms,
            shared: Arc::new(Shared {
                label: ReplicatorLabel {
                    replicator: p.id.clone(),
                },
                id: p.id,
                routes: p.routes.into_iter().map(Arc::new).collect(),
                driver: p.driver,
                policy: p.policy,
                journal: p.journal,
                telemetry: p.telemetry,
                stats: p.stats,
                log_errors: p.log_errors,
            }),
            by_resource,
            control: p.control,
            queues: HashMap::new(),
            ready: VecDeque::new(),
            busy: HashSet::new(),
            delayed: DelayQueue::new(),
            forced: VecDeque::new(),
            in_flight: JoinSet::new(),
            transforming: JoinSet::new(),
            pending: BTreeMap::new(),
            buffered: 0,
            read_pos: cursor + 1,
            committed: cursor,
            ready_since: None,
            requests_reported: 0,
            backfills: p.backfills,
            tracking: None,
            live_keys: HashMap::new(),
        }
    }

    pub async fn run(mut self) {
        self.init_driver().await;
        self.load_redrives().await;
        let mut head = self.shared.journal.subscribe_head();
        let mut backfills = self.backfills.subscribe();
        if let Err(e) = self.retrack().await {
            tracing::error!(replicator = %self.shared.id, error = %e, "cannot read the journal");
        }
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Err(e) = self.fill().await {
                tracing::error!(replicator = %self.shared.id, error = %e, "cannot read the journal");
            }
            self.dispatch();
            let linger_until = self.ready_since.map(|t| t + self.shared.policy.linger);
            tokio::select! {
                Some(joined) = self.in_flight.join_next(), if !self.in_flight.is_empty() => {
                    match joined {
                        Ok(flight) => self.land(flight),
                        Err(e) if e.is_cancelled() => {}
                        Err(e) => tracing::error!(replicator = %self.shared.id, error = %e, "delivery task failed"),
                    }
                }
                Some(joined) = self.transforming.join_next(), if !self.transforming.is_empty() => {
                    match joined {
                        Ok(done) => self.land_transformed(done).await,
                        Err(e) if e.is_cancelled() => {}
                        // Its events keep their places, so the cursor stays before them and a
                        // restart reads them again.
                        Err(e) => tracing::error!(replicator = %self.shared.id, error = %e, "transform task failed"),
                    }
                }
                Some(expired) = self.delayed.next(), if !self.delayed.is_empty() => {
                    self.release(expired.into_inner());
                }
                changed = head.changed() => {
                    if changed.is_err() { break; }
                }
                _ = backfills.changed() => {
                    if let Err(e) = self.retrack().await {
                        tracing::error!(replicator = %self.shared.id, error = %e, "cannot read the journal");
                    }
                }
                message = self.control.recv() => match message {
                    Some(Control::Rewind { from, done }) => { self.rewind(from).await; let _ = done.send(()); }
                    Some(Control::Redrive(entries)) => self.redrive(entries).await,
                    Some(Control::Stop) | None => break,
                },
                _ = sleep_until(linger_until), if linger_until.is_some() => {
                    self.ready_since = Some(Instant::now() - self.shared.policy.linger);
                }
                _ = tick.tick() => self.checkpoint().await,
            }
        }
        self.in_flight.shutdown().await;
        self.transforming.shutdown().await;
        self.checkpoint().await;
        self.shared.driver.close().await;
    }

    /// Connects the driver, retrying while the destination is away.
    async fn init_driver(&mut self) {
        let s = &self.shared;
        let mut delays = retry::for_outage(&s.policy);
        loop {
            match s.driver.init().await {
                Ok(()) => break,
                Err(e) => {
                    tracing::warn!(replicator = %s.id, error = %e, "destination not ready; retrying");
                    s.stats.set_state(State::Failing);
                    s.stats.set_error(Some(e.message.clone()));
                    tokio::time::sleep(delays.next().unwrap_or(Duration::from_secs(30))).await;
                }
            }
        }
        s.stats.initialised.store(true, Ordering::Relaxed);
        s.stats.set_state(State::Running);
        tracing::info!(replicator = %s.id, "replicator running");
    }

    fn key(&self, item: &Item) -> u64 {
        let mut h = DefaultHasher::new();
        item.route.hash(&mut h);
        item.event.event.resource.hash(&mut h);
        item.event.event.id.hash(&mut h);
        h.finish()
    }

    fn enqueue(&mut self, item: Item) {
        let key = self.key(&item);
        let queue = self.queues.entry(key).or_default();
        queue.push_back(item);
        self.buffered += 1;
        if queue.len() == 1 && !self.busy.contains(&key) {
            self.mark_ready(key);
        }
    }

    fn mark_ready(&mut self, key: u64) {
        if self.ready.is_empty() {
            self.ready_since = Some(Instant::now());
        }
        self.ready.push_back(key);
    }

    /// Reads more of the journal while there is room in memory. Events bound for transformed
    /// routes go to the transform stage (one read at a time, on another thread) while this
    /// loop keeps delivering; the rest are queued at once.
    async fn fill(&mut self) -> Result<(), crate::journal::JournalError> {
        let s = self.shared.clone();
        while self.transforming.is_empty()
            && self.buffered < s.policy.buffer_events
            && self.read_pos <= s.journal.head()
        {
            let room = (s.policy.buffer_events - self.buffered).min(2048);
            let events = s.journal.read(self.read_pos, room).await?;
            let Some(last) = events.last().map(|e| e.sequence) else {
                // Nothing stored from here (pruned by a rewind past retention): skip ahead.
                self.read_pos = s.journal.head() + 1;
                break;
            };
            let mut to_transform: BTreeMap<usize, Vec<Arc<StoredEvent>>> = BTreeMap::new();
            for stored in events {
                let stored = Arc::new(stored);
                if !self.admit(&stored) {
                    continue;
                }
                let routes = self.routes_of(&stored);
                if routes.is_empty() {
                    continue;
                }
                // A transformed route holds one place until its outputs are known.
                self.pending.insert(
                    stored.sequence,
                    (routes.len() as u32, stored.received_at_ms),
                );
                for route in routes {
                    if self.transforms[route].is_some() {
                        to_transform.entry(route).or_default().push(stored.clone());
                    } else {
                        self.enqueue(Item::new(stored.clone(), route));
                    }
                }
            }
            self.read_pos = last + 1;
            if !to_transform.is_empty() {
                let work: Vec<_> = to_transform
                    .into_iter()
                    .map(|(route, inputs)| {
                        let t = self.transforms[route].clone().expect("a transformed route");
                        (route, t, inputs)
                    })
                    .collect();
                self.transforming.spawn(transform_stage(work));
            }
        }
        Ok(())
    }

    /// Queues what the transform stage made of a read, in journal order per route.
    async fn land_transformed(&mut self, done: Transformed) {
        let s = self.shared.clone();
        for (route, results) in done {
            for (input, outcome) in results {
                let outputs = match outcome {
                    TransformOutcome::Emit(list) => {
                        if list.is_empty() {
                            self.count_skipped();
                        }
                        list
                    }
                    TransformOutcome::Failed(reason) => {
                        let item = Item::new(input.clone(), route);
                        let err = DeliveryError::permanent(reason);
                        while dead_letter(&s, &item, &err, false).await.is_err() {
                            tokio::time::sleep(s.policy.retry_delay).await;
                        }
                        Vec::new()
                    }
                };
                // The route's place becomes its outputs (none: this route is done with it).
                if let Some(entry) = self.pending.get_mut(&input.sequence) {
                    entry.0 = entry.0 + outputs.len() as u32 - 1;
                    if entry.0 == 0 {
                        self.pending.remove(&input.sequence);
                    }
                }
                for event in outputs {
                    self.enqueue(Item::new(Arc::new(event), route));
                }
            }
        }
    }

    /// The routes that take this event; counts it skipped when its resource is routed but
    /// none of those routes takes its action.
    fn routes_of(&self, stored: &StoredEvent) -> Vec<usize> {
        let s = &self.shared;
        let candidates = self
            .by_resource
            .get(&stored.event.resource)
            .or_else(|| self.by_resource.get(crate::config::ANY_RESOURCE));
        let routes: Vec<usize> = candidates
            .map(|rs| {
                rs.iter()
                    .copied()
                    .filter(|r| s.routes[*r].actions.contains(stored.event.action))
                    .collect()
            })
            .unwrap_or_default();
        if routes.is_empty() && candidates.is_some() {
            self.count_skipped();
        }
        routes
    }

    fn count_skipped(&self) {
        let s = &self.shared;
        s.stats.skipped.fetch_add(1, Ordering::Relaxed);
        s.telemetry.metrics.skipped.get_or_create(&s.label).inc();
    }

    /// Whether an event is for this replicator: a backfilled copy is not when it is aimed at
    /// other replicators, or when a live event of its key came after its backfill started.
    /// Live events are remembered while backfills run.
    fn admit(&mut self, stored: &StoredEvent) -> bool {
        let key = record_key(&stored.event.resource, &stored.event.id);
        match &stored.backfill {
            None => {
                if self.tracking.is_some_and(|since| stored.sequence > since) {
                    self.live_keys.insert(key, stored.sequence);
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
                    .get(&key)
                    .is_some_and(|live| *live > tag.since);
                if newer_live {
                    let s = &self.shared;
                    s.stats.skipped.fetch_add(1, Ordering::Relaxed);
                    s.telemetry.metrics.skipped.get_or_create(&s.label).inc();
                }
                !newer_live
            }
        }
    }

    /// Follows the running backfills: starts remembering live keys from the earliest one's
    /// start (re-reading what was already read past it), or forgets them when none is left.
    async fn retrack(&mut self) -> Result<(), crate::journal::JournalError> {
        let since = self.backfills.tracking_since(self.committed);
        let earlier = match (since, self.tracking) {
            (Some(new), Some(old)) => new < old,
            (Some(_), None) => true,
            _ => false,
        };
        self.tracking = since;
        match since {
            None => self.live_keys.clear(),
            Some(since) if earlier => {
                let mut from = since + 1;
                while from < self.read_pos {
                    let events = self.shared.journal.read(from, 4096).await?;
                    let Some(last) = events.last().map(|e| e.sequence) else {
                        break;
                    };
                    for e in events
                        .iter()
                        .filter(|e| e.backfill.is_none() && e.sequence < self.read_pos)
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
            if let Some(batch) = self.forced.pop_front() {
                self.launch(batch);
                continue;
            }
            if self.ready.is_empty() {
                self.ready_since = None;
                break;
            }
            let lingered = self
                .ready_since
                .is_some_and(|t| t.elapsed() >= policy.linger);
            if self.ready.len() < policy.batch_size && !self.in_flight.is_empty() && !lingered {
                break;
            }
            let n = self.ready.len().min(policy.batch_size);
            let mut batch = Vec::with_capacity(n);
            for _ in 0..n {
                let key = self.ready.pop_front().expect("counted");
                let item = self
                    .queues
                    .get_mut(&key)
                    .and_then(VecDeque::pop_front)
                    .expect("a ready key has a queued item");
                self.busy.insert(key);
                batch.push((key, item));
            }
            self.ready_since = (!self.ready.is_empty()).then(Instant::now);
            self.launch(batch);
        }
    }

    fn launch(&mut self, batch: Vec<(u64, Item)>) {
        let s = self.shared.clone();
        self.in_flight.spawn(fly(s, batch));
    }

    /// Applies the fates of a finished flight.
    fn land(&mut self, flight: Flight) {
        match flight {
            Flight::Split(items) => {
                let mut first = items;
                let second = first.split_off(first.len() / 2);
                self.forced.push_back(first);
                self.forced.push_back(second);
            }
            Flight::Done(results) => {
                for (key, item, fate) in results {
                    match fate {
                        Fate::Retry(delay) => {
                            self.queues.entry(key).or_default().push_front(item);
                            self.delayed.insert(key, delay);
                        }
                        Fate::Delivered | Fate::DeadLettered => self.finish(key, item),
                    }
                }
            }
        }
    }

    /// A delivery is over (delivered or dead-lettered): free its key and count it done.
    fn finish(&mut self, key: u64, item: Item) {
        self.buffered -= 1;
        if let Some((dead_letter, _)) = item.redrive {
            let journal = self.shared.journal.clone();
            tokio::spawn(async move {
                if let Err(e) = journal.redrive_done(dead_letter).await {
                    tracing::error!(error = %e, "cannot mark a redrive as done; it will be delivered again after a restart");
                }
            });
        } else if let Some(entry) = self.pending.get_mut(&item.event.sequence) {
            entry.0 -= 1;
            if entry.0 == 0 {
                self.pending.remove(&item.event.sequence);
            }
        }
        self.busy.remove(&key);
        match self.queues.get(&key) {
            Some(q) if !q.is_empty() => self.mark_ready(key),
            _ => {
                self.queues.remove(&key);
            }
        }
    }

    /// A key's retry delay is over.
    fn release(&mut self, key: u64) {
        self.busy.remove(&key);
        if self.queues.get(&key).is_some_and(|q| !q.is_empty()) {
            self.mark_ready(key);
        }
    }

    /// Moves the cursor past finished events and publishes the backlog figures.
    async fn checkpoint(&mut self) {
        let s = &self.shared;
        let done_to = match self.pending.first_key_value() {
            Some((seq, _)) => seq - 1,
            None => self.read_pos - 1,
        };
        if done_to > self.committed {
            match s.journal.commit_cursor(&s.id, done_to).await {
                Ok(()) => self.committed = done_to,
                Err(e) => tracing::error!(replicator = %s.id, error = %e, "cannot save progress"),
            }
        }
        s.stats.cursor.store(self.committed, Ordering::Relaxed);
        let oldest = self
            .pending
            .first_key_value()
            .map(|(_, (_, at))| *at)
            .unwrap_or(0);
        s.stats
            .oldest_pending_ms
            .store(oldest as u64, Ordering::Relaxed);
        let backlog = s.journal.head().saturating_sub(done_to);
        s.telemetry
            .metrics
            .backlog
            .get_or_create(&s.label)
            .set(backlog as i64);
        let lag = if oldest > 0 {
            (chrono::Utc::now().timestamp_millis() - oldest).max(0) as f64 / 1000.0
        } else {
            0.0
        };
        s.telemetry
            .metrics
            .lag_seconds
            .get_or_create(&s.label)
            .set(lag);
        if self.tracking.is_some() && self.backfills.tracking_since(self.committed).is_none() {
            self.tracking = None;
            self.live_keys.clear();
        }
        let requests = s.driver.requests_made();
        if requests > self.requests_reported {
            s.telemetry
                .metrics
                .destination_requests
                .get_or_create(&s.label)
                .inc_by(requests - self.requests_reported);
            self.requests_reported = requests;
        }
    }

    /// Forgets everything in memory and starts again at `from`.
    async fn rewind(&mut self, from: u64) {
        self.in_flight.shutdown().await;
        self.transforming.shutdown().await;
        self.queues.clear();
        self.ready.clear();
        self.busy.clear();
        self.delayed.clear();
        self.forced.clear();
        self.pending.clear();
        self.buffered = 0;
        self.read_pos = from.max(1);
        self.committed = self.read_pos - 1;
        let s = &self.shared;
        if let Err(e) = s.journal.commit_cursor(&s.id, self.committed).await {
            tracing::error!(replicator = %s.id, error = %e, "cannot save the rewound cursor");
        }
        s.stats.cursor.store(self.committed, Ordering::Relaxed);
        tracing::info!(replicator = %s.id, from, "replaying from sequence");
        self.load_redrives().await;
    }

    async fn load_redrives(&mut self) {
        match self.shared.journal.pending_redrives(&self.shared.id) {
            Ok(entries) => self.redrive(entries).await,
            Err(e) => {
                tracing::error!(replicator = %self.shared.id, error = %e, "cannot read redrives")
            }
        }
    }

    /// Queues dead letters again, behind their key's current events, with their own sequence.
    async fn redrive(&mut self, entries: Vec<DeadLetter>) {
        for entry in entries {
            let route_key = if entry.route.is_empty() {
                &entry.resource
            } else {
                &entry.route
            };
            let route = self
                .shared
                .routes
                .iter()
                .position(|r| r.resource == *route_key && r.destination == entry.destination);
            let Some(route) = route else {
                tracing::warn!(replicator = %self.shared.id, dead_letter = entry.id, "redrive skipped: the route no longer exists");
                continue;
            };
            let (redrive_id, redrives) = (entry.id, entry.redrives);
            self.shared.telemetry.emit(MonitorEvent {
                name: "redriven",
                replicator: self.shared.id.clone(),
                resource: Some(entry.resource.clone()),
                operation: Some(entry.action.clone()),
                id: Some(entry.record_id.clone()),
                sequence: Some(entry.sequence),
                attempt: None,
                error: None,
            });
            // A record that failed in the transform goes through it again; one that failed
            // at delivery was transformed already.
            let original = Arc::new(entry.event);
            let events: Vec<Arc<StoredEvent>> = match (&self.transforms[route], entry.transformed) {
                (Some(t), false) => match t.apply(std::slice::from_ref(&original)).await.pop() {
                    Some(TransformOutcome::Emit(list)) => list.into_iter().map(Arc::new).collect(),
                    Some(TransformOutcome::Failed(reason)) => {
                        let mut item = Item::new(original, route);
                        item.redrive = Some((redrive_id, redrives));
                        let _ = dead_letter(
                            &self.shared,
                            &item,
                            &DeliveryError::permanent(reason),
                            false,
                        )
                        .await;
                        Vec::new()
                    }
                    None => Vec::new(),
                },
                _ => vec![original],
            };
            if events.is_empty() {
                if let Err(e) = self.shared.journal.redrive_done(redrive_id).await {
                    tracing::error!(error = %e, "cannot mark a redrive as done");
                }
                continue;
            }
            for event in events {
                let mut item = Item::new(event, route);
                item.redrive = Some((redrive_id, redrives));
                self.enqueue(item);
            }
        }
    }
}

/// A record's identity across routes, for backfill yielding.
fn record_key(resource: &str, id: &str) -> u64 {
    let mut h = DefaultHasher::new();
    resource.hash(&mut h);
    id.hash(&mut h);
    h.finish()
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t.into()).await,
        None => std::future::pending().await,
    }
}

/// Delivers one batch and decides each item's fate (dead letters are written before returning).
async fn fly(s: Arc<Shared>, mut batch: Vec<(u64, Item)>) -> Flight {
    let deliveries: Vec<Delivery> = batch
        .iter()
        .map(|(_, item)| Delivery {
            event: item.event.clone(),
            route: s.routes[item.route].clone(),
        })
        .collect();
    let started = Instant::now();
    let outcome = match tokio::time::timeout(s.policy.timeout, s.driver.deliver(&deliveries)).await
    {
        Ok(outcome) => outcome,
        Err(_) => Err(DeliveryError::transient(format!(
            "attempt timed out after {:?}",
            s.policy.timeout
        ))),
    };
    s.telemetry
        .metrics
        .destination_call
        .get_or_create(&s.label)
        .observe(started.elapsed().as_secs_f64());
    let results: Vec<Result<(), DeliveryError>> = match outcome {
        Err(e) if e.kind == ErrorKind::Permanent && batch.len() > 1 => {
            tracing::debug!(replicator = %s.id, size = batch.len(), error = %e, "batch refused; splitting it to isolate the record");
            return Flight::Split(batch);
        }
        Err(e) => vec![Err(e); batch.len()],
        Ok(results) if results.len() == batch.len() => results,
        Ok(results) => vec![
            Err(DeliveryError::permanent(format!(
                "driver answered {} results for a batch of {}",
                results.len(),
                batch.len()
            )));
            batch.len()
        ],
    };

    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut logs = Vec::new();
    let mut fates = Vec::with_capacity(batch.len());
    let mut any_ok = false;
    for ((key, mut item), result) in batch.drain(..).zip(results) {
        let route = &s.routes[item.route];
        let e = &item.event.event;
        let fate = match result {
            Ok(()) => {
                any_ok = true;
                s.stats.delivered.fetch_add(1, Ordering::Relaxed);
                s.telemetry.metrics.delivered.get_or_create(&s.label).inc();
                s.telemetry
                    .metrics
                    .journal_to_delivered
                    .get_or_create(&s.label)
                    .observe(((now_ms - item.event.received_at_ms).max(0)) as f64 / 1000.0);
                if s.telemetry.verbose {
                    tracing::info!(replicator = %s.id, resource = %e.resource, destination = %route.destination, action = %e.action, id = %e.id, sequence = item.event.sequence, "replicated");
                }
                s.telemetry.emit(monitor(&s, "replicated", &item, None));
                if s.policy.log_successes {
                    logs.push(log_entry(&s, &item, LogStatus::Success, None));
                }
                Fate::Delivered
            }
            Err(err) => {
                s.stats.failed.fetch_add(1, Ordering::Relaxed);
                s.telemetry.metrics.failed.get_or_create(&s.label).inc();
                s.stats.set_error(Some(err.message.clone()));
                let fate = if err.kind == ErrorKind::Unavailable {
                    let delay = item
                        .outage
                        .get_or_insert_with(|| retry::for_outage(&s.policy))
                        .next();
                    Fate::Retry(delay.unwrap_or(s.policy.max_retry_delay))
                } else {
                    item.attempts.push(Attempt {
                        at: now_rfc3339(),
                        error: err.message.clone(),
                    });
                    let spent = item.attempts.len() as u32;
                    if err.kind == ErrorKind::Permanent || spent > s.policy.max_retries {
                        let transformed = s.routes[item.route].transform.is_some();
                        match dead_letter(&s, &item, &err, transformed).await {
                            Ok(()) => Fate::DeadLettered,
                            // Never drop it: keep retrying until the dead letter is stored.
                            Err(()) => Fate::Retry(s.policy.max_retry_delay),
                        }
                    } else {
                        let backoff = item
                            .retries
                            .get_or_insert_with(|| retry::for_retries(&s.policy));
                        let planned = backoff.next().unwrap_or(s.policy.max_retry_delay);
                        // The destination's Retry-After wins, within reason.
                        let delay = err
                            .retry_after
                            .map(|d| d.min(Duration::from_secs(3600)))
                            .unwrap_or(planned);
                        Fate::Retry(delay)
                    }
                };
                let attempt = item.attempts.len() as u32;
                tracing::warn!(replicator = %s.id, resource = %e.resource, id = %e.id, sequence = item.event.sequence, attempt, error = %err, "delivery failed");
                let mut ev = monitor(&s, "replicator_error", &item, Some(err.message.clone()));
                ev.attempt = Some(attempt);
                s.telemetry.emit(ev);
                if s.log_errors {
                    let status = if matches!(fate, Fate::DeadLettered) {
                        LogStatus::DeadLettered
                    } else {
                        LogStatus::Failed
                    };
                    logs.push(log_entry(&s, &item, status, Some(err.message.clone())));
                }
                fate
            }
        };
        fates.push((key, item, fate));
    }
    if any_ok {
        s.stats.set_error(None);
    }
    let failing = !any_ok && fates.iter().any(|(_, _, f)| matches!(f, Fate::Retry(_)));
    s.stats.set_state(if failing {
        State::Failing
    } else {
        State::Running
    });
    if !logs.is_empty()
        && let Err(e) = s.journal.log(logs).await
    {
        s.telemetry.emit(MonitorEvent {
            name: "replicator_log_error",
            replicator: s.id.clone(),
            resource: None,
            operation: None,
            id: None,
            sequence: None,
            attempt: None,
            error: Some(e.to_string()),
        });
    }
    Flight::Done(fates)
}

async fn dead_letter(
    s: &Shared,
    item: &Item,
    err: &DeliveryError,
    transformed: bool,
) -> Result<(), ()> {
    let e = &item.event.event;
    let route = &s.routes[item.route];
    let entry = DeadLetter {
        id: 0,
        replicator: s.id.clone(),
        resource: e.resource.clone(),
        destination: route.destination.clone(),
        action: e.action.as_str().into(),
        record_id: e.id.clone(),
        sequence: item.event.sequence,
        error: err.message.clone(),
        attempts: item.attempts.clone(),
        dead_lettered_at: now_rfc3339(),
        redrives: item.redrive.map(|(_, n)| n).unwrap_or(0),
        route: route.resource.clone(),
        transformed,
        event: (*item.event).clone(),
    };
    match s.journal.dead_letter(entry).await {
        Ok(id) => {
            s.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
            s.telemetry
                .metrics
                .dead_lettered
                .get_or_create(&s.label)
                .inc();
            tracing::warn!(replicator = %s.id, resource = %e.resource, id = %e.id, sequence = item.event.sequence, dead_letter = id, error = %err, "dead-lettered");
            let mut ev = monitor(s, "dead_lettered", item, Some(err.message.clone()));
            ev.attempt = Some(item.attempts.len() as u32);
            s.telemetry.emit(ev);
            Ok(())
        }
        Err(je) => {
            tracing::error!(replicator = %s.id, error = %je, "cannot store a dead letter; retrying the delivery instead");
            Err(())
        }
    }
}

fn monitor(s: &Shared, name: &'static str, item: &Item, error: Option<String>) -> MonitorEvent {
    let e = &item.event.event;
    MonitorEvent {
        name,
        replicator: s.id.clone(),
        resource: Some(e.resource.clone()),
        operation: Some(e.action.as_str().into()),
        id: Some(e.id.clone()),
        sequence: Some(item.event.sequence),
        attempt: Some(item.attempts.len() as u32 + 1),
        error,
    }
}

fn log_entry(s: &Shared, item: &Item, status: LogStatus, error: Option<String>) -> LogEntry {
    let e = &item.event.event;
    LogEntry {
        log_id: 0,
        at: now_rfc3339(),
        replicator: s.id.clone(),
        resource: e.resource.clone(),
        destination: s.routes[item.route].destination.clone(),
        action: e.action.as_str().into(),
        id: e.id.clone(),
        sequence: item.event.sequence,
        status,
        error,
        attempts: item.attempts.len() as u32 + u32::from(status == LogStatus::Success),
    }
}
