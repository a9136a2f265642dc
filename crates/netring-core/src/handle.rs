//! The user's handles: [`ConnRef`] on a connection and [`EndpointRef`] on
//! a UDP endpoint, usable from any thread. On the owner IO thread during a
//! dispatch an operation applies at once; elsewhere it travels through the
//! owner's mailbox, in order.

use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use crate::conn::sendq::SharedBytes;
use crate::conn::{ConnId, ConnShared};
use crate::core::{with_active, ThreadCore};
use crate::flow::Written;
use crate::framing::{EncodeError, Framing};
use crate::mailbox::Cmd;
use crate::shared::Shared;

/// What every handle is: an id on one IO thread, the engine, and the
/// part of the connection or endpoint other threads may read. On the owner
/// thread during a dispatch an operation applies at once (`local`); from
/// anywhere else it travels through the owner's mailbox (`remote`).
/// Ordered operations (writes, close, pausing) also count themselves
/// pending while in the mailbox, and while any is pending the owner's own
/// ordered operations queue behind them, so order holds across threads.
#[derive(Clone, Debug)]
pub struct Handle {
    id: ConnId,
    engine: Arc<Shared>,
    shared: Arc<ConnShared>,
}

impl Handle {
    /// The id (connections and endpoints are separate namespaces).
    pub fn id(&self) -> ConnId {
        self.id
    }

    /// Bytes written and not yet taken by the kernel.
    pub fn write_buffer_size(&self) -> usize {
        self.shared.write_buffer_size()
    }

    fn local<R>(&self, f: impl FnOnce(&mut ThreadCore) -> R) -> Option<R> {
        with_active(self.engine.id, self.id.thread, f)
    }

    /// [`Handle::local`] for ordered operations: `None` while earlier ones
    /// from other threads are still in the mailbox.
    fn local_ordered<R>(&self, f: impl FnOnce(&mut ThreadCore) -> R) -> Option<R> {
        if self.shared.has_pending() {
            return None;
        }
        self.local(f)
    }

    fn remote(&self, cmd: Cmd) {
        self.engine.mailboxes[usize::from(self.id.thread)].push(cmd);
    }

    /// Send an ordered operation through the mailbox, counted as pending.
    fn remote_ordered(&self, cmd: Cmd) {
        self.shared.pending_add();
        self.remote(cmd);
    }
}

/// The user's handle on one connection; usable from any thread.
///
/// On the connection's own IO thread, during a dispatch, operations apply
/// at once; from anywhere else they travel through the owner's mailbox, in
/// order. Once the connection is gone every operation is a no-op: the id's
/// generation no longer matches, even if the slot or descriptor is reused.
#[derive(Clone, Debug)]
pub struct ConnRef(Handle);

impl std::ops::Deref for ConnRef {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.0
    }
}

impl ConnRef {
    pub(crate) fn new(id: ConnId, engine: Arc<Shared>, shared: Arc<ConnShared>) -> Self {
        ConnRef(Handle { id, engine, shared })
    }

    /// Count packets queued framed (`stats().frames_out`; raw ones are
    /// plain writes).
    fn count_frames_out(&self, framing: &Framing, n: usize) {
        if *framing != Framing::Raw {
            crate::stats::Stats::add(&self.engine.stats.frames_out, n as u64);
        }
    }

    /// Hand bytes to the owner thread through the mailbox (counted against
    /// the engine's buffer memory until it takes them).
    fn remote_write(&self, data: Vec<u8>) {
        self.shared.mailbox_add(data.len());
        self.remote_ordered(Cmd::Write {
            conn: self.id,
            data,
        });
    }

    /// Queue bytes. On the owner thread returns false if the connection is
    /// closing or gone; from other threads the check happens later.
    pub fn write(&self, data: &[u8]) -> bool {
        if let Some(ok) = self.local_ordered(|c| c.write(self.id, data)) {
            return ok;
        }
        self.remote_write(data.to_vec());
        true
    }

