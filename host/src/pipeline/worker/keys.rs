//! Per-key scheduling: each key (route, resource, id) has a queue; a key is either ready (its
//! head may join a batch), busy (its head is in flight or waiting out a retry delay) or idle.
//! So a key never has two deliveries out at once, and its later events wait behind its head.

use std::collections::{HashMap, HashSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::time::{Duration, Instant};

use futures::StreamExt;
use tokio_util::time::DelayQueue;

/// A delivery key, hashed. Two keys that collide only share a queue: order is kept, some
/// parallelism lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Key(u64);

impl Key {
    pub fn of(route: usize, resource: &str, id: &str) -> Key {
        let mut h = DefaultHasher::new();
        route.hash(&mut h);
        resource.hash(&mut h);
        id.hash(&mut h);
        Key(h.finish())
    }
}

pub struct KeyQueues<T> {
    queues: HashMap<Key, VecDeque<T>>,
    ready: VecDeque<Key>,
    busy: HashSet<Key>,
    /// Busy keys waiting out a retry delay.
    delayed: DelayQueue<Key>,
    /// When the oldest ready key became ready (a partly filled batch lingers from here).
    ready_since: Option<Instant>,
    len: usize,
}

impl<T> Default for KeyQueues<T> {
    fn default() -> Self {
        KeyQueues {
            queues: HashMap::new(),
            ready: VecDeque::new(),
            busy: HashSet::new(),
            delayed: DelayQueue::new(),
            ready_since: None,
            len: 0,
        }
    }
}

impl<T> KeyQueues<T> {
    /// Items held, in flight ones included.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn ready_count(&self) -> usize {
        self.ready.len()
    }

    pub fn ready_since(&self) -> Option<Instant> {
        self.ready_since
    }

    /// Counts the linger as over, so the next dispatch sends what is ready.
    pub fn linger_over(&mut self, linger: Duration) {
        self.ready_since = Some(Instant::now() - linger);
    }

    pub fn push(&mut self, key: Key, item: T) {
        let queue = self.queues.entry(key).or_default();
        queue.push_back(item);
        self.len += 1;
        if queue.len() == 1 && !self.busy.contains(&key) {
            self.mark_ready(key);
        }
    }

    fn mark_ready(&mut self, key: Key) {
        if self.ready.is_empty() {
            self.ready_since = Some(Instant::now());
        }
        self.ready.push_back(key);
    }

    /// Takes the heads of up to `max` ready keys; their keys are busy until `done` or `retry`.
    pub fn take_batch(&mut self, max: usize) -> Vec<(Key, T)> {
        let n = self.ready.len().min(max);
        let mut batch = Vec::with_capacity(n);
        while batch.len() < n {
            let Some(key) = self.ready.pop_front() else {
                break;
            };
            if let Some(item) = self.queues.get_mut(&key).and_then(VecDeque::pop_front) {
                self.busy.insert(key);
                batch.push((key, item));
            }
        }
        self.ready_since = (!self.ready.is_empty()).then(Instant::now);
        batch
    }

    /// The key's head goes back to the front of its queue, the key busy for `delay`.
    pub fn retry(&mut self, key: Key, item: T, delay: Duration) {
        self.queues.entry(key).or_default().push_front(item);
        self.delayed.insert(key, delay);
    }

    /// The key's head is finished: the key's next item becomes ready.
    pub fn done(&mut self, key: Key) {
        self.len -= 1;
        self.busy.remove(&key);
        match self.queues.get(&key) {
            Some(q) if !q.is_empty() => self.mark_ready(key),
            _ => {
                self.queues.remove(&key);
            }
        }
    }

    /// The next key whose retry delay is over; pending forever when none waits.
    pub async fn next_expired(&mut self) -> Key {
        match self.delayed.next().await {
            Some(expired) => expired.into_inner(),
            None => std::future::pending().await,
        }
    }

    pub fn has_delayed(&self) -> bool {
        !self.delayed.is_empty()
    }

    /// A key's retry delay is over: its head may go again.
    pub fn release(&mut self, key: Key) {
        self.busy.remove(&key);
        if self.queues.get(&key).is_some_and(|q| !q.is_empty()) {
            self.mark_ready(key);
        }
    }

    pub fn clear(&mut self) {
        *self = KeyQueues::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_has_one_item_out_and_its_next_waits() {
        let mut q = KeyQueues::default();
        let (a, b) = (Key::of(0, "u", "a"), Key::of(0, "u", "b"));
        q.push(a, 1);
        q.push(a, 2);
        q.push(b, 3);
        let batch = q.take_batch(10);
        assert_eq!(batch.iter().map(|(_, v)| *v).collect::<Vec<_>>(), [1, 3]);
        assert!(q.take_batch(10).is_empty(), "a's 2 waits for 1");
        q.retry(a, 1, Duration::ZERO);
        q.done(b);
        assert!(q.take_batch(10).is_empty(), "a is delayed");
        let key = q.next_expired().await;
        q.release(key);
        assert_eq!(
            q.take_batch(10).iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            [1]
        );
        q.done(a);
        assert_eq!(
            q.take_batch(10).iter().map(|(_, v)| *v).collect::<Vec<_>>(),
            [2]
        );
        q.done(a);
        assert_eq!(q.len(), 0);
    }
}
