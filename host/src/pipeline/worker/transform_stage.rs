//! The transform stage: one read at a time goes through its routes' transforms in a task, so
//! outputs keep journal order while the worker keeps delivering. The read is kept until its
//! task returns: a task that fails runs again after a backoff, and after `maxRetries` its
//! inputs are dead-lettered with the reason. What a transform makes of one record is bounded
//! (`plugins.maxFanOut`), and reads are sized so the outputs fit in the worker's buffer.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tokio::task::{JoinError, JoinSet};

use super::{Item, Worker, panic_message};
use crate::delivery::{self as retry, Backoff};
use crate::event::StoredEvent;
use crate::plugins::{Live, Transform, TransformOutcome};

/// Events per call into a transform.
const TRANSFORM_BATCH: usize = 100;
/// Events per journal read, at most.
const MAX_READ: usize = 2048;

/// A read's events through each transformed route.
#[derive(Clone)]
pub struct RouteInputs {
    route: usize,
    transform: Arc<Transform>,
    inputs: Vec<Arc<StoredEvent>>,
}

/// Each input of a route with what its transform made of it, in journal order.
pub struct RouteOutputs {
    route: usize,
    results: Vec<(Arc<StoredEvent>, TransformOutcome)>,
}

/// The read under way and how often its task failed.
struct Work {
    routes: Vec<RouteInputs>,
    failures: u32,
    backoff: Option<Backoff>,
}

pub struct TransformStage {
    /// The transform of each route, if any; each read takes the version running when it
    /// starts, so a reload applies from the next read.
    transforms: Vec<Option<Arc<Live<Transform>>>>,
    max_fan_out: usize,
    task: JoinSet<Vec<RouteOutputs>>,
    work: Option<Work>,
    /// When a failed read goes again.
    retry_at: Option<Instant>,
}

async fn run(routes: Vec<RouteInputs>) -> Vec<RouteOutputs> {
    let mut done = Vec::with_capacity(routes.len());
    for r in routes {
        let mut outcomes = Vec::with_capacity(r.inputs.len());
        for chunk in r.inputs.chunks(TRANSFORM_BATCH) {
            outcomes.extend(r.transform.apply(chunk).await);
        }
        done.push(RouteOutputs {
            route: r.route,
            results: r.inputs.into_iter().zip(outcomes).collect(),
        });
    }
    done
}

impl TransformStage {
    pub fn new(transforms: Vec<Option<Arc<Live<Transform>>>>, max_fan_out: usize) -> Self {
        TransformStage {
            transforms,
            max_fan_out,
            task: JoinSet::new(),
            work: None,
            retry_at: None,
        }
    }

    pub fn has(&self, route: usize) -> bool {
        self.transforms.get(route).is_some_and(Option::is_some)
    }

    /// The version of the route's transform running now.
    pub fn of(&self, route: usize) -> Option<Arc<Transform>> {
        self.transforms.get(route)?.as_ref().map(|live| live.get())
    }

    /// No read is going through (the worker may read the journal).
    pub fn idle(&self) -> bool {
        self.work.is_none()
    }

    pub fn running(&self) -> bool {
        !self.task.is_empty()
    }

    /// When a failed read goes again, if one waits.
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// How many events to read with `room` free places: each may become `maxFanOut` events.
    pub fn read_size(&self, room: usize) -> usize {
        if self.transforms.iter().any(Option::is_some) {
            (room / self.max_fan_out).clamp(1, MAX_READ)
        } else {
            room.clamp(1, MAX_READ)
        }
    }

    /// Sends a read's inputs through their transforms.
    pub fn start(&mut self, inputs: BTreeMap<usize, Vec<Arc<StoredEvent>>>) {
        if inputs.is_empty() {
            return;
        }
        let routes: Vec<RouteInputs> = inputs
            .into_iter()
            .filter_map(|(route, inputs)| {
                Some(RouteInputs {
                    route,
                    transform: self.of(route)?,
                    inputs,
                })
            })
            .collect();
        self.task.spawn(run(routes.clone()));
        self.work = Some(Work {
            routes,
            failures: 0,
            backoff: None,
        });
    }