    /// Queue `data` like [`ConnRef::write_inline`], by reference when it is
    /// large (sent from where it is, dropped once the kernel took it all;
    /// from another thread it travels through the mailbox as it is), else
    /// copied into the coalescing buffers.
    pub fn write_shared_inline(&self, data: Box<dyn SharedBytes>) -> Written {
        let len = data.as_bytes().len();
        let mut data = Some(data);
        let local = self.local_ordered(|c| {
            let data = data.take().expect("taken once");
            c.write_notify(self.id, len, |q, cache| q.push_shared(data, cache), false)
        });
        if let Some(w) = local {
            return w;
        }
        if let Some(data) = data {
            self.shared.mailbox_add(len);
            self.remote_ordered(Cmd::WriteShared {
                conn: self.id,
                data,
            });
        }
        Written::Queued
    }

    /// Queue `packet` framed by `framing` like [`ConnRef::write_packets_inline`],
    /// the payload by reference as in [`ConnRef::write_shared_inline`] (one
    /// vectored send takes the header, the payload in place and the
    /// delimiter); from another thread the three travel joined, as one copy.
    pub fn write_packet_shared_inline(
        &self,
        framing: &Framing,
        packet: Box<dyn SharedBytes>,
    ) -> (Written, Option<EncodeError>) {
        let mut header = [0u8; 8];
        let payload = packet.as_bytes().len();
        let h = match framing.encode_header_into(payload, &mut header) {
            Ok(h) => h,
            Err(e) => return (Written::Queued, Some(e)),
        };
        let delimiter: &[u8] = match framing {
            Framing::Delimited { delimiter, .. } => delimiter,
            _ => &[],
        };
        let len = h + payload + delimiter.len();
        let mut packet = Some(packet);
        let local = self.local_ordered(|c| {
            let packet = packet.take().expect("taken once");
            let push = |q: &mut crate::conn::sendq::SendQueue, cache: &mut _| {
                q.push_slice(&header[..h], cache);
                q.push_shared(packet, cache);
                q.push_slice(delimiter, cache);
            };
            c.write_notify(self.id, len, push, false)
        });
        self.count_frames_out(framing, 1);
        if let Some(w) = local {
            return (w, None);
        }
        if let Some(packet) = packet {
            self.remote_write([&header[..h], packet.as_bytes(), delimiter].concat());
        }
        (Written::Queued, None)
    }

    /// Queue `len` bytes of the file `fd` (which the engine owns from now
    /// on and closes when they are sent, or the connection is gone) from
    /// `offset`, in order with the writes before and after: the kernel
    /// moves them from the file to the socket (`sendfile(2)`; through a
    /// stream layer such as TLS, read in windows and encrypted). Each range
    /// sent completely is an `Event::FileSent`, oldest first; a connection
    /// that closes first reports none for the ranges left. Water marks
    /// count the bytes left, like written ones; `max_write_buffer` does not
    /// (they are not in memory). Returns like [`ConnRef::write_inline`].
    pub fn send_file(&self, fd: OwnedFd, offset: u64, len: u64) -> Written {
        let mut fd = Some(fd);
        let local = self.local_ordered(|c| {
            let fd = fd.take().expect("taken once");
            c.send_file(self.id, fd, offset, len, false)
        });
        if let Some(w) = local {
            return w;
        }
        if let Some(fd) = fd {
            self.remote_ordered(Cmd::SendFile {
                conn: self.id,
                fd,
                offset,
                len,
            });
        }
        Written::Queued
    }

    /// Queue the concatenation of `parts` like [`ConnRef::write_inline`].
    pub fn write_parts_inline(&self, parts: &[&[u8]]) -> Written {
        let len = parts.iter().map(|p| p.len()).sum();
        let local = self.local_ordered(|c| {
            c.write_notify(self.id, len, |q, cache| q.push_parts(parts, cache), false)
        });
        if let Some(w) = local {
            return w;
        }
        let data = parts.concat();
        self.remote_write(data);
        Written::Queued
    }

