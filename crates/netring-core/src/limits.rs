//! A listener's connection limits, shared by the IO threads its
//! connections live on.
//!
//! Only the listener's owner thread admits connections (it is the only one
//! accepting), so "check, then count" cannot race with another admission;
//! any thread releases a connection when it finalizes it. When the owner
//! is holding connections back (`Overflow::Hold`), a release on another
//! thread wakes the owner, which then takes the next one.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::{ListenLimits, Overflow};

/// A connection admitted under a listener's limits: the counts it is part
/// of and its peer IP (to release when it closes).
pub type Counted = Option<(Arc<ListenerCounts>, Option<std::net::IpAddr>)>;

/// The outcome of trying to admit a connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Counted: serve it.
    Yes,
    /// `max_connections` reached.
    OverTotal,
    /// `max_connections_per_ip` reached for its address.
    OverIp,
    /// `max_unready` reached: wait (always held, whatever the overflow).
    Wait,
}

/// Live counts of one listener's connections.
#[derive(Debug)]
pub struct ListenerCounts {
    pub(crate) limits: ListenLimits,
    /// The IO thread that owns the listener.
    pub(crate) owner: u16,
    open: AtomicUsize,
    /// Admitted connections whose layer is not ready yet.
    unready: AtomicUsize,
    per_ip: Mutex<HashMap<IpAddr, usize>>,
    /// The owner holds connections back: wake it on every release.
    pub(crate) waiting: AtomicBool,
}

impl ListenerCounts {
    pub(crate) fn new(limits: ListenLimits, owner: u16) -> Self {
        ListenerCounts {
            limits,
            owner,
            open: AtomicUsize::new(0),
            unready: AtomicUsize::new(0),
            per_ip: Mutex::new(HashMap::new()),
            waiting: AtomicBool::new(false),
        }
    }

    /// Whether the peer address is needed to admit (per-IP limit set).
    pub(crate) fn needs_ip(&self) -> bool {
        self.limits.max_connections_per_ip.is_some()
    }

    pub(crate) fn overflow(&self) -> Overflow {
        self.limits.overflow
    }

    /// Whether one more connection fits under `max_connections` (and, for
    /// a `layered` listener, `max_unready`).
    pub(crate) fn has_room(&self, layered: bool) -> bool {
        self.has_unready_room(layered)
            && self
                .limits
                .max_connections
                .is_none_or(|max| self.open.load(Ordering::Acquire) < max)
    }

    fn has_unready_room(&self, layered: bool) -> bool {
        !layered
            || self
                .limits
                .max_unready
                .is_none_or(|max| self.unready.load(Ordering::Acquire) < max)
    }

    /// Whether connections of a `layered` listener are counted until their
    /// layer is ready.
    pub(crate) fn counts_unready(&self, layered: bool) -> bool {
        layered && self.limits.max_unready.is_some()
    }

    /// Count a connection from `ip` if the limits allow it (owner only); a
    /// `layered` one is also counted as unready until
    /// [`ListenerCounts::ready`].
    pub(crate) fn try_admit(&self, ip: Option<IpAddr>, layered: bool) -> Admit {
        if !self.has_unready_room(layered) {
            return Admit::Wait;
        }
        if !self.has_room(false) {
            return Admit::OverTotal;
        }
        if let (Some(max), Some(ip)) = (self.limits.max_connections_per_ip, ip) {
            let mut map = crate::sync::lock(&self.per_ip);
            let n = map.entry(ip).or_insert(0);
            if *n >= max {
                return Admit::OverIp;
            }
            *n += 1;
        }
        self.open.fetch_add(1, Ordering::AcqRel);
        if self.counts_unready(layered) {
            self.unready.fetch_add(1, Ordering::AcqRel);
        }
        Admit::Yes
    }

    /// An admitted connection's layer became ready, or it closed before
    /// (any thread). Returns whether the owner must be woken.
    pub(crate) fn ready(&self) -> bool {
        self.unready.fetch_sub(1, Ordering::AcqRel);
        self.waiting.load(Ordering::Acquire)
    }

    /// A counted connection closed (any thread). Returns whether the owner
    /// is waiting for room and must be woken.
    pub(crate) fn release(&self, ip: Option<IpAddr>) -> bool {
        if let (Some(_), Some(ip)) = (self.limits.max_connections_per_ip, ip) {
            let mut map = crate::sync::lock(&self.per_ip);
            if let Some(n) = map.get_mut(&ip) {
                *n -= 1;
                if *n == 0 {
                    map.remove(&ip);
                }
            }
        }
        self.open.fetch_sub(1, Ordering::AcqRel);
        self.waiting.load(Ordering::Acquire)
    }

    /// Connections counted now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn admits_exactly_up_to_both_limits_and_frees_on_release() {
        let c = ListenerCounts::new(
            ListenLimits {
                max_connections: Some(3),
                max_connections_per_ip: Some(2),
                overflow: Overflow::Hold,
                max_unready: Some(1),
            },
            0,
        );
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(c.try_admit(Some(a), false), Admit::Yes);
        assert_eq!(c.try_admit(Some(a), false), Admit::Yes);
        assert_eq!(c.try_admit(Some(a), false), Admit::OverIp);
        assert_eq!(c.try_admit(Some(b), false), Admit::Yes);
        assert_eq!(c.try_admit(Some(b), false), Admit::OverTotal);
        assert_eq!(c.open(), 3);
        assert!(!c.release(Some(a)));
        assert_eq!(c.try_admit(Some(b), false), Admit::Yes);
        assert_eq!(c.try_admit(Some(a), false), Admit::OverTotal);
        // A layered connection also needs room among the unready ones.
        assert!(!c.release(Some(a)));
        assert_eq!(c.try_admit(None, true), Admit::Yes);
        assert!(!c.has_room(true), "one unready at most");
        assert_eq!(c.try_admit(None, true), Admit::Wait);
        assert!(!c.ready());
        assert!(c.has_room(true) == c.has_room(false));
    }
}
