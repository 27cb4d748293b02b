//! Which journal events a replicator has not finished, and so how far its cursor may move:
//! an event is finished when every delivery made of it (one per route, or what a transform
//! made of it) is delivered or dead-lettered.

use std::collections::BTreeMap;

/// An event read but not finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Unfinished {
    deliveries_left: u32,
    accepted_at_ms: i64,
}

#[derive(Debug)]
pub struct Progress {
    unfinished: BTreeMap<u64, Unfinished>,
    /// The next sequence to read.
    pub read_pos: u64,
    /// Saved in the journal: everything up to here is done.
    pub committed: u64,
    /// Events finished since last taken, when someone wants each one (a cluster feed
    /// deletes their messages).
    finished: Option<Vec<u64>>,
}

impl Progress {
    pub fn from_cursor(cursor: u64) -> Self {
        Progress {
            unfinished: BTreeMap::new(),
            read_pos: cursor + 1,
            committed: cursor,
            finished: None,
        }
    }

    /// Progress that lists each finished event (for [`Progress::take_finished`]).
    pub fn listing_finished() -> Self {
        Progress {
            finished: Some(Vec::new()),
            ..Progress::from_cursor(0)
        }
    }

    /// The events finished since the last call.
    pub fn take_finished(&mut self) -> Vec<u64> {
        self.finished
            .as_mut()
            .map(std::mem::take)
            .unwrap_or_default()
    }

    /// Forgets everything and starts again after `cursor`.
    pub fn rewind(&mut self, cursor: u64) {
        *self = Progress::from_cursor(cursor);
    }

    /// An event read with `deliveries` deliveries to make. Two events with one sequence
    /// (versions given by two hosts in the same microsecond) add up: both are finished
    /// together.
    pub fn track(&mut self, sequence: u64, deliveries: u32, accepted_at_ms: i64) {
        let u = self.unfinished.entry(sequence).or_insert(Unfinished {
            deliveries_left: 0,
            accepted_at_ms,
        });
        u.deliveries_left += deliveries;
    }

    /// One delivery of the event became `outputs` (a transform's result; 0: none left to do).
    pub fn replace_one(&mut self, sequence: u64, outputs: u32) {
        if let Some(u) = self.unfinished.get_mut(&sequence) {
            u.deliveries_left = u.deliveries_left + outputs - 1;
            if u.deliveries_left == 0 {
                self.unfinished.remove(&sequence);
                if let Some(finished) = &mut self.finished {
                    finished.push(sequence);
                }
            }
        }
    }

    /// Whether the event has deliveries left.
    pub fn tracks(&self, sequence: u64) -> bool {
        self.unfinished.contains_key(&sequence)
    }

    /// One delivery of the event is finished.
    pub fn finish_one(&mut self, sequence: u64) {
        self.replace_one(sequence, 0);
    }

    /// The cursor may move here: the event before the oldest unfinished one.
    pub fn done_to(&self) -> u64 {
        match self.unfinished.first_key_value() {
            Some((sequence, _)) => sequence - 1,
            None => self.read_pos - 1,
        }
    }

    /// When the oldest unfinished event was accepted (0 when none).
    pub fn oldest_accepted_at_ms(&self) -> i64 {
        self.unfinished
            .first_key_value()
            .map_or(0, |(_, u)| u.accepted_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cursor_stops_before_the_oldest_unfinished_event() {
        let mut p = Progress::from_cursor(10);
        p.track(11, 2, 5);
        p.track(12, 1, 6);
        p.read_pos = 13;
        assert_eq!(p.done_to(), 10);
        p.finish_one(12);
        assert_eq!(p.done_to(), 10);
        p.finish_one(11);
        assert_eq!(p.done_to(), 10, "one route of 11 is left");
        p.replace_one(11, 3);
        assert_eq!(p.oldest_accepted_at_ms(), 5);
        for _ in 0..3 {
            p.finish_one(11);
        }
        assert_eq!(p.done_to(), 12);
        assert_eq!(p.oldest_accepted_at_ms(), 0);
    }

    #[test]
    fn finished_events_are_listed_when_asked_and_a_shared_sequence_adds_up() {
        let mut p = Progress::listing_finished();
        p.track(7, 1, 1);
        p.track(7, 2, 1);
        p.track(9, 1, 2);
        p.finish_one(9);
        p.finish_one(7);
        p.finish_one(7);
        assert_eq!(p.take_finished(), [9]);
        p.finish_one(7);
        assert_eq!(p.take_finished(), [7]);
        assert!(p.take_finished().is_empty());
        assert!(Progress::from_cursor(3).take_finished().is_empty());
    }
}
