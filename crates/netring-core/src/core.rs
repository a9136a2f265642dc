//! One IO thread's connection table and the state machine that drives it.
//!
//! `ThreadCore` is touched only by its IO thread. It turns driver
//! completions and mailbox commands into connection state and queued events,
//! and `settle` turns connection state back into driver operations: arm a
//! recv, send the queue, cancel, close. Operations requested by Python during
//! a dispatch (write, close, pause...) change state and mark the connection
//! dirty; nothing reaches the kernel until the batch is over, so all writes
//! of one batch go out in one submission with no wake-up.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use slab::Slab;
use socket2::SockRef;

use crate::config::ConnOptions;
use crate::conn::sendq::{BufCache, SendQueue};
use crate::conn::{Conn, ConnError, ConnId, ConnShared, State};
use crate::driver::{Chunk, Completion, Driver, RecvResult};
use crate::engine::Shared;
use crate::framing::Framing;
use crate::limits::{Admit, ListenerCounts};
use crate::mailbox::Cmd;
use crate::stats::Stats;
use crate::timer::{Due, Timers};

/// Longest a gracefully closed connection reads and discards the peer's
/// input while waiting for its EOF (lingering close) before closing anyway.
pub const LINGER_MAX: Duration = Duration::from_secs(2);
/// First pause after accept fails for lack of descriptors or memory.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
/// Longest pause between accept attempts while descriptors are exhausted.
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);
/// An exhaustion episode ends after this long with no failed accept.
const EPISODE_QUIET: Duration = Duration::from_secs(1);
/// How often a thread frees the spare write buffers, receive buffers and
/// queue space it did not use.
const SPARES_TRIM_INTERVAL: Duration = Duration::from_secs(1);
/// Freeing at least this much also hands free heap pages back to the kernel.
pub(crate) const RELEASE_MIN_BYTES: usize = 256 << 10;
/// Entries a per-thread queue keeps when it is shrunk after a burst.
pub(crate) const SCRATCH_KEEP: usize = 256;

/// Hand the allocator's free pages back to the kernel (glibc keeps freed
/// small chunks resident otherwise); elsewhere a no-op.
pub(crate) fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free memory of the allocator's own
    // arenas; it takes their locks and touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// An event waiting for dispatch (internal form; see `event::Event`).
pub(crate) enum Ev {
    Opened {
        conn: ConnId,
        listener: usize,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        shared: Arc<ConnShared>,
    },
    Data {
        conn: ConnId,
        chunk: Chunk,
    },
    Held {
        conn: ConnId,
        data: Vec<u8>,
    },
    Eof {
        conn: ConnId,
    },
    Timer {
        id: u64,
    },
    Connected {
        conn: ConnId,
        token: u64,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        shared: Arc<ConnShared>,
    },
    ConnectFailed {
        token: u64,
        error: io::Error,
    },
    IdleTimeout {
        conn: ConnId,
    },
    PauseWriting {
        conn: ConnId,
    },
    ResumeWriting {
        conn: ConnId,
    },
    Closed {
        conn: ConnId,
        error: Option<ConnError>,
        /// Released once `connection_lost` has run (after the dispatch).
        counted: Counted,
    },
    FrameError {
        conn: ConnId,
        error: crate::framing::FrameError,
    },
    EndpointOpened {
        ep: ConnId,
        token: u64,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
        shared: Arc<ConnShared>,
    },
    Datagram {
        ep: ConnId,
        chunk: Chunk,
        addr: Option<SocketAddr>,
    },
    DatagramTruncated {
        ep: ConnId,
        addr: Option<SocketAddr>,
        size: usize,
    },
    DatagramError {
        ep: ConnId,
        error: io::Error,
    },
    EndpointPauseWriting {
        ep: ConnId,
    },
    EndpointResumeWriting {
        ep: ConnId,
    },
    EndpointClosed {
        ep: ConnId,
        error: Option<io::Error>,
    },
}

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

/// A received chunk being cut into packets across `Batch::next` calls.
#[derive(Clone, Copy)]
pub(crate) struct Cursor {
    pub(crate) conn: ConnId,
    /// Start of the chunk; valid until the end of the dispatch (a ring
    /// buffer or a retired held buffer).
    pub(crate) ptr: *const u8,
    pub(crate) len: usize,
    pub(crate) offset: usize,
}

struct Listener {
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
    held: VecDeque<(OwnedFd, Option<std::net::IpAddr>)>,
}

/// A connection admitted under a listener's limits: the counts it is part
/// of and its peer IP (to release when it closes).
pub(crate) type Counted = Option<(Arc<ListenerCounts>, Option<std::net::IpAddr>)>;

