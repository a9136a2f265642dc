//! Engine-wide counters, updated by the IO threads with relaxed atomics and
//! read by `stats()` from any thread.

use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by every IO thread of one engine.
#[derive(Default, Debug)]
pub struct Stats {
    pub(crate) accepted: AtomicU64,
    pub(crate) connected: AtomicU64,
    pub(crate) closed: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) datagrams_in: AtomicU64,
    pub(crate) datagrams_out: AtomicU64,
    pub(crate) datagrams_truncated: AtomicU64,
    pub(crate) datagrams_dropped: AtomicU64,
    pub(crate) refused: AtomicU64,
    pub(crate) handshakes_failed: AtomicU64,
    pub(crate) frame_errors_oversize: AtomicU64,
    pub(crate) frame_errors_malformed: AtomicU64,
    pub(crate) frame_timeouts: AtomicU64,
    pub(crate) write_buffer_aborts: AtomicU64,
    pub(crate) file_prefetches: AtomicU64,
    pub(crate) frames_in: AtomicU64,
    pub(crate) frames_out: AtomicU64,
    pub(crate) zerocopy_sends: AtomicU64,
    pub(crate) zerocopy_copied: AtomicU64,
    pub(crate) zerocopy_abandoned: AtomicU64,
}

/// A point-in-time copy of [`Stats`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Connections open now.
    pub open: u64,
    /// Connections accepted since start.
    pub accepted: u64,
    /// Outbound connections established since start.
    pub connected: u64,
    /// Connections closed since start.
    pub closed: u64,
    /// Bytes received.
    pub bytes_in: u64,
    /// Bytes handed to the kernel for sending.
    pub bytes_out: u64,
    /// Datagrams received whole.
    pub datagrams_in: u64,
    /// Datagrams sent.
    pub datagrams_out: u64,
    /// Datagrams received larger than a buffer (reported, not delivered).
    pub datagrams_truncated: u64,
    /// Datagrams dropped because the endpoint's send queue was full.
    pub datagrams_dropped: u64,
    /// Connections accepted and closed at once by a listener's limits
    /// (`max_connections_per_ip`, or `max_connections` with `Overflow::Close`).
    pub refused: u64,
    /// Connections their stream layer closed before the protocol saw them:
    /// failed or timed-out TLS handshakes (each logged at DEBUG on
    /// `netring.core` with the peer and the reason).
    pub handshakes_failed: u64,
    /// Connections closed for a packet over `max_packet` or a line over
    /// `max_line`.
    pub frame_errors_oversize: u64,
    /// Connections closed for input that broke the framing otherwise (a
    /// length header shorter than itself, a RESP protocol error).
    pub frame_errors_malformed: u64,
    /// Connections closed because a packet took longer than `frame_timeout`.
    pub frame_timeouts: u64,
    /// Connections aborted because their queued writes passed
    /// `max_write_buffer` (a peer that does not read).
    pub write_buffer_aborts: u64,
    /// `sendfile` windows that were not in the page cache, read on the
    /// prefetch thread before they were sent.
    pub file_prefetches: u64,
    /// Packets cut from received bytes by a framing other than raw
    /// (length-prefixed, delimited, fixed-size, RESP) and delivered.
    pub frames_in: u64,
    /// Packets queued for sending framed (`write_packets`, the framed
    /// `send_packet`: header and delimiter added by the engine).
    pub frames_out: u64,
    /// Zero-copy sends the kernel sent from the caller's memory (io_uring
    /// `SEND_ZC`, with `zerocopy_threshold` set).
    pub zerocopy_sends: u64,
    /// Zero-copy sends the kernel copied after all (loopback, a device
    /// without scatter-gather): each turns zero-copy off for its connection.
    pub zerocopy_copied: u64,
    /// Zero-copy sends whose notification never came (epoll: a closed
    /// connection's socket given up after its deadline): the buffers they
    /// may read are leaked, never freed.
    pub zerocopy_abandoned: u64,
    /// Bytes buffered for connections now (queued writes, partial packets,
    /// held input), the quantity `max_buffer_memory` caps; counted only
    /// when that cap is set (0 otherwise).
    pub buffer_memory: u64,
}

impl Stats {
    pub(crate) fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Read every counter.
    pub fn snapshot(&self) -> StatsSnapshot {
        let closed = self.closed.load(Ordering::Relaxed);
        let accepted = self.accepted.load(Ordering::Relaxed);
        let connected = self.connected.load(Ordering::Relaxed);
        StatsSnapshot {
            open: (accepted + connected).saturating_sub(closed),
            accepted,
            connected,
            closed,
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
            datagrams_in: self.datagrams_in.load(Ordering::Relaxed),
            datagrams_out: self.datagrams_out.load(Ordering::Relaxed),
            datagrams_truncated: self.datagrams_truncated.load(Ordering::Relaxed),
            datagrams_dropped: self.datagrams_dropped.load(Ordering::Relaxed),
            refused: self.refused.load(Ordering::Relaxed),
            handshakes_failed: self.handshakes_failed.load(Ordering::Relaxed),
            frame_errors_oversize: self.frame_errors_oversize.load(Ordering::Relaxed),
            frame_errors_malformed: self.frame_errors_malformed.load(Ordering::Relaxed),
            frame_timeouts: self.frame_timeouts.load(Ordering::Relaxed),
            write_buffer_aborts: self.write_buffer_aborts.load(Ordering::Relaxed),
            file_prefetches: self.file_prefetches.load(Ordering::Relaxed),
            frames_in: self.frames_in.load(Ordering::Relaxed),
            frames_out: self.frames_out.load(Ordering::Relaxed),
            zerocopy_sends: self.zerocopy_sends.load(Ordering::Relaxed),
            zerocopy_copied: self.zerocopy_copied.load(Ordering::Relaxed),
            zerocopy_abandoned: self.zerocopy_abandoned.load(Ordering::Relaxed),
            buffer_memory: 0,
        }
    }
}

