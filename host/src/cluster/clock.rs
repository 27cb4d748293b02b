//! Versions: the `sequence` of an event in cluster mode, given when a host takes it off the
//! intake queue. Microseconds since the epoch, made strictly increasing per host (a hybrid
//! logical clock), and increasing per key across hosts by a commit wait (see [`Clock::settle`]).

use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub struct Clock {
    last: Mutex<u64>,
    max_skew: Duration,
}

impl Clock {
    pub fn new(max_skew: Duration) -> Clock {
        Clock {
            last: Mutex::new(0),
            max_skew,
        }
    }

    /// A version greater than every one this host gave before, and no earlier than now.
    pub fn next(&self) -> u64 {
        let mut last = self.last.lock().expect("clock lock");
        *last = now_micros().max(*last + 1);
        *last
    }

    /// A version below every one any host gives from now on, if clocks differ by at most
    /// `maxClockSkew`.
    pub fn behind_every_host(&self) -> u64 {
        self.next().saturating_sub(self.max_skew.as_micros() as u64)
    }

    /// Returns once every host's clock reads past `version`, if clocks differ by at most
    /// `maxClockSkew`. A key's next event can only be taken after this host lets go of the
    /// key (deletes its intake message), so whichever host versions it gets a larger version.
    pub async fn settle(&self, version: u64) {
        let until = version + self.max_skew.as_micros() as u64;
        let now = now_micros();
        if until >= now {
            tokio::time::sleep(Duration::from_micros(until - now + 1)).await;
        }
    }
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn versions_only_grow_and_settle_waits_out_the_skew() {
        let clock = Clock::new(Duration::from_millis(5));
        let a = clock.next();
        let b = clock.next();
        assert!(b > a);
        clock.settle(b).await;
        assert!(now_micros() > b + 5_000);
        let other_host = Clock::new(Duration::ZERO);
        assert!(other_host.next() > b, "a later host's version is larger");
        assert!(clock.behind_every_host() < other_host.next());
    }
}