/// The connections, listeners and pending events of one IO thread.
pub struct ThreadCore {
    pub(crate) engine: Arc<Shared>,
    pub(crate) thread: u16,
    conns: Slab<Conn>,
    generations: Vec<u32>,
    pub(crate) events: VecDeque<Ev>,
    /// `pause_writing` notices: delivered before any other pending event,
    /// so a protocol can stop its producers before they write more (asyncio
    /// calls `pause_writing` inside `write()`).
    pub(crate) urgent: VecDeque<Ev>,
    dirty: Vec<usize>,
    /// Receive buffers handed out in this batch; released after dispatch.
    pub(crate) chunks_out: Vec<u16>,
    /// Held data delivered in this batch; dropped after dispatch.
    pub(crate) retired: Vec<Vec<u8>>,
    listeners: HashMap<usize, Listener>,
    pub(crate) shutdown_deadline: Option<Instant>,
    cache: BufCache,
    /// The chunk being framed during a dispatch.
    pub(crate) cursor: Option<Cursor>,
    pub(crate) timers: Timers,
    /// UDP endpoints (`udp.rs`).
    pub(crate) udp: crate::udp::UdpTable,
    /// A descriptor was closed this turn: accepts backing off after
    /// EMFILE may retry at once.
    fd_freed: bool,
    /// Places under listener limits whose `Closed` was delivered in this
    /// dispatch: freed after it, so that a new connection's
    /// `connection_made` never runs before the old one's `connection_lost`.
    pub(crate) releases: Vec<(Arc<ListenerCounts>, Option<std::net::IpAddr>)>,
    /// Connections paused because the engine is over `max_buffer_memory`.
    mem_paused: Vec<ConnId>,
    /// Connections whose `FrameError` was just delivered: closed (flushing
    /// what the handler wrote in answer) before the next event.
    pub(crate) close_after: Vec<ConnId>,
    /// A `TrimSpares` timer is pending.
    trim_scheduled: bool,
    /// It fired: the loop runs `trim` next.
    trim_due: bool,
}

impl ThreadCore {
    pub(crate) fn new(engine: Arc<Shared>, thread: u16) -> Self {
        ThreadCore {
            engine,
            thread,
            conns: Slab::new(),
            generations: Vec::new(),
            events: VecDeque::new(),
            urgent: VecDeque::new(),
            dirty: Vec::new(),
            chunks_out: Vec::new(),
            retired: Vec::new(),
            listeners: HashMap::new(),
            shutdown_deadline: None,
            cache: BufCache::default(),
            cursor: None,
            timers: Timers::default(),
            udp: Default::default(),
            fd_freed: false,
            releases: Vec::new(),
            mem_paused: Vec::new(),
            close_after: Vec::new(),
            trim_scheduled: false,
            trim_due: false,
        }
    }

    fn stats(&self) -> &Stats {
        &self.engine.stats
    }

