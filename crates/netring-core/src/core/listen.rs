//! Listeners on one IO thread: accepting (multishot where the backend has
//! it), backing off while descriptors or memory are exhausted (retrying at
//! once when one frees), listener limits (admit, hold, refuse), handing
//! accepted connections out round robin, and closing a listener.

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::SockRef;

use super::{Ev, ThreadCore};
use crate::config::ConnOptions;
use crate::conn::ConnId;
use crate::driver::Driver;
use crate::limits::{Admit, Counted, ListenerCounts};
use crate::mailbox::Cmd;
use crate::stats::Stats;
use crate::timer::Due;

/// First pause after accept fails for lack of descriptors or memory.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between accept attempts while descriptors are exhausted.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// An exhaustion episode ends after this long with no failed accept.
const EPISODE_QUIET: Duration = Duration::from_secs(1);

pub(super) struct Listener {
    socket: OwnedFd,
    options: Arc<ConnOptions>,
    armed: bool,
    closing: bool,
    backoff: Duration,
    retry_at: Option<Instant>,
    /// Failed accepts in the current exhaustion episode (0: none).
    failures: u64,
    /// When the last accept failed for want of descriptors or memory.
    last_failure: Option<Instant>,
    /// Connection limits, if any.
    counts: Option<Arc<ListenerCounts>>,
    /// At `max_connections` (Overflow::Hold): accepting stopped; accepted
    /// connections that arrived meanwhile wait here, in order, unserved.
    full: bool,
    /// The accept's cancel (for `full`) is on its way.
    cancel_sent: bool,
    /// Closing: accept what is queued once the accept's cancel is done.
    sweep: bool,
    /// Set once this listener is gone (see `Queues::unlistened`).
    on_closed: Vec<Arc<AtomicBool>>,
    /// A socket from outside, perhaps accepted from by other processes
    /// too: accept one connection at a time (see `Driver::arm_accept`).
    pub(super) shared: bool,
    held: VecDeque<(OwnedFd, Option<std::net::IpAddr>)>,
}

impl Listener {
    pub(super) fn new(
        socket: OwnedFd,
        options: Arc<ConnOptions>,
        counts: Option<Arc<ListenerCounts>>,
    ) -> Self {
        Listener {
            socket,
            options,
            armed: true,
            closing: false,
            backoff: ACCEPT_BACKOFF_MIN,
            retry_at: None,
            failures: 0,
            last_failure: None,
            counts,
            full: false,
            cancel_sent: false,
            sweep: false,
            on_closed: Vec::new(),
            shared: false,
            held: VecDeque::new(),
        }
    }
}

impl ThreadCore {
    /// Stop accepting on `listener` and close its socket. With `done` (a
    /// user's `Unlisten`), the connections the kernel has queued when the
    /// accept is over are accepted and served first, on this thread (none
    /// reset), and `done` is set after the dispatch that delivers their
    /// opening (`Opened`, or the start of a layer's handshake); without (a
    /// shutdown, a listener's close: also after an earlier `Unlisten`),
    /// they are left to the socket's close (reset, or another process's on
    /// a shared socket). A listener with connection limits is never swept:
    /// what it could not admit would be reset.
    pub(super) fn unlisten<D: Driver>(
        &mut self,
        listener: usize,
        done: Option<Arc<AtomicBool>>,
        driver: &mut D,
    ) {
        let Some(l) = self.listeners.get_mut(&listener) else {
            self.q.unlistened.extend(done);
            return;
        };
        if done.is_none() {
            l.sweep = false; // closing for good: nothing more to open
        }
        let sweep = done.is_some() && l.counts.is_none() && self.shutdown_deadline.is_none();
        l.on_closed.extend(done);
        if l.closing {
            return;
        }
        l.closing = true;
        l.sweep = sweep;
        if l.armed {
            driver.cancel_accept(listener, l.socket.as_raw_fd());
        } else {
            // NOTE: between two single accepts (a shared socket), or backing
            // off: nothing of ours waits in the kernel, so what is queued
            // can be taken now.
            if sweep && l.retry_at.is_none() {
                self.sweep(listener);
            }
            self.remove_listener(listener);
        }
    }

