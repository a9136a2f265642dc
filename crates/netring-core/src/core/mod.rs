//! One IO thread's connection table and the state machine that drives it.
//!
//! `ThreadCore` is touched only by its IO thread. It turns driver
//! completions and mailbox commands into connection state and queued events,
//! and `settle` turns connection state back into driver operations: arm a
//! recv, send the queue, cancel, close. Operations requested by Python during
//! a dispatch (write, close, pause...) change state and mark the connection
//! dirty; nothing reaches the kernel until the batch is over, so all writes
//! of one batch go out in one submission with no wake-up.

use std::collections::HashMap;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use socket2::SockRef;

use crate::config::ConnOptions;
use crate::conn::sendq::BufCache;
use crate::conn::slab::GenSlab;
use crate::conn::{Conn, ConnId, State};
use crate::driver::Driver;
use crate::mailbox::Cmd;
use crate::shared::Shared;
use crate::stats::Stats;
use crate::timer::{Due, Timers};

mod active;
mod complete;
mod connect;
mod layered;
mod listen;
mod ops;
mod queues;
mod settle;
mod timers;
mod trim;
mod udp;

pub(crate) use active::{hosted_attach, hosted_detach, hosted_turn, with_active, ActiveGuard};
use listen::Listener;
pub(crate) use queues::{Cursor, Ev, Queues};

/// Longest a gracefully closed connection reads and discards the peer's
/// input while waiting for its EOF (lingering close) before closing anyway.
pub const LINGER_MAX: Duration = Duration::from_secs(2);

/// The connections, listeners and pending events of one IO thread.
pub struct ThreadCore {
    /// The loop's clock, read once per wait (tests inject their own time).
    pub(crate) now: Instant,
    pub(crate) engine: Arc<Shared>,
    pub(crate) thread: u16,
    conns: GenSlab<Conn>,
    /// What the next dispatch delivers and what it leaves to clean up.
    pub(crate) q: Queues,
    dirty: Vec<usize>,
    listeners: HashMap<usize, Listener>,
    pub(crate) shutdown_deadline: Option<Instant>,
    cache: BufCache,
    pub(crate) timers: Timers,
    /// UDP endpoints (`udp.rs`).
    pub(crate) udp: crate::udp::UdpTable,
    /// A descriptor was closed this turn: accepts backing off after
    /// EMFILE may retry at once.
    fd_freed: bool,
    /// Connections paused because the engine is over `max_buffer_memory`.
    mem_paused: Vec<ConnId>,
    /// Layered connections the protocol does not see yet, by slot.
    unready: HashMap<u32, layered::Unready>,
    /// A `TrimSpares` timer is pending.
    trim_scheduled: bool,
    /// It fired: the loop runs `trim` next.
    trim_due: bool,
}

impl Drop for ThreadCore {
    fn drop(&mut self) {
        // NOTE: connections still open when the thread ends: bytes in their
        // queues may be read by a zero-copy send in flight or not yet
        // notified. They go through the cache's holding, whose drop leaks
        // what is still owed instead of freeing it.
        if !self.cache.zerocopy_active() {
            return;
        }
        for id in self.conns.ids() {
            let Some(conn) = self.conns.get_mut(id) else {
                continue;
            };
            let held = self.cache.hold_for(id.index, id.generation);
            conn.sendq.unpin();
            conn.sendq.clear(&mut self.cache);
            if held {
                self.cache.hold_none();
            }
        }
    }
}

impl ThreadCore {
    pub(crate) fn new(engine: Arc<Shared>, thread: u16, now: Instant) -> Self {
        ThreadCore {
            now,
            engine,
            thread,
            conns: GenSlab::new(thread),
            q: Queues::default(),
            dirty: Vec::new(),
            listeners: HashMap::new(),
            shutdown_deadline: None,
            cache: BufCache::default(),
            timers: Timers::default(),
            udp: crate::udp::UdpTable::new(thread),
            fd_freed: false,
            mem_paused: Vec::new(),
            unready: HashMap::new(),
            trim_scheduled: false,
            trim_due: false,
        }
    }

    fn stats(&self) -> &Stats {
        &self.engine.stats
    }

