//! The engine-wide count of bytes buffered for connections, and its cap.
//!
//! Each IO thread accounts its connections' queued writes, partial packets
//! and held input when it settles them (a connection's `accounted` is what
//! it last added). Over the cap, connections that hold such bytes stop
//! reading (memory-free ones go on, so the server keeps answering); when
//! the total falls to the low-water mark (3/4 of the cap) every IO thread
//! is woken to resume its paused connections.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// The engine's buffered bytes and cap.
#[derive(Debug)]
pub struct Memory {
    used: AtomicUsize,
    cap: Option<usize>,
    /// Some connection is paused for memory: wake the threads at low water.
    over: AtomicBool,
}

impl Memory {
    pub(crate) fn new(cap: Option<usize>) -> Self {
        Memory {
            used: AtomicUsize::new(0),
            cap,
            over: AtomicBool::new(false),
        }
    }

    /// Whether a cap is set (without one nothing is counted: no shared
    /// atomic on every write).
    pub(crate) fn enabled(&self) -> bool {
        self.cap.is_some()
    }

    /// Bytes buffered now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// Move one connection's share from `old` to `new` bytes. Returns true
    /// when this change brought the total down to the low-water mark while
    /// connections were paused: the caller wakes every IO thread.
    pub(crate) fn update(&self, old: usize, new: usize) -> bool {
        if new > old {
            self.used.fetch_add(new - old, Ordering::Relaxed);
            false
        } else if old > new {
            let now = self.used.fetch_sub(old - new, Ordering::Relaxed) - (old - new);
            self.below_low(now) && self.over.swap(false, Ordering::AcqRel)
        } else {
            false
        }
    }

    /// Over the cap now (connections holding bytes must pause).
    pub(crate) fn over_cap(&self) -> bool {
        self.cap.is_some_and(|cap| self.used() > cap)
    }

    /// At or under the low-water mark (paused connections may resume).
    pub(crate) fn may_resume(&self) -> bool {
        self.below_low(self.used())
    }

    fn below_low(&self, used: usize) -> bool {
        self.cap.is_none_or(|cap| used <= cap / 4 * 3)
    }

    /// A connection was paused for memory.
    pub(crate) fn mark_over(&self) {
        self.over.store(true, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_over_the_cap_and_wakes_once_at_low_water() {
        let m = Memory::new(Some(1000));
        assert!(!m.update(0, 1200));
        assert!(m.over_cap());
        m.mark_over();
        assert!(!m.update(1200, 800)); // under the cap, above low water (750)
        assert!(!m.over_cap() && !m.may_resume());
        assert!(m.update(800, 700)); // crossed low water: wake, once
        assert!(!m.update(700, 600));
        assert!(m.may_resume());
    }
}
