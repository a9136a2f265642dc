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
            buffer_memory: 0,
        }
    }
}
