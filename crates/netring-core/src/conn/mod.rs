//! One connection's state, owned by exactly one IO thread.
//!
//! The lifecycle is `Open` → (`Closing` | `Aborting`) → freed. `Closing`
//! flushes the write queue, then closes (FIN). `Aborting` drops the queue,
//! cancels what is in flight and closes (RST when the user aborted). Either
//! way the slot is freed only when no operation on it is left in the kernel
//! (`recv_armed` and `send_inflight` both false): completions never refer to
//! a freed or reused slot. See `core.rs` for the transitions.

pub mod id;
pub mod sendq;
pub(crate) mod slab;

use std::io;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

pub use id::ConnId;
use sendq::SendQueue;

use crate::driver::SendState;
use crate::flow::Flow;
use crate::framing::{Decoder, FrameError, Framing};
use crate::layer::{LayerError, LayerOut, StreamLayer};
use sendq::BufCache;

/// Why a connection ended, when it did not end normally.
#[derive(Debug)]
pub enum ConnError {
    /// A socket error (reset, broken pipe...).
    Io(io::Error),
    /// The peer broke the framing rule (oversize packet or line).
    Frame(FrameError),
    /// The connection crossed one of its limits.
    Limit(LimitError),
    /// Its stream layer (TLS, PROXY header...) closed it.
    Layer(LayerError),
}

/// A limit a connection crossed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitError {
    /// Queued writes passed `max_write_buffer`: the peer is not reading.
    WriteBuffer { limit: usize },
    /// A packet started and did not finish within `frame_timeout`.
    FrameTimeout { timeout: std::time::Duration },
}

impl std::fmt::Display for LimitError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LimitError::WriteBuffer { limit } => write!(
                f,
                "queued writes passed max_write_buffer ({limit} bytes): the peer is not reading"
            ),
            LimitError::FrameTimeout { timeout } => write!(
                f,
                "a packet did not finish within frame_timeout ({:.3} s)",
                timeout.as_secs_f64()
            ),
        }
    }
}

impl std::fmt::Display for ConnError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnError::Io(e) => e.fmt(f),
            ConnError::Frame(e) => e.fmt(f),
            ConnError::Limit(e) => e.fmt(f),
            ConnError::Layer(e) => e.fmt(f),
        }
    }
}

/// Where a connection is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Reading and writing.
    Open,
    /// Flushing the write queue; then close.
    Closing,
    /// Dropping everything; close as soon as the kernel lets go.
    Aborting,
}

/// The part of a connection other threads may read (for
/// `get_write_buffer_size()` from a thread that does not own it).
#[derive(Debug, Default)]
pub struct ConnShared {
    /// Bytes in the owner's write queue (mirror, updated by the owner).
    queued: AtomicUsize,
    /// Bytes written from other threads, still in the mailbox.
    in_mailbox: AtomicUsize,
    /// Stream commands (write, close, write_eof) from other threads still
    /// in the mailbox. While any is pending, the owner's own stream commands
    /// queue behind them instead of applying at once, so a worker's write
    /// is never overtaken by a later write on the IO thread.
    pending: AtomicUsize,
}

impl ConnShared {
    /// Bytes written and not yet taken by the kernel.
    pub fn write_buffer_size(&self) -> usize {
        self.queued.load(Ordering::Relaxed) + self.in_mailbox.load(Ordering::Relaxed)
    }

    pub(crate) fn set_queued(&self, n: usize) {
        self.queued.store(n, Ordering::Relaxed);
    }

    pub(crate) fn mailbox_add(&self, n: usize) {
        self.in_mailbox.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn mailbox_sub(&self, n: usize) {
        self.in_mailbox.fetch_sub(n, Ordering::Relaxed);
    }

    /// A stream command entered the mailbox.
    pub(crate) fn pending_add(&self) {
        self.pending.fetch_add(1, Ordering::AcqRel);
    }

    /// A stream command left the mailbox (applied by the owner).
    pub(crate) fn pending_sub(&self) {
        self.pending.fetch_sub(1, Ordering::AcqRel);
    }

    /// Whether stream commands from other threads are still queued.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire) != 0
    }
}

