//! Settling: the state of every dirty connection into driver operations
//! (arm or cancel the recv, send the queue, half-close, lingering close,
//! free the slot once the kernel holds nothing of it), with the engine-wide
//! buffer-memory accounting.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::sync::Arc;

use socket2::SockRef;

use super::{Ev, ThreadCore, LINGER_MAX};
use crate::conn::{ConnError, ConnId, State};
use crate::driver::{Driver, FileSpan};
use crate::mailbox::Cmd;
use crate::shared::Shared;
use crate::stats::Stats;
use crate::timer::Due;

impl ThreadCore {
    // ---- settling -------------------------------------------------------------

    /// Account a connection's buffered bytes; over the engine's cap, a
    /// connection that holds some stops reading.
    pub(super) fn account(&mut self, index: usize) {
        if !self.engine.memory.enabled() {
            return;
        }
        let Some(conn) = self.conns.slot_mut(index) else {
            return;
        };
        let (old, now) = (conn.accounted, conn.buffered_bytes());
        conn.accounted = now;
        if old != now && self.engine.memory.update(old, now) {
            self.wake_all();
        }
        let Some(conn) = self.conns.slot_mut(index) else {
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
    pub(super) fn wake_all(&self) {
        for mb in &self.engine.mailboxes {
            mb.push(Cmd::Wake);
        }
    }

    /// Resume connections paused for memory once the total is low again.
    pub(super) fn resume_for_memory(&mut self) {
        if self.mem_paused.is_empty() || !self.engine.memory.may_resume() {
            return;
        }
        for id in std::mem::take(&mut self.mem_paused) {
            if let Some(conn) = self.touch(id) {
                conn.mem_paused = false;
            }
        }
    }

    /// Whether the file window `span` of `id` can be sent without waiting
    /// for a disk; if not, it is being read on the prefetch thread, which
    /// tells this thread (`Cmd::FileCached`) when it is in the page cache.
    fn file_ready(engine: &Arc<Shared>, id: ConnId, span: FileSpan) -> bool {
        // SAFETY: the descriptor is the send queue's own, open while queued.
        let fd = unsafe { BorrowedFd::borrow_raw(span.fd) };
        if span.len == 0 || crate::prefetch::cached(fd, span.offset + span.len as u64 - 1) {
            return true;
        }
        let Ok(dup) = rustix::io::fcntl_dupfd_cloexec(fd, 0) else {
            return true; // no descriptor to spare: read it here
        };
        Stats::add(&engine.stats.file_prefetches, 1);
        let weak = Arc::downgrade(engine);
        let done = Box::new(move || {
            if let Some(engine) = weak.upgrade() {
                engine.mailboxes[usize::from(id.thread)].push(Cmd::FileCached { conn: id });
            }
        });
        !engine.prefetch.request(dup, span.offset, span.len, done)
    }

    /// Turn the state of every dirty connection into driver operations.
    pub(crate) fn settle<D: Driver>(&mut self, driver: &mut D) {
        self.resume_for_memory();
        while let Some(index) = self.dirty.pop() {
            self.flush_layer(index);
            self.account(index);
            let Some(conn) = self.conns.slot_mut(index) else {
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
                    // NOTE: a zero-copy send may still be reading them.
                    let held = self.cache.hold_for(slot, conn.id.generation);
                    conn.sendq.clear(&mut self.cache);
                    if held {
                        self.cache.hold_none();
                    }
                    conn.shared.set_queued(0);
                    if let Some(state) = conn.send.take() {
                        self.cache.put_state(state);
                    }
                }
            } else if !conn.send_inflight
                && !conn.sendq.is_empty()
                && !conn.rare.as_ref().is_some_and(|r| r.prefetching)
            {
                let send = conn.send.get_or_insert_with(|| self.cache.get_state());
                let bytes = conn.sendq.fill(send);
                let generation = conn.id.generation;
                let zerocopy = self.engine.zerocopy_threshold.is_some_and(|t| bytes >= t)
                    && send.file.is_none()
                    && driver.supports_zerocopy()
                    && self.cache.zerocopy_allowed(slot, generation);
                send.zerocopy = zerocopy.then(|| self.cache.zerocopy_issue(slot, generation));
                if send
                    .file
                    .is_some_and(|span| !Self::file_ready(&self.engine, conn.id, span))
                {
                    conn.sendq.unpin();
                    conn.rare().prefetching = true;
                } else {
                    driver.send(slot, fd, send);
                    conn.send_inflight = true;
                    conn.send_cancel_sent = false;
                }
            }
            if conn.eof_requested
                && !conn.eof_sent
                && conn.state == State::Open
                && conn.flushed()
                && !conn.send_inflight
            {
                conn.eof_sent = true;
                let _ = rustix::net::shutdown(conn.fd.as_fd(), rustix::net::Shutdown::Write);
            }
            if conn.state == State::Closing
                && !conn.lingering
                && conn.flushed()
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
                // NOTE: one whose layer is not ready yet was never seen by
                // the protocol: `finalize` reports it (`closed_unready`).
                if !conn.silent && !self.unready.contains_key(&slot) {
                    conn.silent = true;
                    Stats::add(&self.engine.stats.closed, 1);
                    self.q.events.push_back(Ev::Closed {
                        conn: conn.id,
                        error: conn.take_error(),
                        counted: conn.take_counted(),
                    });
                }
                if !conn.peer_eof {
                    self.timers
                        .schedule(self.now + LINGER_MAX, Due::LingerEnd(conn.id));
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

    pub(super) fn finalize<D: Driver>(&mut self, index: usize, driver: &mut D) {
        let conn = self.conns.remove(index);
        let unready = self.take_unready(index as u32);
        let peer = unready.as_ref().and_then(|_| {
            SockRef::from(&conn.fd)
                .peer_addr()
                .ok()
                .and_then(|a| a.as_socket())
        });
        if self.engine.memory.update(conn.accounted, 0) {
            self.wake_all();
        }
        self.cache.forget_slot(index as u32);
        conn.shared.set_queued(0);
        driver.close(index as u32, conn.fd, conn.reset_on_close);
        self.fd_freed = true;
        let (error, counted) = conn.rare.map_or((None, None), |r| (r.error, r.counted));
        if let Some(u) = unready {
            // Gone before its layer was ready (e.g. reset mid-handshake).
            let error = match error {
                Some(ConnError::Io(e)) => e,
                Some(other) => io::Error::other(other.to_string()),
                None => io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the connection closed before its layer was ready",
                ),
            };
            self.closed_unready(u, peer, error);
            if let Some((counts, ip)) = &counted {
                self.release_count(counts, *ip);
            }
        } else if conn.silent {
            if let Some((counts, ip)) = &counted {
                self.release_count(counts, *ip);
            }
        } else {
            Stats::add(&self.engine.stats.closed, 1);
            self.q.events.push_back(Ev::Closed {
                conn: conn.id,
                error,
                counted,
            });
        }
    }
}