/// Finite buckets of a [`Histogram`]: bucket `i` counts durations of at
/// most 2^i µs (1 µs ... 2^22 µs, about 4.2 s); one more counts the rest.
pub const HISTOGRAM_BUCKETS: usize = 23;

/// A histogram of durations with power-of-two microsecond buckets, written
/// by one thread (its IO thread) and read by any.
///
/// NOTE: single writer, so `record` is a load and a store per field, not a
/// locked read-modify-write: it runs once or twice per turn.
#[derive(Debug)]
pub struct Histogram {
    counts: [AtomicU64; HISTOGRAM_BUCKETS + 1],
    sum_ns: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_ns: AtomicU64::new(0),
        }
    }
}

impl Histogram {
    /// The bucket of a duration of `ns` nanoseconds: the smallest `i` with
    /// `ns <= 2^i µs` (microseconds rounded up), or the overflow bucket.
    pub fn bucket(ns: u64) -> usize {
        let us = ns.div_ceil(1000);
        if us <= 1 {
            return 0;
        }
        // ceil(log2(us)) for us >= 2.
        let i = (u64::BITS - (us - 1).leading_zeros()) as usize;
        i.min(HISTOGRAM_BUCKETS)
    }

    /// Count one duration. Only the owning thread calls this.
    pub(crate) fn record(&self, d: std::time::Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        let slot = &self.counts[Self::bucket(ns)];
        slot.store(slot.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let sum = self.sum_ns.load(Ordering::Relaxed);
        self.sum_ns.store(sum.saturating_add(ns), Ordering::Relaxed);
    }

    fn add_to(&self, out: &mut HistogramSnapshot) {
        for (o, c) in out.counts.iter_mut().zip(&self.counts) {
            *o += c.load(Ordering::Relaxed);
        }
        out.sum_ns += self.sum_ns.load(Ordering::Relaxed);
    }
}

/// A point-in-time copy of one or several (summed) [`Histogram`]s.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Per bucket (not cumulative): `counts[i]` for `i < HISTOGRAM_BUCKETS`
    /// counts durations in (2^(i-1), 2^i] µs (bucket 0: up to 1 µs), the
    /// last one those over 2^22 µs.
    pub counts: [u64; HISTOGRAM_BUCKETS + 1],
    /// The durations' sum, in nanoseconds.
    pub sum_ns: u64,
}

impl HistogramSnapshot {
    /// The upper bound of finite bucket `i`, in seconds.
    pub fn upper_bound(i: usize) -> f64 {
        (1u64 << i) as f64 * 1e-6
    }

    /// How many durations were counted.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

/// What one IO thread measures of itself, apart from the engine's counters
/// (its own cache line: only it writes there).
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct ThreadTimes {
    /// A turn's busy part: from the wait's return to the next wait
    /// (completions, commands, dispatch, settle).
    pub(crate) turn: Histogram,
    /// A dispatch: the handler's callbacks for one turn's events.
    pub(crate) callbacks: Histogram,
}

/// The turn and callback histograms of every IO thread, summed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TimesSnapshot {
    /// Busy time per IO-loop turn.
    pub turn: HistogramSnapshot,
    /// Time in the handler's callbacks per turn that dispatched events.
    pub callbacks: HistogramSnapshot,
}

impl TimesSnapshot {
    /// The sum over `threads`.
    pub fn of(threads: &[ThreadTimes]) -> Self {
        let mut s = TimesSnapshot::default();
        for t in threads {
            t.turn.add_to(&mut s.turn);
            t.callbacks.add_to(&mut s.callbacks);
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn buckets_are_upper_bounds_in_microseconds_rounded_up() {
        assert_eq!(Histogram::bucket(0), 0);
        assert_eq!(Histogram::bucket(1_000), 0);
        assert_eq!(Histogram::bucket(1_001), 1);
        assert_eq!(Histogram::bucket(2_000), 1);
        assert_eq!(Histogram::bucket(2_001), 2);
        assert_eq!(Histogram::bucket(4_000), 2);
        assert_eq!(Histogram::bucket(1_000_000), 10); // 1 ms <= 2^10 µs
        assert_eq!(Histogram::bucket(1_000_000_000), 20); // 1 s <= 2^20 µs
        assert_eq!(Histogram::bucket(1 << 22 << 10), HISTOGRAM_BUCKETS); // > 2^22 µs
        assert_eq!(Histogram::bucket(u64::MAX), HISTOGRAM_BUCKETS);
        for i in 0..HISTOGRAM_BUCKETS {
            let bound_ns = (1u64 << i) * 1000;
            assert_eq!(Histogram::bucket(bound_ns), i, "2^{i} µs");
            assert_eq!(Histogram::bucket(bound_ns + 1), i + 1);
        }
    }

    #[test]
    fn threads_sum_into_one_snapshot() {
        let threads = [ThreadTimes::default(), ThreadTimes::default()];
        threads[0].turn.record(Duration::from_micros(3));
        threads[1].turn.record(Duration::from_micros(3));
        threads[1].turn.record(Duration::from_secs(10));
        threads[0].callbacks.record(Duration::from_nanos(500));
        let s = TimesSnapshot::of(&threads);
        assert_eq!(s.turn.counts[2], 2);
        assert_eq!(s.turn.counts[HISTOGRAM_BUCKETS], 1);
        assert_eq!(s.turn.count(), 3);
        assert_eq!(s.turn.sum_ns, 10_000_006_000);
        assert_eq!(s.callbacks.counts[0], 1);
        assert_eq!(s.callbacks.sum_ns, 500);
    }
}