/// An outbound connection not yet established.
pub(crate) struct Connecting {
    /// Names the attempt to the user (`Event::Connected` / `ConnectFailed`).
    pub(crate) token: u64,
    /// The peer address; the kernel reads it until the connect completes.
    pub(crate) addr: socket2::SockAddr,
    /// The deadline passed: report `TimedOut`.
    pub(crate) timed_out: bool,
    pub(crate) cancel_sent: bool,
    /// The stream layer to start once connected.
    pub(crate) layer: Option<crate::layer::Layer>,
}

/// One connection.
pub struct Conn {
    pub(crate) id: ConnId,
    pub(crate) fd: OwnedFd,
    /// The listener that accepted it.
    pub(crate) listener: u32,
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) state: State,
    pub(crate) sendq: SendQueue,
    /// While bytes are queued or in flight: the send's iovecs and header.
    pub(crate) send: Option<Box<SendState>>,
    pub(crate) send_inflight: bool,
    pub(crate) send_cancel_sent: bool,
    pub(crate) recv_armed: bool,
    pub(crate) recv_cancel_sent: bool,
    /// The user paused reading; data that was already in flight is held
    /// (in `rare`).
    pub(crate) read_paused: bool,
    /// The peer's EOF arrived while reading was paused.
    pub(crate) eof_held: bool,
    pub(crate) peer_eof: bool,
    pub(crate) eof_requested: bool,
    pub(crate) eof_sent: bool,
    /// Reset (SO_LINGER 0) on close: the user aborted.
    pub(crate) reset_on_close: bool,
    /// State most connections never need, boxed on first use.
    pub(crate) rare: Option<Box<Rare>>,
    /// The framing rule and the packet in progress.
    pub(crate) decoder: Decoder,
    /// Water marks, and whether the protocol was told to pause.
    pub(crate) flow: Flow,
    pub(crate) dirty: bool,
    /// Report idle after this long with nothing received.
    pub(crate) idle_timeout: Option<std::time::Duration>,
    /// When bytes last arrived (or the idle clock was reset).
    pub(crate) last_activity: std::time::Instant,
    /// Set while an outbound connect is in flight.
    pub(crate) connecting: Option<Box<Connecting>>,
    /// The user never saw this connection (a failed connect): no `Closed`.
    pub(crate) silent: bool,
    /// Abort past this many queued bytes.
    pub(crate) max_write_buffer: usize,
    /// Close when a started packet is not done within this long.
    pub(crate) frame_timeout: Option<std::time::Duration>,
    /// When the packet in progress started (with `frame_timeout`).
    pub(crate) packet_started: Option<std::time::Instant>,
    /// The peer broke the framing rule: no more reading or decoding; the
    /// connection closes after its `FrameError` event.
    pub(crate) frame_failed: bool,
    /// Bytes this connection adds to the engine's buffer memory.
    pub(crate) accounted: usize,
    /// Reading stopped: the engine is over `max_buffer_memory`.
    pub(crate) mem_paused: bool,
    /// Flushed and half-closed; draining input until the peer's EOF.
    pub(crate) lingering: bool,
    /// Lingering is over (deadline passed): close even without EOF.
    pub(crate) linger_done: bool,
}

/// A connection's stream layer and the plaintext waiting for it.
pub(crate) struct Layered {
    pub(crate) layer: Box<dyn StreamLayer>,
    /// The factory's name (for errors and logs).
    pub(crate) name: &'static str,
    /// Plaintext the protocol wrote, not yet through the layer.
    pub(crate) plain: SendQueue,
    /// `on_close` was called (our last words are queued).
    pub(crate) closed: bool,
    /// The layer ended the peer's stream (`LayerOut::eof`): its `Eof` went.
    pub(crate) eof: bool,
}

