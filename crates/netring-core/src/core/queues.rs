//! One IO thread's per-dispatch queues: the events the next dispatch
//! delivers (with the urgent `pause_writing` notices ahead of them), the
//! chunk being cut into packets, and what the dispatch leaves to clean up
//! after it (receive buffers to return, held bytes to drop, listener places
//! to free, connections to close after a frame error).

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use crate::conn::{ConnError, ConnId, ConnShared};
use crate::driver::Chunk;
use crate::housekeeping::{shrink_deque, shrink_vec, SCRATCH_KEEP};
use crate::layer::LayerInfo;
use crate::limits::{Counted, ListenerCounts};

/// An event waiting for dispatch (internal form; see `event::Event`).
pub(crate) enum Ev {
    Opened {
        conn: ConnId,
        listener: usize,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        shared: Arc<ConnShared>,
        /// A layered connection's info, filled in when the layer is ready.
        info: Option<Box<LayerInfo>>,
    },
    Data {
        conn: ConnId,
        chunk: Chunk,
    },
    /// A file range queued by `send_file` was sent completely.
    FileSent {
        conn: ConnId,
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
        /// A layered connection's info, filled in when the layer is ready.
        info: Option<Box<LayerInfo>>,
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

/// Packets built in `PacketAlloc` buffers during a dispatch.
pub(crate) type Built = Vec<Box<dyn crate::framing::PacketBuf>>;

/// The queues of one dispatch.
#[derive(Default)]
pub(crate) struct Queues {
    pub(crate) events: VecDeque<Ev>,
    /// `pause_writing` notices: delivered before any other pending event,
    /// so a protocol can stop its producers before they write more (asyncio
    /// calls `pause_writing` inside `write()`).
    pub(crate) urgent: VecDeque<Ev>,
    /// The chunk being framed during a dispatch.
    pub(crate) cursor: Option<Cursor>,
    /// Receive buffers handed out in this batch; released after dispatch.
    pub(crate) chunks_out: Vec<u16>,
    /// Held data delivered in this batch; dropped after dispatch.
    pub(crate) retired: Vec<Vec<u8>>,
    /// Packets built in a `PacketAlloc` buffer delivered in this batch:
    /// the handler may take each back (`Batch::take_built`), else they are
    /// dropped after dispatch.
    pub(crate) built: Built,
    /// Places under listener limits whose `Closed` was delivered in this
    /// dispatch: freed after it, so that a new connection's
    /// `connection_made` never runs before the old one's `connection_lost`.
    pub(crate) releases: Vec<(Arc<ListenerCounts>, Option<std::net::IpAddr>)>,
    /// Connections whose `FrameError` was just delivered: closed (flushing
    /// what the handler wrote in answer) before the next event.
    pub(crate) close_after: Vec<ConnId>,
    /// `Unlisten` requests whose listener is gone: each flag is set after
    /// the next dispatch, which delivers what its last accepts opened.
    pub(crate) unlistened: Vec<Arc<std::sync::atomic::AtomicBool>>,
}

impl Queues {
    /// Whether events wait for dispatch.
    pub(crate) fn has_events(&self) -> bool {
        !self.events.is_empty() || !self.urgent.is_empty()
    }

    /// Whether a burst grew a queue beyond what is kept.
    pub(crate) fn grown(&self) -> bool {
        self.events.capacity() > SCRATCH_KEEP
            || self.urgent.capacity() > SCRATCH_KEEP
            || self.chunks_out.capacity() > SCRATCH_KEEP
    }

    /// Give back what a burst grew, once empty; returns the bytes freed.
    pub(crate) fn shrink(&mut self) -> usize {
        shrink_deque(&mut self.events)
            + shrink_deque(&mut self.urgent)
            + shrink_vec(&mut self.chunks_out)
    }
}