    /// Queue `packets`, each framed by `framing` (its length header before
    /// it, its delimiter after it, or as is: see [`Framing::encode`]), as
    /// one write, like [`ConnRef::write_parts_inline`]. A packet whose
    /// length does not fit the header is not queued, nor is any after it;
    /// its error comes back beside what the write of those before it did.
    pub fn write_packets_inline<P: AsRef<[u8]>>(
        &self,
        framing: &Framing,
        packets: &[P],
    ) -> (Written, Option<EncodeError>) {
        let delimiter: &[u8] = match framing {
            Framing::Delimited { delimiter, .. } => delimiter,
            _ => &[],
        };
        let mut header = [0u8; 8];
        let mut len = 0;
        let mut error = None;
        let mut fit = packets.len();
        for (i, p) in packets.iter().enumerate() {
            let p = p.as_ref();
            match framing.encode_header_into(p.len(), &mut header) {
                Ok(h) => len += h + p.len() + delimiter.len(),
                Err(e) => {
                    error = Some(e);
                    fit = i;
                    break;
                }
            }
        }
        let packets = &packets[..fit];
        if packets.is_empty() {
            return (Written::Queued, error);
        }
        let local = self.local_ordered(|c| {
            c.write_notify(
                self.id,
                len,
                |q, cache| {
                    for p in packets {
                        let p = p.as_ref();
                        let h = framing
                            .encode_header_into(p.len(), &mut header)
                            .unwrap_or(0);
                        q.push_parts(&[&header[..h], p, delimiter], cache);
                    }
                },
                false,
            )
        });
        self.count_frames_out(framing, packets.len());
        if let Some(w) = local {
            return (w, error);
        }
        let mut data = Vec::with_capacity(len);
        for p in packets {
            // Cannot fail: every length was checked above.
            let _ = framing.encode(p.as_ref(), &mut data);
        }
        self.remote_write(data);
        (Written::Queued, error)
    }

    /// Queue bytes, asyncio style: on the owner thread inside a dispatch,
    /// a write that crosses the high-water mark returns
    /// [`Written::CrossedHigh`] and the caller calls `pause_writing` at
    /// once (no event follows); from other threads the owner delivers a
    /// `PauseWriting` event as usual.
    pub fn write_inline(&self, data: &[u8]) -> Written {
        self.write_parts_inline(&[data])
    }

    /// Queue the concatenation of `parts` as one write (e.g. a length
    /// header and its payload), without joining them first on the owner.
    pub fn write_parts(&self, parts: &[&[u8]]) -> bool {
        if let Some(ok) = self.local_ordered(|c| c.write_parts(self.id, parts)) {
            return ok;
        }
        let data = parts.concat();
        self.remote_write(data);
        true
    }

    /// Cut the stream by `framing` from the next byte on; bytes already
    /// received and not yet delivered are re-framed.
    pub fn set_framing(&self, framing: Framing) {
        let framing2 = framing.clone();
        if self
            .local(move |c| c.set_framing(self.id, framing2))
            .is_none()
        {
            self.remote(Cmd::SetFraming {
                conn: self.id,
                framing,
            });
        }
    }

