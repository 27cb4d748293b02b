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
}

impl Progress {
    pub fn from_cursor(cursor: u64) -> Self {
        Progress {
            unfinished: BTreeMap::new(),
            read_pos: cursor + 1,
            committed: cursor,
        }
    }

    /// Forgets everything and starts again after `cursor`.
    pub fn rewind(&mut self, cursor: u64) {
        *self = Progress::from_cursor(cursor);
    }

    /// An event read with `deliveries` deliveries to make.
    pub fn track(&mut self, sequence: u64, deliveries: u32, accepted_at_ms: i64) {
        self.unfinished.insert(
            sequence,
            Unfinished {
                deliveries_left: deliveries,
                accepted_at_ms,
            },
        );
    }

    /// One delivery of the event became `outputs` (a transform's result; 0: none left to do).
    pub fn replace_one(&mut self, sequence: u64, outputs: u32) {
        if let Some(u) = self.unfinished.get_mut(&sequence) {
            u.deliveries_left = u.deliveries_left + outputs - 1;
            if u.deliveries_left == 0 {
                self.unfinished.remove(&sequence);
            }
        }
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
}