    /// The live connection named by `id`, if it is still the same one.
    pub(crate) fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id)
    }

    /// A connection and the dispatch's retired buffers, borrowed together.
    pub(crate) fn conn_and_retired(
        &mut self,
        id: ConnId,
    ) -> Option<(&mut Conn, &mut Vec<Vec<u8>>, &mut queues::Built)> {
        let conn = self.conns.get_mut(id)?;
        Some((conn, &mut self.q.retired, &mut self.q.built))
    }

    fn mark_dirty(dirty: &mut Vec<usize>, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            dirty.push(conn.id.index as usize);
        }
    }

    pub(crate) fn touch(&mut self, id: ConnId) -> Option<&mut Conn> {
        let conn = self.conns.get_mut(id)?;
        Self::mark_dirty(&mut self.dirty, conn);
        Some(conn)
    }

    /// Connections in the slab.
    #[cfg(test)]
    pub(crate) fn conn_count(&self) -> usize {
        self.conns.len()
    }

    /// Whether `ev` is still about a live, open connection or endpoint
    /// (events that open or close one, timers and received bytes always
    /// are: the cursor checks the connection as it cuts).
    pub(crate) fn is_current(&mut self, ev: &Ev) -> bool {
        match *ev {
            Ev::Eof { conn }
            | Ev::IdleTimeout { conn }
            | Ev::PauseWriting { conn }
            | Ev::ResumeWriting { conn }
            | Ev::FrameError { conn, .. } => {
                self.conn(conn).is_some_and(|c| c.state == State::Open)
            }
            // Closing flushes what was queued: its files' ends still count.
            Ev::FileSent { conn } => self.conn(conn).is_some(),
            Ev::Datagram { ep, .. }
            | Ev::DatagramTruncated { ep, .. }
            | Ev::DatagramError { ep, .. }
            | Ev::EndpointPauseWriting { ep }
            | Ev::EndpointResumeWriting { ep } => self.udp_is_open(ep),
            Ev::Opened { .. }
            | Ev::Data { .. }
            | Ev::Held { .. }
            | Ev::Timer { .. }
            | Ev::Connected { .. }
            | Ev::ConnectFailed { .. }
            | Ev::Closed { .. }
            | Ev::EndpointOpened { .. }
            | Ev::EndpointClosed { .. } => true,
        }
    }

    /// Whether events wait for dispatch.
    pub(crate) fn has_events(&self) -> bool {
        self.q.has_events()
    }

    /// True when the thread holds nothing: no connection, listener or event.
    pub(crate) fn is_empty(&self) -> bool {
        self.conns.is_empty()
            && self.udp.is_empty()
            && self.listeners.is_empty()
            && !self.q.has_events()
    }
    // ---- mailbox ------------------------------------------------------------

    pub(crate) fn apply<D: Driver>(&mut self, cmd: Cmd, driver: &mut D) {
        match cmd {
            Cmd::Listen {
                listener,
                socket,
                options,
                counts,
                shared,
                ..
            } => {
                if self.shutdown_deadline.is_some() {
                    return; // dropped: the socket closes
                }
                driver.arm_accept(listener, socket.as_raw_fd(), shared);
                let mut l = Listener::new(socket, options, counts);
                l.shared = shared;
                self.listeners.insert(listener, l);
            }
            Cmd::Unlisten { listener, done } => self.unlisten(listener, Some(done), driver),
            Cmd::CloseListener { listener, deadline } => {
                self.close_listener(listener, deadline, driver)
            }
            Cmd::Connect {
                token,
                socket,
                addr,
                options,
                deadline,
            } => self.connect(token, socket, addr, &options, deadline, driver),
            Cmd::Adopt {
                listener,
                fd,
                options,
                counted,
            } => self.adopt(listener, fd, &options, counted),
            Cmd::Wake => {}
            Cmd::Write { conn, data } => {
                if let Some(c) = self.conn(conn) {
                    c.shared.mailbox_sub(data.len());
                    c.shared.pending_sub();
                }
                self.write_vec(conn, data);
            }
            Cmd::FileCached { conn } => {
                if let Some(r) = self.touch(conn).and_then(|c| c.rare.as_mut()) {
                    r.prefetching = false;
                }
            }
            Cmd::SendFile {
                conn,
                fd,
                offset,
                len,
            } => {
                if let Some(c) = self.conn(conn) {
                    c.shared.pending_sub();
                }
                self.send_file(conn, fd, offset, len, true);
            }
            Cmd::WriteShared { conn, data } => {
                let len = data.as_bytes().len();
                if let Some(c) = self.conn(conn) {
                    c.shared.mailbox_sub(len);
                    c.shared.pending_sub();
                }
                self.write_with(conn, len, |q, c| q.push_shared(data, c));
            }
            Cmd::Close { conn } => {
                if let Some(c) = self.conn(conn) {
                    c.shared.pending_sub();
                }
                self.close(conn)
            }
            Cmd::Abort { conn } => self.abort(conn),
            Cmd::WriteEof { conn } => {
                if let Some(c) = self.conn(conn) {
                    c.shared.pending_sub();
                }
                self.write_eof(conn)
            }
            Cmd::SetReading { conn, paused } => {
                if let Some(c) = self.conn(conn) {
                    c.shared.pending_sub();
                }
                self.set_reading(conn, paused)
            }
            Cmd::SetWriteLimits { conn, high, low } => self.set_write_limits(conn, high, low),
            Cmd::SetFraming { conn, framing } => self.set_framing(conn, framing),
            Cmd::SetIdleTimeout { conn, timeout } => self.set_idle_timeout(conn, timeout),
            Cmd::AddTimer { id, at, interval } => self.timers.add_user(id, at, interval),
            Cmd::CancelTimer { id } => self.timers.cancel_user(id),
            Cmd::Shutdown { deadline } => self.begin_shutdown(deadline, driver),
            Cmd::UdpOpen {
                token,
                socket,
                max_send_queue,
            } => self.udp_open(token, socket, max_send_queue),
            Cmd::UdpSend { ep, data, addr } => {
                if let Some(shared) = self.udp_shared(ep) {
                    shared.mailbox_sub(data.len());
                    shared.pending_sub();
                }
                self.udp_send_vec(ep, data, addr, true);
            }
            Cmd::UdpClose { ep } => {
                if let Some(shared) = self.udp_shared(ep) {
                    shared.pending_sub();
                }
                self.udp_close(ep)
            }
            Cmd::UdpAbort { ep } => self.udp_abort(ep),
            Cmd::UdpSetReading { ep, paused } => self.udp_set_reading(ep, paused),
            Cmd::UdpSetWriteLimits { ep, high, low } => self.udp_set_write_limits(ep, high, low),
        }
    }

    fn begin_shutdown<D: Driver>(&mut self, deadline: Instant, driver: &mut D) {
        self.shutdown_deadline = Some(deadline);
        let ids: Vec<usize> = self.listeners.keys().copied().collect();
        for l in ids {
            self.unlisten(l, None, driver);
        }
        let conns: Vec<ConnId> = self.conns.ids();
        for id in conns {
            self.close(id);
        }
        self.udp_close_all();
    }

    /// Abort whatever is still closing once the shutdown deadline passed.
    pub(crate) fn enforce_deadline(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some_and(|d| now >= d) {
            let conns: Vec<ConnId> = self.conns.ids();
            for id in conns {
                self.abort(id);
            }
            self.udp_abort_all();
        }
    }

    /// Insert a connection into the slab; returns its id.
    fn insert_conn(&mut self, fd: OwnedFd, options: &ConnOptions) -> ConnId {
        if let Some(ka) = &options.keepalive {
            if let Err(e) = ka.apply(&SockRef::from(&fd)) {
                log::warn!("netring: could not set TCP keepalive: {e}");
            }
        }
        let now = self.now;
        let id = self
            .conns
            .insert_with(|id| Conn::new(id, fd, options.framing.clone(), now));
        let conn = self.conns.get_mut(id).expect("just inserted");
        if !conn.decoder.is_raw() {
            // (Raw has nothing to build: no Arc traffic per accepted connection.)
            conn.decoder.set_alloc(self.engine.packet_alloc.clone());
        }
        conn.max_write_buffer = options.max_write_buffer;
        conn.frame_timeout = options.frame_timeout;
        if let Some(t) = options.idle_timeout {
            conn.idle_timeout = Some(t);
            self.timers.schedule(conn.last_activity + t, Due::Idle(id));
        }
        id
    }

    /// Close the connections whose `FrameError` was just delivered.
    pub(crate) fn close_after_frame_errors(&mut self) {
        for id in std::mem::take(&mut self.q.close_after) {
            self.close(id);
        }
    }
}
