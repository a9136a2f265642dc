//! Operations the user asks for on the owner thread (write, close, pause,
//! water marks...): they change connection state and mark the connection
//! dirty; `settle` turns that into driver operations after the batch.

use std::os::fd::OwnedFd;
use std::time::Duration;

use socket2::SockRef;

use super::{Ev, ThreadCore};
use crate::conn::sendq::{BufCache, SendQueue};
use crate::conn::{ConnError, ConnId, State};
use crate::flow::{Crossing, Written};
use crate::framing::Framing;
use crate::stats::Stats;
use crate::timer::Due;

impl ThreadCore {
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

    /// Queue `len` bytes of the file `fd` from `offset` on `id`, in order
    /// with its writes (see [`SendQueue::push_file`]); `Event::FileSent`
    /// reports when they are sent. Counted by the water marks, not by
    /// `max_write_buffer` nor the buffer memory: the bytes stay in the file.
    pub(crate) fn send_file(
        &mut self,
        id: ConnId,
        fd: OwnedFd,
        offset: u64,
        len: u64,
        event: bool,
    ) -> Written {
        let push = |q: &mut SendQueue, c: &mut BufCache| q.push_file(fd, offset, len, c);
        self.write_notify(id, len as usize, push, event)
    }

    /// Cut `id`'s stream by `framing` from the next byte on.
    pub fn set_framing(&mut self, id: ConnId, framing: Framing) {
        let alloc = self.engine.packet_alloc.clone();
        let Some(conn) = self.conn(id) else { return };
        conn.decoder.set_framing(framing);
        conn.decoder.set_alloc(alloc);
        // Bytes buffered under the old rule may already hold packets under
        // the new one: unless this connection's chunk is being cut right
        // now, queue an empty read so they are re-framed at once.
        if self.q.cursor.map(|c| c.conn) != Some(id) {
            self.q.events.push_front(Ev::Held {
                conn: id,
                data: Vec::new(),
            });
        }
    }

    /// Report `id` idle after `timeout` with nothing received (`None`: off).
    pub fn set_idle_timeout(&mut self, id: ConnId, timeout: Option<Duration>) {
        let now = self.now;
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
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let Some(timeout) = conn.frame_timeout else {
            return;
        };
        if !conn.decoder.in_packet() {
            conn.packet_started = None;
        } else if conn.packet_started.is_none() {
            let now = self.now;
            conn.packet_started = Some(now);
            self.timers
                .schedule(now + timeout, Due::FrameTimeout(id, now));
        }
    }

    pub(crate) fn write_vec(&mut self, id: ConnId, data: Vec<u8>) -> bool {
        self.write_with(id, data.len(), |q, c| q.push_vec(data, c))
    }

    pub(super) fn write_with(
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
        let Some(conn) = self.conns.get_mut(id) else {
            return Written::Dropped;
        };
        if conn.state != State::Open || conn.eof_requested {
            return Written::Dropped;
        }
        if len == 0 {
            return Written::Queued;
        }
        push(conn.write_queue(), &mut self.cache);
        let queued = conn.queued();
        conn.shared.set_queued(queued);
        let in_memory = conn.queued_memory();
        if in_memory > conn.max_write_buffer {
            let limit = conn.max_write_buffer;
            let peer = SockRef::from(&conn.fd)
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket());
            Stats::add(&self.engine.stats.write_buffer_aborts, 1);
            log::warn!(
                "netring: aborting the connection from {}: {in_memory} bytes queued, over max_write_buffer ({limit}); the peer is not reading",
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
        let pause = conn.flow.queued(queued);
        Self::mark_dirty(&mut self.dirty, conn);
        if !pause {
            Written::Queued
        } else if event {
            self.q.urgent.push_back(Ev::PauseWriting { conn: id });
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
                self.q.events.push_front(Ev::Eof { conn: id });
            }
            for data in held.into_iter().rev() {
                self.q.events.push_front(Ev::Held { conn: id, data });
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
        let queued = conn.queued();
        match conn.flow.set_limits(high, low, queued) {
            Some(Crossing::Pause) => self.q.urgent.push_back(Ev::PauseWriting { conn: id }),
            Some(Crossing::Resume) => self.q.events.push_back(Ev::ResumeWriting { conn: id }),
            None => {}
        }
    }

    /// Bytes queued on `id` and not yet taken by the kernel.
    pub fn write_buffer_size(&mut self, id: ConnId) -> usize {
        self.conn(id).map_or(0, |c| c.queued())
    }
}