    /// Report the connection idle (`Event::IdleTimeout`) after `timeout`
    /// with nothing received; `None` turns it off.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        if self
            .local(|c| c.set_idle_timeout(self.id, timeout))
            .is_none()
        {
            self.remote(Cmd::SetIdleTimeout {
                conn: self.id,
                timeout,
            });
        }
    }

    /// Flush, then close.
    pub fn close(&self) {
        if self.local_ordered(|c| c.close(self.id)).is_none() {
            self.remote_ordered(Cmd::Close { conn: self.id });
        }
    }

    /// Drop the write queue and reset the connection.
    pub fn abort(&self) {
        if self.local(|c| c.abort(self.id)).is_none() {
            self.remote(Cmd::Abort { conn: self.id });
        }
    }

    /// Drop the write queue and close without a reset (a handler failed).
    pub fn abort_quietly(&self) {
        if self.local(|c| c.abort_quietly(self.id)).is_none() {
            self.remote(Cmd::Abort { conn: self.id });
        }
    }

    /// Flush, then shut down the sending side.
    pub fn write_eof(&self) {
        if self.local_ordered(|c| c.write_eof(self.id)).is_none() {
            self.remote_ordered(Cmd::WriteEof { conn: self.id });
        }
    }

    /// Pause (true) or resume (false) delivery of received data. Ordered
    /// with writes and earlier pauses from other threads, like a write.
    pub fn set_reading_paused(&self, paused: bool) {
        if self
            .local_ordered(|c| c.set_reading(self.id, paused))
            .is_none()
        {
            self.remote_ordered(Cmd::SetReading {
                conn: self.id,
                paused,
            });
        }
    }

    /// Set the write-queue water marks.
    pub fn set_write_limits(&self, high: usize, low: usize) {
        if self
            .local(|c| c.set_write_limits(self.id, high, low))
            .is_none()
        {
            self.remote(Cmd::SetWriteLimits {
                conn: self.id,
                high,
                low,
            });
        }
    }

    /// A duplicate (`F_DUPFD_CLOEXEC`) of the connection's socket
    /// descriptor: the same socket, for socket options; it keeps the socket
    /// open after the engine closes its own descriptor, so its owner closes
    /// it once the connection is reported closed. Only on the owner thread
    /// during a dispatch (or between a hosted engine's turns), where the
    /// engine's descriptor cannot be closed meanwhile; `None` elsewhere, or
    /// once the connection is gone (its descriptor may name another socket).
    pub fn dup_fd(&self) -> Option<std::io::Result<std::os::fd::OwnedFd>> {
        self.local(|c| c.conn(self.id).map(|conn| conn.fd.try_clone()))
            .flatten()
    }
}

/// The user's handle on one UDP endpoint; usable from any thread, with
/// [`ConnRef`]'s rules (at once on the owner thread during a dispatch,
/// through the mailbox in order elsewhere, a no-op once the endpoint is
/// gone).
#[derive(Clone, Debug)]
pub struct EndpointRef(Handle);

impl std::ops::Deref for EndpointRef {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.0
    }
}

impl EndpointRef {
    pub(crate) fn new(id: ConnId, engine: Arc<Shared>, shared: Arc<ConnShared>) -> Self {
        EndpointRef(Handle { id, engine, shared })
    }

    /// Queue one datagram to `addr` (None: the connected peer). On the
    /// owner thread, [`Written::CrossedHigh`] asks the caller to call
    /// `pause_writing` now; [`Written::Dropped`]: closing, gone, or the send
    /// queue is at its cap (counted in stats).
    pub fn send_to(&self, data: &[u8], addr: Option<SocketAddr>) -> Written {
        if let Some(w) = self.local_ordered(|c| c.udp_send_vec(self.id, data.to_vec(), addr, false))
        {
            return w;
        }
        self.shared.mailbox_add(data.len());
        self.remote_ordered(Cmd::UdpSend {
            ep: self.id,
            data: data.to_vec(),
            addr,
        });
        Written::Queued
    }

    /// Send what is queued, then close.
    pub fn close(&self) {
        if self.local_ordered(|c| c.udp_close(self.id)).is_none() {
            self.remote_ordered(Cmd::UdpClose { ep: self.id });
        }
    }

    /// Drop what is queued and close now.
    pub fn abort(&self) {
        if self.local(|c| c.udp_abort(self.id)).is_none() {
            self.remote(Cmd::UdpAbort { ep: self.id });
        }
    }

    /// Pause (true) or resume (false) receiving.
    pub fn set_reading_paused(&self, paused: bool) {
        if self.local(|c| c.udp_set_reading(self.id, paused)).is_none() {
            self.remote(Cmd::UdpSetReading {
                ep: self.id,
                paused,
            });
        }
    }

    /// Set the send queue's water marks.
    pub fn set_write_limits(&self, high: usize, low: usize) {
        if self
            .local(|c| c.udp_set_write_limits(self.id, high, low))
            .is_none()
        {
            self.remote(Cmd::UdpSetWriteLimits {
                ep: self.id,
                high,
                low,
            });
        }
    }
}