/// What a connection holds only in some lives: held input, a failure, a
/// place under listener limits. Boxed so that a plain idle connection does
/// not carry it (about 70 bytes less each).
#[derive(Default)]
pub(crate) struct Rare {
    /// Data that arrived while reading was paused.
    pub(crate) held: Vec<Vec<u8>>,
    /// What `connection_lost` will report.
    pub(crate) error: Option<ConnError>,
    /// The listener's counts this connection is part of, and its peer IP.
    pub(crate) counted: crate::limits::Counted,
    /// The stream layer between the wire and framing, if any.
    pub(crate) layer: Option<Box<Layered>>,
    /// A file window is being read into the page cache (`prefetch`): no
    /// send until it is.
    pub(crate) prefetching: bool,
}

impl slab::Identified for Conn {
    fn id(&self) -> ConnId {
        self.id
    }
}

impl Conn {
    pub(crate) fn new(id: ConnId, fd: OwnedFd, framing: Framing, now: std::time::Instant) -> Self {
        Conn {
            id,
            fd,
            listener: u32::MAX,
            shared: Arc::new(ConnShared::default()),
            state: State::Open,
            sendq: SendQueue::default(),
            send: None,
            send_inflight: false,
            send_cancel_sent: false,
            recv_armed: false,
            recv_cancel_sent: false,
            read_paused: false,
            eof_held: false,
            peer_eof: false,
            eof_requested: false,
            eof_sent: false,
            reset_on_close: false,
            rare: None,
            decoder: Decoder::new(framing),
            flow: Flow::default(),
            dirty: false,
            idle_timeout: None,
            last_activity: now,
            connecting: None,
            silent: false,
            max_write_buffer: crate::config::DEFAULT_MAX_WRITE_BUFFER_BYTES,
            frame_timeout: None,
            packet_started: None,
            frame_failed: false,
            accounted: 0,
            mem_paused: false,
            lingering: false,
            linger_done: false,
        }
    }

    /// The connection's stream layer, if it has one.
    pub(crate) fn layer(&self) -> Option<&Layered> {
        self.rare.as_ref()?.layer.as_deref()
    }

    /// Drop a spent layer (`StreamLayer::is_spent`) if no plaintext waits
    /// for it and it has not ended the stream: the connection goes on as
    /// an unlayered one. Returns whether it was dropped.
    pub(crate) fn drop_spent_layer(&mut self) -> bool {
        let Some(rare) = self.rare.as_mut() else {
            return false;
        };
        let spent = rare
            .layer
            .as_ref()
            .is_some_and(|l| l.layer.is_spent() && l.plain.is_empty() && !l.closed && !l.eof);
        if spent {
            rare.layer = None;
        }
        spent
    }

    /// As [`Conn::layer`], mutably.
    pub(crate) fn layer_mut(&mut self) -> Option<&mut Layered> {
        self.rare.as_mut()?.layer.as_deref_mut()
    }

    /// Where the protocol's writes queue: plaintext waiting for the layer,
    /// or the send queue itself.
    pub(crate) fn write_queue(&mut self) -> &mut SendQueue {
        match self.rare.as_mut().and_then(|r| r.layer.as_deref_mut()) {
            Some(l) => &mut l.plain,
            None => &mut self.sendq,
        }
    }

    /// Bytes written and not yet taken by the kernel (plaintext waiting
    /// for the layer included): what the water marks compare.
    pub(crate) fn queued(&self) -> usize {
        self.sendq.len() + self.layer().map_or(0, |l| l.plain.len())
    }

    /// Of [`Conn::queued`], the bytes in memory: queued file ranges are
    /// not (`max_write_buffer` and the buffer memory count these).
    pub(crate) fn queued_memory(&self) -> usize {
        self.sendq.memory() + self.layer().map_or(0, |l| l.plain.memory())
    }

    /// Nothing written is left unsent (nor waiting for the layer).
    pub(crate) fn flushed(&self) -> bool {
        self.sendq.is_empty() && self.layer().is_none_or(|l| l.plain.is_empty())
    }

