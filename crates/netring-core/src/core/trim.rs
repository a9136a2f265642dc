//! The per-thread trim: once a second while anything spare is held, free
//! the spare write buffers, the driver's unused receive buffers and the
//! queues a burst grew.

use std::time::{Duration, Instant};

use super::ThreadCore;
use crate::driver::Driver;
use crate::timer::Due;

/// How often a thread frees the spare write buffers, receive buffers and
/// queue space it did not use.
const SPARES_TRIM_INTERVAL: Duration = Duration::from_secs(1);

impl ThreadCore {
    /// Whether the `TrimSpares` timer fired since the last call.
    pub(crate) fn take_trim_due(&mut self) -> bool {
        std::mem::take(&mut self.trim_due)
    }

    /// Free what went unused for a trim interval: spare write buffers, the
    /// driver's spare receive buffers, and the event queues a burst
    /// (thousands of accepts in one wait) grew, once empty again. Returns
    /// the bytes freed.
    pub(crate) fn trim<D: Driver>(&mut self, driver: &mut D) -> usize {
        self.cache.trim() + driver.trim_buffers() + self.q.shrink()
    }

    /// While spare write buffers are kept (or `others`: receive buffers, or
    /// queues a burst grew), check every `SPARES_TRIM_INTERVAL` for ones
    /// that went unused: an idle thread wakes to give them back.
    pub(crate) fn schedule_trim(&mut self, now: Instant, others: bool) {
        let grown = self.q.grown();
        if !self.trim_scheduled && (others || grown || self.cache.has_spares()) {
            self.trim_scheduled = true;
            self.timers
                .schedule(now + SPARES_TRIM_INTERVAL, Due::TrimSpares);
        }
    }
}
