//! What the engine tells its user, and how the user answers.
//!
//! After each reap the IO thread hands its user (the Python bindings, or a
//! Rust [`Handler`] in tests) a [`Batch`]: events are taken one at a time
//! with [`Batch::next`], so an operation made while handling one event
//! (pausing reading, closing) already applies to the next. Received bytes are
//! borrowed from the engine's buffers for the whole dispatch and returned to
//! the pool after it.
//!
//! While a dispatch runs, the thread's core is reachable through a scoped
//! thread-local (`ACTIVE`), so a [`crate::ConnRef`] used on its own IO
//! thread applies at once, without the mailbox and without a wake-up.

use crate::conn::{ConnError, ConnId, State};
use crate::core::{Cursor, Ev, ThreadCore};
use crate::framing::{FrameError, Packet};
use crate::handle::{ConnRef, EndpointRef};
use crate::layer::LayerInfo;
use std::cell::RefCell;
use std::net::SocketAddr;

/// One thing that happened to a connection.
#[derive(Debug)]
pub enum Event<'b> {
    /// A connection was accepted on `listener` (connection_made).
    Opened {
        /// Handle for operations on the new connection.
        conn: ConnRef,
        /// The listener it came from.
        listener: usize,
        /// Remote address.
        peer: Option<SocketAddr>,
        /// Local address.
        local: Option<SocketAddr>,
        /// What its stream layer (TLS) negotiated, if it has one.
        info: Option<Box<LayerInfo>>,
    },
    /// Bytes arrived on a connection without framing (data_received).
    Data { conn: ConnId, data: &'b [u8] },
    /// One whole packet arrived on a framed connection (packet_received).
    Packet { conn: ConnId, data: &'b [u8] },
    /// The peer shut down its sending side (eof_received).
    Eof { conn: ConnId },
    /// The oldest file range queued by [`ConnRef::send_file`] on `conn` was
    /// sent completely (through a stream layer: handed to it).
    FileSent { conn: ConnId },
    /// An outbound connection (`Engine::connect`) is established; from here
    /// it behaves exactly as an accepted one.
    Connected {
        /// Handle for operations on the connection.
        conn: ConnRef,
        /// The token `Engine::connect_token` gave the attempt.
        token: u64,
        /// Remote address.
        peer: Option<SocketAddr>,
        /// Local address.
        local: Option<SocketAddr>,
        /// What its stream layer (TLS) negotiated, if it has one.
        info: Option<Box<LayerInfo>>,
    },
    /// An outbound connect failed (refused, unreachable, timed out...);
    /// nothing is left behind.
    ConnectFailed { token: u64, error: std::io::Error },
    /// A user timer fired (`Engine::start_timer`).
    Timer { id: u64 },
    /// Nothing arrived on `conn` for its idle timeout (timeout_received).
    IdleTimeout { conn: ConnId },
    /// The write queue crossed its high-water mark.
    PauseWriting { conn: ConnId },
    /// The write queue drained to its low-water mark.
    ResumeWriting { conn: ConnId },
    /// The peer broke the framing rule (an oversize packet or line, a RESP
    /// protocol error): nothing more is read or delivered; the handler may
    /// write a last reply, then the connection closes gracefully (flushing
    /// it) and `Closed` follows with the same error.
    FrameError {
        conn: ConnId,
        error: crate::framing::FrameError,
    },
    /// The connection is gone (connection_lost); `error` says why, if an
    /// error ended it. This is the last event for `conn`.
    Closed {
        conn: ConnId,
        error: Option<ConnError>,
    },
    /// A UDP endpoint (`Engine::udp_open`) is ready on its IO thread
    /// (connection_made). Endpoint ids are a namespace of their own.
    EndpointOpened {
        /// Handle for operations on the endpoint.
        endpoint: EndpointRef,
        /// The token `Engine::udp_open` was given.
        token: u64,
        /// The bound address.
        local: Option<SocketAddr>,
        /// The connected peer, if `remote` was given.
        peer: Option<SocketAddr>,
    },
    /// One whole datagram (datagram_received).
    Datagram {
        endpoint: ConnId,
        data: &'b [u8],
        addr: Option<SocketAddr>,
    },
    /// A datagram of `size` bytes was longer than a receive buffer holds:
    /// its bytes are dropped and it is reported instead of cut.
    DatagramTruncated {
        endpoint: ConnId,
        addr: Option<SocketAddr>,
        size: usize,
    },
    /// A send failed or the kernel reported an ICMP error (error_received);
    /// the endpoint stays open.
    DatagramError {
        endpoint: ConnId,
        error: std::io::Error,
    },
    /// The endpoint's send queue crossed its high-water mark.
    EndpointPauseWriting { endpoint: ConnId },
    /// The endpoint's send queue drained to its low-water mark.
    EndpointResumeWriting { endpoint: ConnId },
    /// The endpoint is closed (connection_lost): its last event.
    EndpointClosed {
        endpoint: ConnId,
        error: Option<std::io::Error>,
    },
}

/// The user of an engine: receives events on each IO thread.
pub trait Handler {
    /// Deliver every event of `batch` (call [`Batch::next`] until `None`).
    fn dispatch(&mut self, batch: &mut Batch<'_>);

    /// Run `wait` (the blocking wait in the kernel). The Python bindings
    /// release the GIL here, and only here.
    fn park<R: Send>(&mut self, wait: impl FnOnce() -> R + Send) -> R {
        wait()
    }
}

/// The events of one loop turn on one IO thread.
pub struct Batch<'b> {
    pub(crate) core: &'b RefCell<ThreadCore>,
}

impl<'b> Batch<'b> {
    /// The next event to deliver, or `None` when the batch is done.
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> Option<Event<'b>> {
        let mut core = self.core.borrow_mut();
        if !core.q.close_after.is_empty() {
            core.close_after_frame_errors();
        }
        loop {
            // `pause_writing` notices go first, so that a protocol stops
            // its producers before anything else it hears.
            let ev = match core.q.urgent.pop_front() {
                Some(ev) => ev,
                None if core.q.cursor.is_some() => {
                    if let Some(ev) = frame_next(&mut core) {
                        return Some(ev);
                    }
                    continue;
                }
                None => core.q.events.pop_front()?,
            };
            // NOTE: the one liveness check: an event about a connection or
            // endpoint that has since closed (or is closing) is stale and
            // dropped here, whatever its kind (tokio's driver does the same
            // with one generation check).
            if !core.is_current(&ev) {
                continue;
            }
            if let Some(event) = Self::deliver(&mut core, ev) {
                return Some(event);
            }
        }
    }

    /// The public form of a current event; `None` when it is taken in
    /// here (received bytes start being cut; an EOF waits while reading is
    /// paused).
    fn deliver(core: &mut ThreadCore, ev: Ev) -> Option<Event<'b>> {
        Some(match ev {
            Ev::Opened {
                conn,
                listener,
                peer,
                local,
                shared,
                info,
            } => Event::Opened {
                conn: ConnRef::new(conn, core.engine.clone(), shared),
                listener,
                peer,
                local,
                info,
            },
            Ev::Data { conn, chunk } => {
                core.q.cursor = Some(Cursor {
                    conn,
                    ptr: chunk.ptr,
                    len: chunk.len,
                    offset: 0,
                });
                return None;
            }
            Ev::Held { conn, data } => {
                let (ptr, len) = (data.as_ptr(), data.len());
                // The Vec's heap buffer does not move when the Vec is
                // moved into `retired`, which lives until the dispatch ends.
                core.q.retired.push(data);
                core.q.cursor = Some(Cursor {
                    conn,
                    ptr,
                    len,
                    offset: 0,
                });
                return None;
            }
            Ev::Eof { conn } => {
                let c = core.conn(conn)?;
                if c.read_paused {
                    c.eof_held = true;
                    return None;
                }
                Event::Eof { conn }
            }
            Ev::Timer { id } => Event::Timer { id },
            Ev::FileSent { conn } => Event::FileSent { conn },
            Ev::Connected {
                conn,
                token,
                peer,
                local,
                shared,
                info,
            } => Event::Connected {
                conn: ConnRef::new(conn, core.engine.clone(), shared),
                token,
                peer,
                local,
                info,
            },
            Ev::ConnectFailed { token, error } => Event::ConnectFailed { token, error },
            Ev::IdleTimeout { conn } => Event::IdleTimeout { conn },
            Ev::PauseWriting { conn } => Event::PauseWriting { conn },
            Ev::ResumeWriting { conn } => Event::ResumeWriting { conn },
            Ev::FrameError { conn, error } => {
                core.q.close_after.push(conn);
                Event::FrameError { conn, error }
            }
            Ev::Closed {
                conn,
                error,
                counted,
            } => {
                if let Some(c) = counted {
                    core.q.releases.push(c);
                }
                Event::Closed { conn, error }
            }
            Ev::EndpointOpened {
                ep,
                token,
                local,
                peer,
                shared,
            } => Event::EndpointOpened {
                endpoint: EndpointRef::new(ep, core.engine.clone(), shared),
                token,
                local,
                peer,
            },
            Ev::Datagram { ep, chunk, addr } => Event::Datagram {
                endpoint: ep,
                // SAFETY: the chunk's buffer is released only after this
                // dispatch ends (it is in `chunks_out`), which outlives
                // 'b's use by the handler.
                data: unsafe { std::slice::from_raw_parts(chunk.ptr, chunk.len) },
                addr,
            },
            Ev::DatagramTruncated { ep, addr, size } => Event::DatagramTruncated {
                endpoint: ep,
                addr,
                size,
            },
            Ev::DatagramError { ep, error } => Event::DatagramError {
                endpoint: ep,
                error,
            },
            Ev::EndpointPauseWriting { ep } => Event::EndpointPauseWriting { endpoint: ep },
            Ev::EndpointResumeWriting { ep } => Event::EndpointResumeWriting { endpoint: ep },
            Ev::EndpointClosed { ep, error } => Event::EndpointClosed {
                endpoint: ep,
                error,
            },
        })
    }

    /// Every further whole packet for `conn` in the read being delivered,
    /// appended to `out`: for handlers that deliver every packet of one read
    /// in one call (`packets_received`). Cut under one borrow and one
    /// connection lookup; nothing for a raw connection.
    pub fn packets_of(&mut self, conn: ConnId, out: &mut Vec<&'b [u8]>) {
        let mut core = self.core.borrow_mut();
        if core.q.cursor.map(|c| c.conn) != Some(conn) {
            return;
        }
        cut(&mut core, true, |data| {
            out.push(data);
            true
        });
    }

    /// Further raw chunks of `conn` from this turn that come right after
    /// the one just delivered (`Event::Data`), appended to `out` while the
    /// total stays within `max` bytes; returns that total. For a handler
    /// that joins a stream's reads into one call: a large message arrives as
    /// several receive buffers. Nothing when the chunk delivered was not
    /// used up, another event comes first, or the connection is not open,
    /// raw and reading (those chunks then come one by one, as usual).
    pub fn more_data(&mut self, conn: ConnId, out: &mut Vec<&'b [u8]>, max: usize) -> usize {
        let mut core = self.core.borrow_mut();
        let core = &mut *core;
        match core.q.cursor {
            Some(cur) if cur.conn != conn || cur.offset < cur.len => return 0,
            _ => {}
        }
        if !core.q.urgent.is_empty() || !core.q.close_after.is_empty() {
            return 0;
        }
        let Some(c) = core.conn(conn) else {
            return 0;
        };
        if c.state != State::Open || c.read_paused || c.frame_failed || !c.decoder.is_raw() {
            return 0;
        }
        let mut total = 0;
        while let Some(Ev::Data { conn: next, chunk }) = core.q.events.front() {
            if *next != conn || total + chunk.len > max {
                break;
            }
            total += chunk.len;
            // SAFETY: the chunk's receive buffer is in `chunks_out`, released
            // only after this dispatch ends, which outlives 'b.
            out.push(unsafe { std::slice::from_raw_parts(chunk.ptr, chunk.len) });
            core.q.events.pop_front();
        }
        total
    }

    /// Give back `rest`, the end of the raw chunk just delivered to `conn`
    /// (`Event::Data`), for a handler that took only part of it (asyncio's
    /// `BufferedProtocol`, whose buffer was smaller): the next
    /// [`Batch::next`] delivers it again, under the connection's state then
    /// (held if reading was paused meanwhile, cut by a new framing, dropped
    /// if it is closing). Returns false, giving nothing back, unless `rest`
    /// ends where the chunk under the cursor was cut (a chunk re-framed
    /// from bytes buffered under an earlier rule is not there).
    pub fn unread(&mut self, conn: ConnId, rest: &[u8]) -> bool {
        let mut core = self.core.borrow_mut();
        match core.q.cursor.as_mut() {
            Some(cur)
                if cur.conn == conn
                    && rest.len() <= cur.offset
                    && std::ptr::eq(
                        cur.ptr.wrapping_add(cur.offset),
                        rest.as_ptr().wrapping_add(rest.len()),
                    ) =>
            {
                cur.offset -= rest.len();
                true
            }
            _ => false,
        }
    }

    /// The [`PacketAlloc`](crate::framing::PacketAlloc) buffer `packet` (a
    /// packet this batch delivered) was built in, handed back to the
    /// handler, which then owns it (and must not use `packet` after it has
    /// dropped it); `None` when it was not built in one.
    pub fn take_built(&mut self, packet: &[u8]) -> Option<Box<dyn crate::framing::PacketBuf>> {
        let mut core = self.core.borrow_mut();
        let at = core.q.built.iter().position(|b| {
            let bytes = b.bytes();
            std::ptr::eq(bytes.as_ptr(), packet.as_ptr()) && bytes.len() == packet.len()
        })?;
        Some(core.q.built.swap_remove(at))
    }

    /// Apply operations on this thread's connections directly.
    pub fn with_core<R>(&self, f: impl FnOnce(&mut ThreadCore) -> R) -> R {
        f(&mut self.core.borrow_mut())
    }
}

