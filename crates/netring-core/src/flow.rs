//! Write flow control shared by TCP connections and UDP endpoints: what
//! became of a write, and the water marks that pause and resume the
//! protocol's producers.

use crate::config::DEFAULT_WRITE_HIGH_WATER_BYTES;

/// What became of a write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Written {
    /// The connection is closing or gone: nothing was queued.
    Dropped,
    /// Queued.
    Queued,
    /// Queued, and the queue just crossed the high-water mark: the caller
    /// must call `pause_writing` (no `PauseWriting` event follows).
    CrossedHigh,
}

/// The write side's water marks, shared by TCP connections and UDP
/// endpoints (uvloop's base transport does the same for every kind): the
/// protocol is told to pause once the queue goes above `high` and to resume
/// once it drains to `low`, each once per crossing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Flow {
    pub(crate) high: usize,
    pub(crate) low: usize,
    /// `pause_writing` was delivered and `resume_writing` not yet.
    pub(crate) paused: bool,
}

/// A crossing the protocol must hear about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Crossing {
    Pause,
    Resume,
}

impl Default for Flow {
    fn default() -> Self {
        Flow {
            high: DEFAULT_WRITE_HIGH_WATER_BYTES,
            low: DEFAULT_WRITE_HIGH_WATER_BYTES / 4,
            paused: false,
        }
    }
}

impl Flow {
    /// Bytes were queued and `queued` are waiting now: true when the
    /// protocol must pause now.
    pub(crate) fn queued(&mut self, queued: usize) -> bool {
        let pause = !self.paused && queued > self.high;
        self.paused |= pause;
        pause
    }

    /// The kernel took bytes and `queued` are left: true when the protocol
    /// may resume now.
    pub(crate) fn drained(&mut self, queued: usize) -> bool {
        let resume = self.paused && queued <= self.low;
        self.paused &= !resume;
        resume
    }

    /// New water marks with `queued` waiting: the crossing they cause.
    pub(crate) fn set_limits(
        &mut self,
        high: usize,
        low: usize,
        queued: usize,
    ) -> Option<Crossing> {
        self.high = high;
        self.low = low;
        if self.queued(queued) {
            Some(Crossing::Pause)
        } else if self.drained(queued) {
            Some(Crossing::Resume)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pauses_and_resumes_once_per_crossing() {
        let mut f = Flow {
            high: 100,
            low: 20,
            paused: false,
        };
        assert!(!f.queued(100), "at the mark: not above it");
        assert!(f.queued(101));
        assert!(!f.queued(500), "already paused");
        assert!(!f.drained(21));
        assert!(f.drained(20));
        assert!(!f.drained(0), "already resumed");
        assert_eq!(f.set_limits(10, 5, 50), Some(Crossing::Pause));
        assert_eq!(f.set_limits(100, 60, 50), Some(Crossing::Resume));
        assert_eq!(f.set_limits(100, 60, 50), None);
    }
}