    /// Put the plaintext queued since the last settle through the layer
    /// (and its last words, once the stream is ending and everything
    /// before them is through), appending the wire bytes to the send queue.
    pub(crate) fn flush_layer(&mut self, cache: &mut BufCache) -> Result<(), LayerError> {
        let aborting = self.state == State::Aborting;
        let ending = self.eof_requested || self.state == State::Closing;
        let Some(l) = self.rare.as_mut().and_then(|r| r.layer.as_deref_mut()) else {
            return Ok(());
        };
        if aborting {
            l.plain.clear(cache);
            return Ok(());
        }
        let mut out = LayerOut::default();
        let mut result = Ok(());
        if !l.plain.is_empty() {
            let layer = &mut l.layer;
            // A file's next window is read only once the wire bytes of the
            // last one are (nearly) sent: what it costs in memory is bounded.
            let read_file = self.sendq.memory() < sendq::FILE_LAYER_WINDOW_BYTES;
            let read = l.plain.drain_with(cache, read_file, |plain| {
                if result.is_ok() {
                    result = layer.on_write(plain, &mut out);
                }
            });
            if let Err(e) = read {
                result = result.and(Err(LayerError::new("sendfile", e.to_string())));
            }
        }
        if ending && !l.closed && l.plain.is_empty() && result.is_ok() {
            l.closed = true;
            l.layer.on_close(&mut out);
        }
        self.sendq.push_vec(out.wire, cache);
        result
    }

    /// Start a graceful close (no-op unless open).
    pub(crate) fn begin_close(&mut self) {
        if self.state == State::Open {
            self.state = State::Closing;
        }
    }

    /// Start an abort; `error` is what `connection_lost` will report.
    pub(crate) fn begin_abort(&mut self, error: Option<ConnError>, reset: bool) {
        if self.state != State::Aborting {
            self.state = State::Aborting;
            if error.is_some() || self.rare.is_some() {
                self.rare().error = error;
            }
            self.reset_on_close = reset;
        }
    }

    /// Whether the recv should be armed now.
    pub(crate) fn wants_recv(&self) -> bool {
        if self.connecting.is_some() || self.peer_eof {
            return false;
        }
        match self.state {
            State::Open => !self.read_paused && !self.mem_paused && !self.frame_failed,
            // Lingering close: read and discard until the peer's EOF, so the
            // kernel never resets a connection whose input we left unread.
            State::Closing => !self.linger_done,
            State::Aborting => false,
        }
    }

    /// Bytes buffered for this connection: queued writes, partial packet,
    /// held input.
    pub(crate) fn buffered_bytes(&self) -> usize {
        let held = self
            .rare
            .as_ref()
            .map_or(0, |r| r.held.iter().map(Vec::len).sum::<usize>());
        let layer = self
            .layer()
            .map_or(0, |l| l.plain.memory() + l.layer.buffered());
        self.sendq.memory() + self.decoder.allocated() + held + layer
    }

    /// The rare state, boxed on first use.
    pub(crate) fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Default::default)
    }

    /// The failure `connection_lost` will report, taken.
    pub(crate) fn take_error(&mut self) -> Option<ConnError> {
        self.rare.as_mut().and_then(|r| r.error.take())
    }

    /// The listener place this connection holds, taken.
    pub(crate) fn take_counted(&mut self) -> crate::limits::Counted {
        self.rare.as_mut().and_then(|r| r.counted.take())
    }

    /// Whether every operation has completed and the close condition holds.
    pub(crate) fn finished(&self) -> bool {
        let drained = match self.state {
            State::Open => false,
            State::Closing => {
                self.flushed() && self.lingering && (self.peer_eof || self.linger_done)
            }
            State::Aborting => true,
        };
        drained && !self.recv_armed && !self.send_inflight && self.connecting.is_none()
    }
}

#[cfg(test)]
mod size_tests {
    /// What an idle connection costs the engine is mostly its slab entry:
    /// keep rarely used state boxed (framing rules, send state) so that it
    /// stays small. A regression here shows in `make bench-limits`.
    #[test]
    fn an_idle_connection_stays_small() {
        assert!(std::mem::size_of::<crate::framing::Decoder>() <= 8);
        assert!(std::mem::size_of::<Option<Box<crate::driver::SendState>>>() <= 8);
        let conn = std::mem::size_of::<super::Conn>();
        assert!(conn <= 240, "Conn grew to {conn} bytes");
    }
}