    /// The live connection named by `id`, if it is still the same one.
    pub(crate) fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(id.index as usize).filter(|c| c.id == id)
    }

    /// A connection and the dispatch's retired buffers, borrowed together.
    pub(crate) fn conn_and_retired(
        &mut self,
        id: ConnId,
    ) -> Option<(&mut Conn, &mut Vec<Vec<u8>>)> {
        let conn = self
            .conns
            .get_mut(id.index as usize)
            .filter(|c| c.id == id)?;
        Some((conn, &mut self.retired))
    }

    fn mark_dirty(dirty: &mut Vec<usize>, conn: &mut Conn) {
        if !conn.dirty {
            conn.dirty = true;
            dirty.push(conn.id.index as usize);
        }
    }

    pub(crate) fn touch(&mut self, id: ConnId) -> Option<&mut Conn> {
        let conn = self
            .conns
            .get_mut(id.index as usize)
            .filter(|c| c.id == id)?;
        Self::mark_dirty(&mut self.dirty, conn);
        Some(conn)
    }

    /// True when the thread holds nothing: no connection, listener or event.
    pub(crate) fn is_empty(&self) -> bool {
        self.conns.is_empty()
            && self.udp.is_empty()
            && self.listeners.is_empty()
            && self.events.is_empty()
            && self.urgent.is_empty()
    }

    // ---- operations requested by the user (owner thread) -----------------

    /// Queue `data` on `id`. Returns false if the connection is gone or
    /// closing (the bytes are dropped, as asyncio does after `close()`).
    pub fn write(&mut self, id: ConnId, data: &[u8]) -> bool {
        self.write_with(id, data.len(), |q, c| q.push_slice(data, c))
    }

    /// Queue the concatenation of `parts` (e.g. a header and a payload).
    pub fn write_parts(&mut self, id: ConnId, parts: &[&[u8]]) -> bool {
        let len = parts.iter().map(|p| p.len()).sum();
        self.write_with(id, len, |q, c| q.push_parts(parts, c))
    }

    /// Cut `id`'s stream by `framing` from the next byte on.
    pub fn set_framing(&mut self, id: ConnId, framing: Framing) {
        let Some(conn) = self.conn(id) else { return };
        conn.decoder.set_framing(framing);
        // Bytes buffered under the old rule may already hold packets under
        // the new one: unless this connection's chunk is being cut right
        // now, queue an empty read so they are re-framed at once.
        if self.cursor.map(|c| c.conn) != Some(id) {
            self.events.push_front(Ev::Held {
                conn: id,
                data: Vec::new(),
            });
        }
    }

    /// Report `id` idle after `timeout` with nothing received (`None`: off).
    pub fn set_idle_timeout(&mut self, id: ConnId, timeout: Option<Duration>) {
        let now = Instant::now();
        let Some(conn) = self.conn(id) else { return };
        conn.idle_timeout = timeout;
        conn.last_activity = now;
        if let Some(t) = timeout {
            self.timers.schedule(now + t, Due::Idle(id));
        }
    }

    /// A packet of `id` is in progress at the end of a read: start its
    /// `frame_timeout` clock if it is not running; none in progress: stop it.
    pub(crate) fn track_packet(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(id.index as usize).filter(|c| c.id == id) else {
            return;
        };
        let Some(timeout) = conn.frame_timeout else {
            return;
        };
        if !conn.decoder.in_packet() {
            conn.packet_started = None;
        } else if conn.packet_started.is_none() {
            let now = Instant::now();
            conn.packet_started = Some(now);
            self.timers
                .schedule(now + timeout, Due::FrameTimeout(id, now));
        }
    }

    /// Whether the `TrimSpares` timer fired since the last call.
    pub(crate) fn take_trim_due(&mut self) -> bool {
        std::mem::take(&mut self.trim_due)
    }

    /// Free what went unused for a trim interval: spare write buffers, the
    /// driver's spare receive buffers, and the event queues a burst
    /// (thousands of accepts in one wait) grew, once empty again. Returns
    /// the bytes freed.
    pub(crate) fn trim<D: Driver>(&mut self, driver: &mut D) -> usize {
        self.cache.trim()
            + driver.trim_buffers()
            + shrink_deque(&mut self.events)
            + shrink_deque(&mut self.urgent)
            + shrink_vec(&mut self.chunks_out)
    }

    /// While spare write buffers are kept (or `others`: receive buffers, or
    /// queues a burst grew), check every `SPARES_TRIM_INTERVAL` for ones
    /// that went unused: an idle thread wakes to give them back.
    pub(crate) fn schedule_trim(&mut self, now: Instant, others: bool) {
        let grown = self.events.capacity() > SCRATCH_KEEP
            || self.urgent.capacity() > SCRATCH_KEEP
            || self.chunks_out.capacity() > SCRATCH_KEEP;
        if !self.trim_scheduled && (others || grown || self.cache.has_spares()) {
            self.trim_scheduled = true;
            self.timers
                .schedule(now + SPARES_TRIM_INTERVAL, Due::TrimSpares);
        }
    }

    /// Turn every deadline due by `now` into events.
    pub(crate) fn fire_timers(&mut self, now: Instant) {
        while let Some(due) = self.timers.pop_due(now) {
            match due {
                Due::User(id) => self.events.push_back(Ev::Timer { id }),
                Due::TrimSpares => {
                    self.trim_scheduled = false;
                    self.trim_due = true;
                }
                Due::Idle(id) => {
                    let Some(conn) = self.conns.get_mut(id.index as usize).filter(|c| c.id == id)
                    else {
                        continue;
                    };
                    let Some(t) = conn.idle_timeout else { continue };
                    if conn.state != State::Open {
                        continue;
                    }
                    let idle_at = conn.last_activity + t;
                    if idle_at <= now {
                        // Report, and again one period later if still idle.
                        conn.last_activity = now;
                        self.timers.schedule(now + t, Due::Idle(id));
                        self.events.push_back(Ev::IdleTimeout { conn: id });
                    } else {
                        self.timers.schedule(idle_at, Due::Idle(id));
                    }
                }
                Due::Abort(id) => self.abort(id),
                Due::LingerEnd(id) => {
                    if let Some(conn) = self.touch(id) {
                        conn.linger_done = true;
                    }
                }
                Due::FrameTimeout(id, started) => {
                    let Some(conn) = self.conns.get_mut(id.index as usize).filter(|c| c.id == id)
                    else {
                        continue;
                    };
                    if conn.packet_started != Some(started) || conn.state != State::Open {
                        continue; // that packet finished (or the connection is closing)
                    }
                    let Some(timeout) = conn.frame_timeout else {
                        continue;
                    };
                    if conn.read_paused {
                        // The user stopped reading: the peer is not the slow one.
                        conn.packet_started = Some(now);
                        self.timers
                            .schedule(now + timeout, Due::FrameTimeout(id, now));
                        continue;
                    }
                    conn.begin_abort(
                        Some(ConnError::Limit(crate::conn::LimitError::FrameTimeout {
                            timeout,
                        })),
                        false,
                    );
                    Self::mark_dirty(&mut self.dirty, conn);
                }
                Due::ConnectTimeout(id) => {
                    if let Some(conn) = self.touch(id) {
                        if let Some(attempt) = conn.connecting.as_mut() {
                            attempt.timed_out = true;
                        }
                    }
                }
            }
        }
    }

    pub(crate) fn write_vec(&mut self, id: ConnId, data: Vec<u8>) -> bool {
        self.write_with(id, data.len(), |q, c| q.push_vec(data, c))
    }

    fn write_with(
        &mut self,
        id: ConnId,
        len: usize,
        push: impl FnOnce(&mut SendQueue, &mut BufCache),
    ) -> bool {
        self.write_notify(id, len, push, true) != Written::Dropped
    }

    /// Queue bytes; when the queue crosses the high-water mark, either queue
    /// a `PauseWriting` event (`event`) or return [`Written::CrossedHigh`]
    /// for the caller to call `pause_writing` itself, inside the write, as
    /// asyncio does.
    pub(crate) fn write_notify(
        &mut self,
        id: ConnId,
        len: usize,
        push: impl FnOnce(&mut SendQueue, &mut BufCache),
        event: bool,
    ) -> Written {
        let Some(conn) = self.conns.get_mut(id.index as usize).filter(|c| c.id == id) else {
            return Written::Dropped;
        };
        if conn.state != State::Open || conn.eof_requested {
            return Written::Dropped;
        }
        if len == 0 {
            return Written::Queued;
        }
        push(&mut conn.sendq, &mut self.cache);
        let queued = conn.sendq.len();
        conn.shared.set_queued(queued);
        if queued > conn.max_write_buffer {
            let limit = conn.max_write_buffer;
            let peer = SockRef::from(&conn.fd)
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket());
            log::warn!(
                "netring: aborting the connection from {}: {queued} bytes queued, over max_write_buffer ({limit}); the peer is not reading",
                peer.map_or_else(|| "?".to_string(), |p| p.to_string())
            );
            conn.begin_abort(
                Some(ConnError::Limit(crate::conn::LimitError::WriteBuffer {
                    limit,
                })),
                true,
            );
            Self::mark_dirty(&mut self.dirty, conn);
            return Written::Dropped;
        }
        let pause = !conn.writing_paused && queued > conn.high_water;
        if pause {
            conn.writing_paused = true;
        }
        Self::mark_dirty(&mut self.dirty, conn);
        if !pause {
            Written::Queued
        } else if event {
            self.urgent.push_back(Ev::PauseWriting { conn: id });
            Written::Queued
        } else {
            Written::CrossedHigh
        }
    }

    /// Flush what is queued, then close.
    pub fn close(&mut self, id: ConnId) {
        if let Some(conn) = self.touch(id) {
            conn.begin_close();
        }
    }

    /// Drop the queue and reset the connection.
    pub fn abort(&mut self, id: ConnId) {
        if let Some(conn) = self.touch(id) {
            conn.begin_abort(None, true);
        }
    }

    /// Close after an error of the user's handler; `connection_lost` gets
    /// `None` from the engine (the bindings pass the exception themselves).
    pub fn abort_quietly(&mut self, id: ConnId) {
        if let Some(conn) = self.touch(id) {
            conn.begin_abort(None, false);
        }
    }

    /// Flush, then shut down the sending side.
    pub fn write_eof(&mut self, id: ConnId) {
        if let Some(conn) = self.touch(id) {
            if conn.state == State::Open {
                conn.eof_requested = true;
            }
        }
    }

    /// Pause or resume delivery of received data.
    pub fn set_reading(&mut self, id: ConnId, paused: bool) {
        let Some(conn) = self.touch(id) else { return };
        if conn.read_paused == paused {
            return;
        }
        conn.read_paused = paused;
        if !paused {
            // Held data is older than anything still queued: deliver it first.
            let mut held = conn
                .rare
                .as_mut()
                .map(|r| std::mem::take(&mut r.held))
                .unwrap_or_default();
            let eof = std::mem::take(&mut conn.eof_held);
            if held.is_empty() && conn.decoder.in_packet() {
                // Re-frame what the decoder buffered (e.g. after a rule change).
                held.push(Vec::new());
            }
            if eof {
                self.events.push_front(Ev::Eof { conn: id });
            }
            for data in held.into_iter().rev() {
                self.events.push_front(Ev::Held { conn: id, data });
            }
        }
    }

    /// Whether reading is paused on `id` (false if it is gone).
    pub fn is_reading(&mut self, id: ConnId) -> bool {
        self.conn(id)
            .is_some_and(|c| !c.read_paused && c.state == State::Open)
    }

    /// Change the water marks; may pause or resume writing at once.
    pub fn set_write_limits(&mut self, id: ConnId, high: usize, low: usize) {
        let Some(conn) = self.touch(id) else { return };
        conn.high_water = high;
        conn.low_water = low;
        let queued = conn.sendq.len();
        if !conn.writing_paused && queued > high {
            conn.writing_paused = true;
            self.urgent.push_back(Ev::PauseWriting { conn: id });
        } else if conn.writing_paused && queued <= low {
            conn.writing_paused = false;
            self.events.push_back(Ev::ResumeWriting { conn: id });
        }
    }

    /// Bytes queued on `id` and not yet taken by the kernel.
    pub fn write_buffer_size(&mut self, id: ConnId) -> usize {
        self.conn(id).map_or(0, |c| c.sendq.len())
    }

    // ---- mailbox ------------------------------------------------------------

    pub(crate) fn apply<D: Driver>(&mut self, cmd: Cmd, driver: &mut D) {
        match cmd {
            Cmd::Listen {
                listener,
                socket,
                options,
                counts,
                ..
            } => {
                if self.shutdown_deadline.is_some() {
                    return; // dropped: the socket closes
                }
                driver.arm_accept(listener, socket.as_raw_fd());
                self.listeners.insert(
                    listener,
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
                        held: VecDeque::new(),
                    },
                );
            }
            Cmd::Unlisten { listener } => self.unlisten(listener, driver),
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

    fn unlisten<D: Driver>(&mut self, listener: usize, driver: &mut D) {
        let Some(l) = self.listeners.get_mut(&listener) else {
            return;
        };
        if l.closing {
            return;
        }
        l.closing = true;
        if l.armed {
            driver.cancel_accept(listener, l.socket.as_raw_fd());
        } else {
            self.listeners.remove(&listener);
        }
    }

    /// Stop accepting on `listener` and close its connections gracefully;
    /// abort those still open at `deadline`. Other listeners' connections
    /// (a shared pool) are untouched.
    fn close_listener<D: Driver>(&mut self, listener: usize, deadline: Instant, driver: &mut D) {
        self.unlisten(listener, driver);
        let conns: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.listener as usize == listener)
            .map(|(_, c)| c.id)
            .collect();
        for id in conns {
            self.close(id);
            self.timers.schedule(deadline, Due::Abort(id));
        }
    }

    fn begin_shutdown<D: Driver>(&mut self, deadline: Instant, driver: &mut D) {
        self.shutdown_deadline = Some(deadline);
        let ids: Vec<usize> = self.listeners.keys().copied().collect();
        for l in ids {
            self.unlisten(l, driver);
        }
        let conns: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
        for id in conns {
            self.close(id);
        }
        self.udp_close_all();
    }

    /// Abort whatever is still closing once the shutdown deadline passed.
    pub(crate) fn enforce_deadline(&mut self, now: Instant) {
        if self.shutdown_deadline.is_some_and(|d| now >= d) {
            let conns: Vec<ConnId> = self.conns.iter().map(|(_, c)| c.id).collect();
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
        let entry = self.conns.vacant_entry();
        let index = entry.key();
        if self.generations.len() <= index {
            self.generations.resize(index + 1, 0);
        }
        let id = ConnId {
            thread: self.thread,
            index: index as u32,
            generation: self.generations[index],
        };
        let conn = entry.insert(Conn::new(id, fd, options.framing.clone()));
        conn.max_write_buffer = options.max_write_buffer;
        conn.frame_timeout = options.frame_timeout;
        if let Some(t) = options.idle_timeout {
            conn.idle_timeout = Some(t);
            self.timers.schedule(conn.last_activity + t, Due::Idle(id));
        }
        id
    }

    fn connect<D: Driver>(
        &mut self,
        token: u64,
        socket: OwnedFd,
        addr: SocketAddr,
        options: &ConnOptions,
        deadline: Option<Instant>,
        driver: &mut D,
    ) {
        if self.shutdown_deadline.is_some() {
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "the pool is closing");
            self.events.push_back(Ev::ConnectFailed { token, error });
            return;
        }
        let fd = socket.as_raw_fd();
        let id = self.insert_conn(socket, options);
        let conn = &mut self.conns[id.index as usize];
        let connecting = conn.connecting.insert(Box::new(crate::conn::Connecting {
            token,
            addr: addr.into(),
            timed_out: false,
            cancel_sent: false,
        }));
        driver.connect(id.index, fd, &connecting.addr);
        if let Some(at) = deadline {
            self.timers.schedule(at, Due::ConnectTimeout(id));
        }
    }

    fn connected<D: Driver>(&mut self, slot: u32, result: io::Result<()>, driver: &mut D) {
        let Some(conn) = self.conns.get_mut(slot as usize) else {
            return;
        };
        let Some(attempt) = conn.connecting.take() else {
            return;
        };
        Self::mark_dirty(&mut self.dirty, conn);
        let result = match result {
            Ok(()) if conn.state == State::Open => Ok(()),
            Ok(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the pool is closing",
            )),
            Err(_) if attempt.timed_out => Err(io::Error::from_raw_os_error(libc::ETIMEDOUT)),
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the pool is closing",
            )),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let sock = SockRef::from(&conn.fd);
                let _ = sock.set_tcp_nodelay(true);
                let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
                let local = sock.local_addr().ok().and_then(|a| a.as_socket());
                conn.last_activity = Instant::now();
                Stats::add(&self.engine.stats.connected, 1);
                let (id, shared) = (conn.id, conn.shared.clone());
                self.events.push_back(Ev::Connected {
                    conn: id,
                    token: attempt.token,
                    peer,
                    local,
                    shared,
                });
            }
            Err(error) => {
                conn.silent = true;
                conn.begin_abort(None, false);
                self.events.push_back(Ev::ConnectFailed {
                    token: attempt.token,
                    error,
                });
            }
        }
        let _ = driver;
    }

    fn adopt(&mut self, listener: usize, fd: OwnedFd, options: &ConnOptions, counted: Counted) {
        if self.shutdown_deadline.is_some() {
            if let Some((counts, ip)) = counted {
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
        let conn = &mut self.conns[id.index as usize];
        // NOTE: listener ids count up from 0; u32::MAX marks outbound.
        conn.listener = u32::try_from(listener).unwrap_or(u32::MAX);
        if counted.is_some() {
            conn.rare().counted = counted;
        }
        let shared = conn.shared.clone();
        Self::mark_dirty(&mut self.dirty, conn);
        Stats::add(&self.stats().accepted, 1);
        self.events.push_back(Ev::Opened {
            conn: id,
            listener,
            peer,
            local,
            shared,
        });
    }

    // ---- completions --------------------------------------------------------

    pub(crate) fn complete<D: Driver>(&mut self, c: Completion, driver: &mut D, now: Instant) {
        match c {
            Completion::Woken => {}
            c @ (Completion::RecvFrom { .. } | Completion::SentTo { .. }) => {
                self.udp_complete(c, driver)
            }
            Completion::Connected { slot, result } => self.connected(slot, result, driver),
            Completion::Accepted {
                listener,
                result,
                more,
            } => self.accepted(listener, result, more, now),
            Completion::Recv { slot, result, more } => {
                let Some(conn) = self.conns.get_mut(slot as usize) else {
                    if let RecvResult::Data(chunk) = result {
                        driver.release(chunk.bid);
                    }
                    return;
                };
                if !more {
                    conn.recv_armed = false;
                }
                Self::mark_dirty(&mut self.dirty, conn);
                match result {
                    RecvResult::Data(chunk) => {
                        conn.last_activity = now;
                        Stats::add(&self.engine.stats.bytes_in, chunk.len as u64);
                        self.chunks_out.push(chunk.bid);
                        if conn.state == State::Open && !conn.frame_failed {
                            self.events.push_back(Ev::Data {
                                conn: conn.id,
                                chunk,
                            });
                        } // closing: input after close() is discarded
                    }
                    RecvResult::Eof => {
                        if !conn.peer_eof {
                            conn.peer_eof = true;
                            self.events.push_back(Ev::Eof { conn: conn.id });
                        }
                    }
                    RecvResult::NoBuffers | RecvResult::Cancelled => {}
                    RecvResult::Err(e) => conn.begin_abort(Some(ConnError::Io(e)), false),
                }
            }
            Completion::Sent { slot, result } => {
                let Some(conn) = self.conns.get_mut(slot as usize) else {
                    return;
                };
                conn.send_inflight = false;
                Self::mark_dirty(&mut self.dirty, conn);
                match result {
                    Ok(n) => {
                        conn.sendq.advance(n, &mut self.cache);
                        if conn.sendq.is_empty() {
                            if let Some(state) = conn.send.take() {
                                self.cache.put_state(state);
                            }
                        }
                        Stats::add(&self.engine.stats.bytes_out, n as u64);
                        let queued = conn.sendq.len();
                        conn.shared.set_queued(queued);
                        if conn.writing_paused
                            && queued <= conn.low_water
                            && conn.state == State::Open
                        {
                            conn.writing_paused = false;
                            self.events.push_back(Ev::ResumeWriting { conn: conn.id });
                        }
                    }
                    Err(e) => {
                        conn.sendq.unpin();
                        if e.raw_os_error() != Some(libc::ECANCELED) {
                            conn.begin_abort(Some(ConnError::Io(e)), false);
                        } else {
                            conn.begin_abort(None, conn.reset_on_close);
                        }
                    }
                }
            }
        }
    }

    fn accepted(&mut self, listener: usize, result: io::Result<OwnedFd>, more: bool, now: Instant) {
        let Some(l) = self.listeners.get_mut(&listener) else {
            return;
        };
        if !more {
            l.armed = false;
            if l.closing {
                self.listeners.remove(&listener);
                return;
            }
        }
        match result {
            Ok(fd) => {
                // Retry quickly again, but end the episode (and log it) only
                // once accepts have gone a quiet second without failing:
                // near the limit, accepts alternate between working and
                // failing as descriptors come and go, and that is one
                // episode, not one per flip.
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

    /// Serve `fd` from `listener` if its limits allow, else hold or refuse it.
    fn admit(
        &mut self,
        listener: usize,
        fd: OwnedFd,
        ip: Option<std::net::IpAddr>,
        counts: Arc<ListenerCounts>,
    ) {
        match counts.try_admit(ip) {
            Admit::Yes => self.hand_out(listener, fd, Some((counts, ip))),
            Admit::OverIp => {
                Stats::add(&self.engine.stats.refused, 1);
                drop(fd); // accept-then-close: holding it would stall others
            }
            Admit::OverTotal => {
                if counts.overflow() == crate::config::Overflow::Close {
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
    fn hand_out(&mut self, listener: usize, fd: OwnedFd, counted: Counted) {
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

    /// Close the connections whose `FrameError` was just delivered.
    pub(crate) fn close_after_frame_errors(&mut self) {
        for id in std::mem::take(&mut self.close_after) {
            self.close(id);
        }
    }

    /// Free the places of connections whose `Closed` was just dispatched.
    pub(crate) fn release_dispatched(&mut self) {
        for (counts, ip) in std::mem::take(&mut self.releases) {
            self.release_count(&counts, ip);
        }
    }

    /// A counted connection is gone: free its place, and wake the
    /// listener's owner if it holds connections back.
    fn release_count(&mut self, counts: &ListenerCounts, ip: Option<std::net::IpAddr>) {
        if counts.release(ip) && counts.owner != self.thread {
            self.engine.mailboxes[usize::from(counts.owner)].push(Cmd::Wake);
        }
    }

    /// Serve held connections while there is room; start accepting again
    /// once none is held.
    fn drain_held(&mut self, listener: usize) {
        loop {
            let Some(l) = self.listeners.get_mut(&listener) else {
                return;
            };
            let Some(counts) = l.counts.clone() else {
                return;
            };
            if !counts.has_room() {
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
                    driver.arm_accept(id, l.socket.as_raw_fd());
                }
            }
        }
        next
    }

    // ---- settling -------------------------------------------------------------

    /// Account a connection's buffered bytes; over the engine's cap, a
    /// connection that holds some stops reading.
    fn account(&mut self, index: usize) {
        if !self.engine.memory.enabled() {
            return;
        }
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        let (old, now) = (conn.accounted, conn.buffered_bytes());
        conn.accounted = now;
        if old != now && self.engine.memory.update(old, now) {
            self.wake_all();
        }
        let Some(conn) = self.conns.get_mut(index) else {
            return;
        };
        let memory = &self.engine.memory;
        if now > 0 && !conn.mem_paused && conn.state == State::Open && memory.over_cap() {
            conn.mem_paused = true;
            memory.mark_over();
            self.mem_paused.push(conn.id);
        }
    }

    /// Wake every IO thread, this one included (paused connections may
    /// resume on their next turn).
    fn wake_all(&self) {
        for mb in &self.engine.mailboxes {
            mb.push(Cmd::Wake);
        }
    }

    /// Resume connections paused for memory once the total is low again.
    fn resume_for_memory(&mut self) {
        if self.mem_paused.is_empty() || !self.engine.memory.may_resume() {
            return;
        }
        for id in std::mem::take(&mut self.mem_paused) {
            if let Some(conn) = self.touch(id) {
                conn.mem_paused = false;
            }
        }
    }

    /// Turn the state of every dirty connection into driver operations.
    pub(crate) fn settle<D: Driver>(&mut self, driver: &mut D) {
        self.resume_for_memory();
        while let Some(index) = self.dirty.pop() {
            self.account(index);
            let Some(conn) = self.conns.get_mut(index) else {
                continue;
            };
            conn.dirty = false;
            let slot = index as u32;
            let fd = conn.fd.as_raw_fd();
            if let Some(attempt) = conn.connecting.as_mut() {
                let give_up = attempt.timed_out || conn.state != State::Open;
                if give_up && !attempt.cancel_sent {
                    attempt.cancel_sent = true;
                    driver.cancel_connect(slot, fd);
                }
            }
            if conn.state == State::Aborting {
                if conn.send_inflight && !conn.send_cancel_sent {
                    driver.cancel_send(slot, fd);
                    conn.send_cancel_sent = true;
                } else if !conn.send_inflight {
                    conn.sendq.clear(&mut self.cache);
                    conn.shared.set_queued(0);
                    if let Some(state) = conn.send.take() {
                        self.cache.put_state(state);
                    }
                }
            } else if !conn.send_inflight && !conn.sendq.is_empty() {
                let send = conn.send.get_or_insert_with(|| self.cache.get_state());
                conn.sendq.fill_iovecs(&mut send.iov);
                driver.send(slot, fd, send);
                conn.send_inflight = true;
                conn.send_cancel_sent = false;
            }
            if conn.eof_requested
                && !conn.eof_sent
                && conn.state == State::Open
                && conn.sendq.is_empty()
                && !conn.send_inflight
            {
                conn.eof_sent = true;
                let _ = rustix::net::shutdown(conn.fd.as_fd(), rustix::net::Shutdown::Write);
            }
            if conn.state == State::Closing
                && !conn.lingering
                && conn.sendq.is_empty()
                && !conn.send_inflight
                && conn.connecting.is_none()
            {
                // Flushed: half-close, report the close to the user, then
                // drain the peer's input until its EOF (or LINGER_MAX).
                conn.lingering = true;
                if !conn.eof_sent {
                    conn.eof_sent = true;
                    let _ = rustix::net::shutdown(conn.fd.as_fd(), rustix::net::Shutdown::Write);
                }
                if !conn.silent {
                    conn.silent = true;
                    Stats::add(&self.engine.stats.closed, 1);
                    self.events.push_back(Ev::Closed {
                        conn: conn.id,
                        error: conn.take_error(),
                        counted: conn.take_counted(),
                    });
                }
                if !conn.peer_eof {
                    self.timers
                        .schedule(Instant::now() + LINGER_MAX, Due::LingerEnd(conn.id));
                }
            }
            if conn.wants_recv() {
                if !conn.recv_armed {
                    driver.arm_recv(slot, fd);
                    conn.recv_armed = true;
                    conn.recv_cancel_sent = false;
                }
            } else if conn.recv_armed && !conn.recv_cancel_sent {
                driver.cancel_recv(slot, fd);
                conn.recv_cancel_sent = true;
            }
            if conn.finished() {
                self.finalize(index, driver);
            }
        }
    }

    fn finalize<D: Driver>(&mut self, index: usize, driver: &mut D) {
        let conn = self.conns.remove(index);
        if self.engine.memory.update(conn.accounted, 0) {
            self.wake_all();
        }
        self.generations[index] = self.generations[index].wrapping_add(1);
        driver.forget(index as u32, conn.fd.as_raw_fd());
        if conn.reset_on_close {
            let _ = SockRef::from(&conn.fd).set_linger(Some(Duration::ZERO));
        }
        conn.shared.set_queued(0);
        drop(conn.fd);
        self.fd_freed = true;
        let (error, counted) = conn.rare.map_or((None, None), |r| (r.error, r.counted));
        if conn.silent {
            if let Some((counts, ip)) = &counted {
                self.release_count(counts, *ip);
            }
        } else {
            Stats::add(&self.engine.stats.closed, 1);
            self.events.push_back(Ev::Closed {
                conn: conn.id,
                error,
                counted,
            });
        }
    }
}

/// Give back the capacity of an empty `v` beyond [`SCRATCH_KEEP`] entries;
/// returns the bytes freed.
pub(crate) fn shrink_vec<T>(v: &mut Vec<T>) -> usize {
    let before = v.capacity();
    if v.is_empty() && before > SCRATCH_KEEP {
        v.shrink_to(SCRATCH_KEEP);
    }
    (before - v.capacity()) * std::mem::size_of::<T>()
}

/// [`shrink_vec`] for a deque.
pub(crate) fn shrink_deque<T>(v: &mut VecDeque<T>) -> usize {
    let before = v.capacity();
    if v.is_empty() && before > SCRATCH_KEEP {
        v.shrink_to(SCRATCH_KEEP);
    }
    (before - v.capacity()) * std::mem::size_of::<T>()
}

#[cfg(test)]
mod shrink_tests {
    use super::*;

    #[test]
    fn queues_grown_by_a_burst_are_shrunk_only_when_empty() {
        let mut v: Vec<u64> = Vec::with_capacity(10_000);
        v.push(1);
        assert_eq!(shrink_vec(&mut v), 0, "in use: kept");
        v.clear();
        let freed = shrink_vec(&mut v);
        assert!(v.capacity() >= SCRATCH_KEEP && v.capacity() < 10_000);
        assert_eq!(freed, (10_000 - v.capacity()) * 8);
        assert_eq!(shrink_vec(&mut v), 0, "already small");
        let mut d: VecDeque<u32> = VecDeque::with_capacity(5_000);
        assert!(shrink_deque(&mut d) > 0 && d.capacity() < 5_000);
    }
}
