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
}

/// Live counts of one listener's connections.
#[derive(Debug)]
pub struct ListenerCounts {
    pub(crate) limits: ListenLimits,
    /// The IO thread that owns the listener.
    pub(crate) owner: u16,
    open: AtomicUsize,
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

    /// Whether one more connection fits under `max_connections`.
    pub(crate) fn has_room(&self) -> bool {
        self.limits
            .max_connections
            .is_none_or(|max| self.open.load(Ordering::Acquire) < max)
    }

    /// Count a connection from `ip` if both limits allow it (owner only).
    pub(crate) fn try_admit(&self, ip: Option<IpAddr>) -> Admit {
        if !self.has_room() {
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
        Admit::Yes
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
            },
            0,
        );
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        assert_eq!(c.try_admit(Some(a)), Admit::Yes);
        assert_eq!(c.try_admit(Some(a)), Admit::Yes);
        assert_eq!(c.try_admit(Some(a)), Admit::OverIp);
        assert_eq!(c.try_admit(Some(b)), Admit::Yes);
        assert_eq!(c.try_admit(Some(b)), Admit::OverTotal);
        assert_eq!(c.open(), 3);
        assert!(!c.release(Some(a)));
        assert_eq!(c.try_admit(Some(b)), Admit::Yes);
        assert_eq!(c.try_admit(Some(a)), Admit::OverTotal);
    }
}