    pub async fn join_next(&mut self) -> Option<Result<Vec<RouteOutputs>, JoinError>> {
        self.task.join_next().await
    }

    /// Runs the failed read again, through the versions running now (a reload may have
    /// mended what failed).
    pub fn restart(&mut self) {
        self.retry_at = None;
        let Some(work) = &mut self.work else {
            return;
        };
        for r in &mut work.routes {
            if let Some(current) = self.transforms.get(r.route).and_then(Option::as_ref) {
                r.transform = current.get();
            }
        }
        self.task.spawn(run(work.routes.clone()));
    }

    /// One record through a transform, outside the stage (a redrive); a task that fails is
    /// that record failing.
    pub async fn apply_one(
        &self,
        transform: Arc<Transform>,
        event: Arc<StoredEvent>,
    ) -> TransformOutcome {
        let call = tokio::spawn(async move { transform.apply(&[event]).await.pop() });
        match call.await {
            Ok(Some(outcome)) => outcome,
            Ok(None) => {
                TransformOutcome::Failed(String::from("the transform gave no outcome").into())
            }
            Err(e) => TransformOutcome::Failed(task_failure(e).into()),
        }
    }

    pub async fn shutdown(&mut self) {
        self.task.shutdown().await;
        self.work = None;
        self.retry_at = None;
    }
}

fn task_failure(e: JoinError) -> String {
    if e.is_panic() {
        format!(
            "the transform task panicked: {}",
            panic_message(e.into_panic())
        )
    } else {
        "the transform task was cancelled".into()
    }
}

impl Worker {
    /// The transform task of a read returned.
    pub(super) async fn transform_returned(
        &mut self,
        joined: Result<Vec<RouteOutputs>, JoinError>,
    ) {
        match joined {
            Ok(done) => {
                self.transforms.work = None;
                self.queue_outputs(done).await;
            }
            Err(e) if e.is_cancelled() => {}
            Err(e) => self.transform_failed(task_failure(e)).await,
        }
    }

    /// The read's task failed: it goes again after a backoff, or, its attempts spent, each
    /// of its inputs is dead-lettered with the reason.
    async fn transform_failed(&mut self, reason: String) {
        let s = self.shared.clone();
        let Some(work) = self.transforms.work.as_mut() else {
            s.counters.stalled(&reason, None);
            return;
        };
        work.failures += 1;
        tracing::error!(replicator = %s.id, error = %reason, failures = work.failures, "transform stage failed");
        s.counters.stalled(&reason, Some(work.failures));
        if work.failures <= s.policy.max_retries {
            let delay = work
                .backoff
                .get_or_insert_with(|| retry::for_retries(&s.policy))
                .next()
                .unwrap_or(s.policy.max_retry_delay);
            self.transforms.retry_at = Some(Instant::now() + delay);
            return;
        }
        let Some(work) = self.transforms.work.take() else {
            return;
        };
        for r in work.routes {
            for input in r.inputs {
                let item = Item::new(input.clone(), r.route);
                s.dead_letter_surely(&item, &reason, false).await;
                self.progress.replace_one(input.sequence, 0);
            }
        }
    }

    /// Queues what the transforms made of a read, in journal order per route.
    async fn queue_outputs(&mut self, done: Vec<RouteOutputs>) {
        let s = self.shared.clone();
        for r in done {
            for (input, outcome) in r.results {
                let outputs = match outcome {
                    TransformOutcome::Emit(list) => {
                        if list.is_empty() {
                            s.counters.skipped();
                        }
                        list
                    }
                    TransformOutcome::Failed(failure) => {
                        let item = Item::new(input.clone(), r.route);
                        s.dead_letter_surely(&item, &failure.reason, false).await;
                        Vec::new()
                    }
                };
                // The route's place becomes its outputs (none: this route is done with it).
                self.progress
                    .replace_one(input.sequence, outputs.len() as u32);
                for event in outputs {
                    self.enqueue(Item::new(Arc::new(event), r.route));
                }
            }
        }
    }
}