    /// Accept what `listener`'s socket has queued and open it here.
    fn sweep(&mut self, listener: usize) {
        let Some(l) = self.listeners.get(&listener) else {
            return;
        };
        let mut fds = Vec::new();
        sweep_queue(&l.socket, &mut fds);
        let options = l.options.clone();
        for fd in fds {
            // NOTE: on this thread, not handed out: `done` is set after this
            // thread's next dispatch, and another thread could already have
            // closed the listener's connections.
            self.adopt(listener, fd, &options, None);
        }
    }

    fn remove_listener(&mut self, listener: usize) {
        if let Some(l) = self.listeners.remove(&listener) {
            self.q.unlistened.extend(l.on_closed);
        }
    }

    /// Stop accepting on `listener` and close its connections gracefully;
    /// abort those still open at `deadline`. Other listeners' connections
    /// (a shared pool) are untouched.
    pub(super) fn close_listener<D: Driver>(
        &mut self,
        listener: usize,
        deadline: Instant,
        driver: &mut D,
    ) {
        self.unlisten(listener, None, driver);
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|c| c.listener as usize == listener)
            .map(|c| c.id)
            .collect();
        for id in conns {
            self.close(id);
            self.timers.schedule(deadline, Due::Abort(id));
        }
    }

    pub(super) fn adopt(
        &mut self,
        listener: usize,
        fd: OwnedFd,
        options: &ConnOptions,
        counted: Counted,
    ) {
        let layered = options.layer.is_some();
        if self.shutdown_deadline.is_some() {
            if let Some((counts, ip)) = counted {
                if counts.counts_unready(layered) {
                    self.unready_done(&counts);
                }
                self.release_count(&counts, ip);
            }
            return; // shutting down: the descriptor closes here
        }
        let sock = SockRef::from(&fd);
        // NOTE: asyncio sets TCP_NODELAY on every TCP transport; so do we.
        let _ = sock.set_tcp_nodelay(true);
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let id = self.insert_conn(fd, options);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        // NOTE: listener ids count up from 0; u32::MAX marks outbound.
        conn.listener = u32::try_from(listener).unwrap_or(u32::MAX);
        // Counted as unready until its layer is ready or it closes.
        let pending = counted
            .as_ref()
            .filter(|(c, _)| c.counts_unready(layered))
            .map(|(c, _)| c.clone());
        if counted.is_some() {
            conn.rare().counted = counted;
        }
        let shared = conn.shared.clone();
        Self::mark_dirty(&mut self.dirty, conn);
        Stats::add(&self.stats().accepted, 1);
        let open = Ev::Opened {
            conn: id,
            listener,
            peer,
            local,
            shared,
            info: None,
        };
        match &options.layer {
            Some(layer) => self.start_layer(id, layer, open, pending),
            None => self.q.events.push_back(open),
        }
    }

    pub(super) fn accepted(
        &mut self,
        listener: usize,
        result: io::Result<OwnedFd>,
        more: bool,
        now: Instant,
    ) {
        let Some(l) = self.listeners.get_mut(&listener) else {
            return;
        };
        if !more {
            l.armed = false;
            if l.closing {
                // NOTE: the accept's cancel is done. What the kernel queued
                // meanwhile is accepted now rather than reset when the
                // socket closes, and on a socket other processes accept
                // from too (systemd's, shared by worker processes) it must
                // be: io_uring's accept waits with EPOLLEXCLUSIVE, so a
                // connection whose one wake-up went to this cancelled
                // accept would wake no other process and wait unserved.
                if l.sweep && self.shutdown_deadline.is_none() {
                    let options = l.options.clone();
                    if let Ok(fd) = result {
                        self.adopt(listener, fd, &options, None);
                    }
                    self.sweep(listener);
                }
                self.remove_listener(listener);
                return;
            }
        }
        match result {
            Ok(fd) => self.take_accepted(listener, fd, now),
            Err(e) => {
                let errno = e.raw_os_error().unwrap_or(0);
                if matches!(
                    errno,
                    libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM
                ) {
                    if l.failures == 0 {
                        log::warn!("netring: accept failed ({e}); backing off");
                    }
                    l.failures += 1;
                    l.last_failure = Some(now);
                    l.retry_at = Some(now + l.backoff);
                    l.backoff = (l.backoff * 2).min(ACCEPT_BACKOFF_MAX);
                } else if errno != libc::ECANCELED {
                    log::debug!("netring: accept error ignored: {e}");
                }
            }
        }
    }

    /// A connection `listener` accepted: served, held or refused by its
    /// limits.
    fn take_accepted(&mut self, listener: usize, fd: OwnedFd, now: Instant) {
        let Some(l) = self.listeners.get_mut(&listener) else {
            return;
        };
        // Retry quickly again, but end the episode (and log it) only once
        // accepts have gone a quiet second without failing: near the limit,
        // accepts alternate between working and failing as descriptors come
        // and go, and that is one episode, not one per flip.
        l.backoff = ACCEPT_BACKOFF_MIN;
        if l.failures > 0 && l.last_failure.is_none_or(|t| now - t >= EPISODE_QUIET) {
            log::info!(
                "netring: accepting again after {} failed attempts (descriptors or memory exhausted)",
                l.failures
            );
            l.failures = 0;
        }
        let Some(counts) = l.counts.clone() else {
            self.hand_out(listener, fd, None);
            return;
        };
        let ip = if counts.needs_ip() {
            SockRef::from(&fd)
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
                .map(|a| a.ip())
        } else {
            None
        };
        if !l.held.is_empty() {
            l.held.push_back((fd, ip)); // first come, first served
            return;
        }
        self.admit(listener, fd, ip, counts);
    }

    /// Serve `fd` from `listener` if its limits allow, else hold or refuse it.
    pub(super) fn admit(
        &mut self,
        listener: usize,
        fd: OwnedFd,
        ip: Option<std::net::IpAddr>,
        counts: Arc<ListenerCounts>,
    ) {
        let layered = self
            .listeners
            .get(&listener)
            .is_some_and(|l| l.options.layer.is_some());
        let admit = counts.try_admit(ip, layered);
        match admit {
            Admit::Yes => self.hand_out(listener, fd, Some((counts, ip))),
            Admit::OverIp => {
                Stats::add(&self.engine.stats.refused, 1);
                drop(fd); // accept-then-close: holding it would stall others
            }
            Admit::OverTotal | Admit::Wait => {
                if admit == Admit::OverTotal && counts.overflow() == crate::config::Overflow::Close
                {
                    Stats::add(&self.engine.stats.refused, 1);
                    drop(fd);
                    return;
                }
                let Some(l) = self.listeners.get_mut(&listener) else {
                    return;
                };
                l.held.push_back((fd, ip));
                if !l.full {
                    l.full = true;
                    counts
                        .waiting
                        .store(true, std::sync::atomic::Ordering::Release);
                }
            }
        }
    }

    /// Give an accepted connection to the next IO thread (round robin).
    pub(super) fn hand_out(&mut self, listener: usize, fd: OwnedFd, counted: Counted) {
        let Some(l) = self.listeners.get(&listener) else {
            return;
        };
        let options = l.options.clone();
        let n = self.engine.mailboxes.len();
        let target = self.engine.next_target() % n;
        if target == usize::from(self.thread) {
            self.adopt(listener, fd, &options, counted);
        } else {
            self.engine.mailboxes[target].push(Cmd::Adopt {
                listener,
                fd,
                options,
                counted,
            });
        }
    }

    /// Free the places of connections whose `Closed` was just dispatched.
    pub(crate) fn release_dispatched(&mut self) {
        for (counts, ip) in std::mem::take(&mut self.q.releases) {
            self.release_count(&counts, ip);
        }
    }

    /// A counted connection is gone: free its place, and wake the
    /// listener's owner if it holds connections back.
    pub(super) fn release_count(&mut self, counts: &ListenerCounts, ip: Option<std::net::IpAddr>) {
        if counts.release(ip) && counts.owner != self.thread {
            self.engine.mailboxes[usize::from(counts.owner)].push(Cmd::Wake);
        }
    }

    /// A counted connection is no longer unready (its layer became ready,
    /// or it closed before): wake the listener's owner if it waits for room.
    pub(super) fn unready_done(&mut self, counts: &ListenerCounts) {
        if counts.ready() && counts.owner != self.thread {
            self.engine.mailboxes[usize::from(counts.owner)].push(Cmd::Wake);
        }
    }

    /// Serve held connections while there is room; start accepting again
    /// once none is held.
    pub(super) fn drain_held(&mut self, listener: usize) {
        loop {
            let Some(l) = self.listeners.get_mut(&listener) else {
                return;
            };
            let Some(counts) = l.counts.clone() else {
                return;
            };
            if !counts.has_room(l.options.layer.is_some()) {
                return;
            }
            match l.held.pop_front() {
                Some((fd, ip)) => self.admit(listener, fd, ip, counts),
                None => {
                    l.full = false;
                    counts
                        .waiting
                        .store(false, std::sync::atomic::Ordering::Release);
                    return;
                }
            }
        }
    }

    /// Re-arm listeners whose accept ended; returns the earliest pending retry.
    pub(crate) fn rearm_listeners<D: Driver>(
        &mut self,
        driver: &mut D,
        now: Instant,
    ) -> Option<Instant> {
        let full: Vec<usize> = self
            .listeners
            .iter()
            .filter(|(_, l)| l.full && !l.closing)
            .map(|(&id, _)| id)
            .collect();
        for id in full {
            self.drain_held(id);
        }
        let fd_freed = std::mem::take(&mut self.fd_freed);
        let mut next = None;
        for (&id, l) in self.listeners.iter_mut() {
            if l.full && l.armed && !l.closing {
                // At the limit: stop taking connections from the backlog.
                if !l.cancel_sent {
                    l.cancel_sent = true;
                    driver.cancel_accept(id, l.socket.as_raw_fd());
                }
                continue;
            }
            if l.armed || l.closing || l.full {
                continue;
            }
            if fd_freed {
                l.retry_at = None; // a descriptor just came free: try now
            }
            match l.retry_at {
                Some(t) if t > now => {
                    next = Some(next.map_or(t, |n: Instant| n.min(t)));
                }
                _ => {
                    l.retry_at = None;
                    l.armed = true;
                    l.cancel_sent = false;
                    driver.arm_accept(id, l.socket.as_raw_fd(), l.shared);
                }
            }
        }
        next
    }
}

/// Most connections taken from a closing listener's queue (its backlog is
/// the kernel's bound; this one keeps a flood from holding the thread).
const SWEEP_MAX: usize = 4096;

/// Accept what `socket` (non-blocking, as every listener is) has queued,
/// into `out`, until the queue is empty or an accept fails.
fn sweep_queue(socket: &OwnedFd, out: &mut Vec<OwnedFd>) {
    use rustix::net::{accept_with, SocketFlags};
    while out.len() < SWEEP_MAX {
        match accept_with(socket, SocketFlags::NONBLOCK | SocketFlags::CLOEXEC) {
            Ok(fd) => out.push(fd),
            Err(rustix::io::Errno::INTR) => {}
            Err(rustix::io::Errno::AGAIN) => return,
            Err(e) => {
                log::debug!("netring: accepting a closing listener's queue stopped: {e}");
                return;
            }
        }
    }
}