/// How `cut` left the chunk under the cursor.
enum End {
    /// The handler wants no more now: the cursor moves past what was cut.
    More(usize),
    /// Asked for packets only, and the connection is raw: leave the cursor.
    Leave,
    /// Nothing more from this chunk (used up, connection closing, reading
    /// paused): clear the cursor.
    Stop,
    /// The chunk is used up: clear the cursor, start the partial packet's
    /// clock.
    Done,
    /// The peer broke the rule.
    Failed(FrameError),
}

/// The next event from the chunk under the cursor: a packet (a chunk, for
/// a raw connection), or `None` when the chunk is used up, its connection is
/// closing, or reading was paused (the rest of the chunk is then held).
fn frame_next<'b>(core: &mut ThreadCore) -> Option<Event<'b>> {
    let conn = core.q.cursor?.conn;
    let mut one = None;
    let raw = cut(core, false, |data| {
        one = Some(data);
        false
    });
    let data = one?;
    Some(if raw {
        Event::Data { conn, data }
    } else {
        Event::Packet { conn, data }
    })
}

/// Cut packets from the chunk under the cursor, handing each to `emit`
/// until it returns false or the chunk is used up. Returns whether the rule
/// is Raw (the "packet" is the whole chunk). With `packets_only`, a raw
/// connection's chunk is left under the cursor.
///
/// NOTE: one slab lookup for the whole run: no user code runs inside it, so
/// nothing (closing, pausing, a new rule) can change the connection between
/// two packets; everything a packet changes on the connection happens here.
fn cut<'b>(
    core: &mut ThreadCore,
    packets_only: bool,
    mut emit: impl FnMut(&'b [u8]) -> bool,
) -> bool {
    let Some(cur) = core.q.cursor else {
        return false;
    };
    let mut raw = false;
    let mut frames = 0u64;
    let end = match core.conn_and_retired(cur.conn) {
        Some((c, _, _)) if c.frame_failed || c.state != State::Open => End::Stop,
        Some((c, _, _)) if packets_only && c.decoder.is_raw() => End::Leave,
        Some((c, _, _)) if c.read_paused => {
            if cur.offset < cur.len {
                // SAFETY: as below.
                let rest = unsafe {
                    std::slice::from_raw_parts(cur.ptr.add(cur.offset), cur.len - cur.offset)
                };
                c.rare().held.push(rest.to_vec());
            }
            End::Stop
        }
        Some((c, retired, built)) => {
            raw = c.decoder.is_raw();
            let mut offset = cur.offset;
            loop {
                // SAFETY: the cursor's chunk is a receive buffer handed out
                // in this batch or a retired held buffer; both stay valid and
                // unmodified until the dispatch ends, which outlives 'b.
                let rest: &'b [u8] =
                    unsafe { std::slice::from_raw_parts(cur.ptr.add(offset), cur.len - offset) };
                match c.decoder.decode(rest) {
                    Ok((used, Some(packet))) => {
                        offset += used;
                        c.packet_started = None; // a packet finished: its clock stops
                        let data: &'b [u8] = match packet {
                            Packet::Borrowed(b) => b,
                            Packet::Owned(v) => {
                                let (ptr, len) = (v.as_ptr(), v.len());
                                retired.push(v);
                                // SAFETY: as for held data: the buffer lives
                                // (unmoved on the heap) in `retired` until the
                                // dispatch ends.
                                unsafe { std::slice::from_raw_parts(ptr, len) }
                            }
                            Packet::Built(b) => {
                                let (ptr, len) = (b.bytes().as_ptr(), b.bytes().len());
                                built.push(b);
                                // SAFETY: as above: the buffer's bytes stay
                                // where they are while it lives, in `built`
                                // until the dispatch ends or the handler
                                // takes it back (then it owns it).
                                unsafe { std::slice::from_raw_parts(ptr, len) }
                            }
                        };
                        frames += 1;
                        if !emit(data) {
                            break End::More(offset);
                        }
                    }
                    Ok((_, None)) => break End::Done,
                    Err(e) => {
                        c.frame_failed = true;
                        c.rare().error = Some(ConnError::Frame(e.clone()));
                        break End::Failed(e);
                    }
                }
            }
        }
        None => End::Stop,
    };
    if !raw && frames > 0 {
        crate::stats::Stats::add(&core.engine.stats.frames_in, frames);
    }
    match end {
        End::More(offset) => {
            if let Some(c) = core.q.cursor.as_mut() {
                c.offset = offset;
            }
        }
        End::Leave => {}
        End::Stop => core.q.cursor = None,
        End::Done => {
            core.q.cursor = None;
            core.track_packet(cur.conn);
        }
        End::Failed(error) => {
            let counter = match error {
                FrameError::PacketTooLarge { .. } | FrameError::LineTooLong { .. } => {
                    &core.engine.stats.frame_errors_oversize
                }
                _ => &core.engine.stats.frame_errors_malformed,
            };
            crate::stats::Stats::add(counter, 1);
            core.touch(cur.conn);
            core.q.events.push_front(Ev::FrameError {
                conn: cur.conn,
                error,
            });
            core.q.cursor = None;
        }
    }
    raw
}
