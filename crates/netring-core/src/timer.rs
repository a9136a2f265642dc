//! Per-IO-thread timers on the monotonic clock.
//!
//! A binary heap of deadlines: O(log n) to add, O(1) to find the next
//! deadline (the loop's wait timeout), so thousands of timers cost a few
//! bytes each and no thread. Cancelling is lazy: a cancelled user timer
//! stays in the heap as a tombstone and is skipped when it comes due. Idle
//! checks re-arm themselves from the connection's last activity, so a busy
//! connection costs one heap entry per idle period, not one per read.
//!
//! `Instant` is monotonic and 64-bit: no wrap after 49.7 days (the classic
//! `GetTickCount` bug the seed framework's users hit).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::time::{Duration, Instant};

use crate::conn::ConnId;

/// What a deadline is for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Due {
    /// A user timer (`call_later`, `call_every`).
    User(u64),
    /// Check a connection for idleness.
    Idle(ConnId),
    /// Abort a connection still closing at its deadline.
    Abort(ConnId),
    /// Give up an outbound connect still in flight.
    ConnectTimeout(ConnId),
    /// Stop a lingering close that is still waiting for the peer's EOF.
    LingerEnd(ConnId),
    /// Close a connection whose packet, started at the instant, is not done.
    FrameTimeout(ConnId, std::time::Instant),
    /// Free the spare write buffers that went unused since the last trim.
    TrimSpares,
    /// Close a connection whose stream layer is still not ready.
    LayerDeadline(ConnId),
}

/// The timers of one IO thread.
#[derive(Default, Debug)]
pub(crate) struct Timers {
    heap: BinaryHeap<Reverse<(Instant, u64, Due)>>,
    /// Live user timers: id → repeat interval.
    user: HashMap<u64, Option<Duration>>,
    seq: u64,
}

impl Timers {
    pub(crate) fn schedule(&mut self, at: Instant, due: Due) {
        self.seq += 1;
        self.heap.push(Reverse((at, self.seq, due)));
    }

    /// Add a user timer firing at `at`, then every `interval` if given.
    pub(crate) fn add_user(&mut self, id: u64, at: Instant, interval: Option<Duration>) {
        self.user.insert(id, interval);
        self.schedule(at, Due::User(id));
    }

    /// Cancel a user timer (no-op if it already fired or was cancelled).
    pub(crate) fn cancel_user(&mut self, id: u64) {
        self.user.remove(&id);
    }

    /// Live user timers.
    #[cfg(test)]
    pub(crate) fn user_count(&self) -> usize {
        self.user.len()
    }

    /// The earliest deadline, tombstones included (waking for one is cheap).
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        self.heap.peek().map(|Reverse((at, _, _))| *at)
    }

    /// Pop the next entry due at or before `now`. User timers that were
    /// cancelled are skipped; repeating ones are re-armed.
    pub(crate) fn pop_due(&mut self, now: Instant) -> Option<Due> {
        loop {
            let Reverse((at, _, due)) = *self.heap.peek()?;
            if at > now {
                return None;
            }
            self.heap.pop();
            match due {
                Due::User(id) => match self.user.get(&id) {
                    None => continue,
                    Some(None) => {
                        self.user.remove(&id);
                        return Some(due);
                    }
                    Some(Some(interval)) => {
                        let interval = *interval;
                        // Keep the cadence; after a stall, skip missed beats.
                        let mut next = at + interval;
                        if next <= now {
                            next = now + interval;
                        }
                        self.schedule(next, due);
                        return Some(due);
                    }
                },
                _ => return Some(due),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fires_in_order_skips_cancelled_and_repeats() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut t = Timers::default();
        t.add_user(1, t0 + ms(30), None);
        t.add_user(2, t0 + ms(10), None);
        t.add_user(3, t0 + ms(20), Some(ms(20)));
        t.cancel_user(1);
        assert_eq!(t.next_deadline(), Some(t0 + ms(10)));
        assert_eq!(t.pop_due(t0 + ms(5)), None);
        assert_eq!(t.pop_due(t0 + ms(25)), Some(Due::User(2)));
        assert_eq!(t.pop_due(t0 + ms(25)), Some(Due::User(3)));
        assert_eq!(t.pop_due(t0 + ms(25)), None);
        assert_eq!(
            t.pop_due(t0 + ms(45)),
            Some(Due::User(3)),
            "repeats every 20 ms"
        );
        assert_eq!(t.pop_due(t0 + ms(1000)), Some(Due::User(3)));
        assert_eq!(
            t.pop_due(t0 + ms(1000)),
            None,
            "missed beats are skipped, not replayed"
        );
        assert_eq!(t.user_count(), 1);
    }

    #[test]
    fn thousands_of_timers() {
        let t0 = Instant::now();
        let mut t = Timers::default();
        for i in 0..10_000u64 {
            t.add_user(i, t0 + Duration::from_micros(10_000 - i), None);
        }
        let mut last = 0;
        let mut n = 0;
        while let Some(Due::User(id)) = t.pop_due(t0 + Duration::from_secs(1)) {
            assert!(n == 0 || id < last);
            last = id;
            n += 1;
        }
        assert_eq!(n, 10_000);
    }
}
