//! Driver completions into connection state and events.

use std::time::Instant;

use super::{Ev, ThreadCore};
use crate::conn::{ConnError, State};
use crate::driver::{Completion, Driver, RecvResult};
use crate::stats::Stats;

impl ThreadCore {
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
                let Some(conn) = self.conns.slot_mut(slot as usize) else {
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
                        self.q.chunks_out.push(chunk.bid);
                        if conn.state != State::Open || conn.frame_failed {
                            // closing: input after close() is discarded
                        } else if conn.layer().is_some() {
                            let id = conn.id;
                            // SAFETY: the chunk's buffer is released only
                            // after this dispatch (it is in `chunks_out`).
                            let wire = unsafe { std::slice::from_raw_parts(chunk.ptr, chunk.len) };
                            self.layer_read(id, wire);
                        } else {
                            self.q.events.push_back(Ev::Data {
                                conn: conn.id,
                                chunk,
                            });
                        }
                    }
                    RecvResult::Eof => {
                        if !conn.peer_eof {
                            conn.peer_eof = true;
                            if conn.layer().is_some() && conn.state == State::Open {
                                let id = conn.id;
                                self.layer_eof(id);
                            } else {
                                self.q.events.push_back(Ev::Eof { conn: conn.id });
                            }
                        }
                    }
                    RecvResult::NoBuffers | RecvResult::Cancelled => {}
                    RecvResult::Err(e) => conn.begin_abort(Some(ConnError::Io(e)), false),
                }
            }
            Completion::SendAbandoned { slot, seq } => {
                // NOTE: the driver logged it, once per socket.
                Stats::add(&self.engine.stats.zerocopy_abandoned, 1);
                self.cache.zerocopy_abandoned(slot, seq);
            }
            Completion::SendNotified { slot, seq, copied } => {
                match self.cache.zerocopy_notified(slot, seq, copied) {
                    Some(true) => Stats::add(&self.engine.stats.zerocopy_copied, 1),
                    Some(false) => Stats::add(&self.engine.stats.zerocopy_sends, 1),
                    None => {} // a failed or cancelled send's
                }
            }
            Completion::Sent {
                slot,
                result,
                notify,
            } => {
                let took = matches!(result, Ok(n) if n > 0);
                let zerocopy = self.cache.zerocopy_completed(slot, notify, took);
                let Some(conn) = self.conns.slot_mut(slot as usize) else {
                    return;
                };
                conn.send_inflight = false;
                Self::mark_dirty(&mut self.dirty, conn);
                match result {
                    Ok(n) => {
                        let held = self.cache.hold_for(slot, conn.id.generation);
                        conn.sendq.advance(n, &mut self.cache);
                        if held {
                            self.cache.hold_none();
                        }
                        for _ in 0..conn.sendq.take_files_done() {
                            self.q.events.push_back(Ev::FileSent { conn: conn.id });
                        }
                        if conn.sendq.is_empty() {
                            if let Some(state) = conn.send.take() {
                                self.cache.put_state(state);
                            }
                        }
                        Stats::add(&self.engine.stats.bytes_out, n as u64);
                        let queued = conn.queued();
                        conn.shared.set_queued(queued);
                        if conn.state == State::Open && conn.flow.drained(queued) {
                            self.q.events.push_back(Ev::ResumeWriting { conn: conn.id });
                        }
                    }
                    Err(e) => {
                        conn.sendq.unpin();
                        let refused =
                            matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::EINVAL));
                        if zerocopy && refused && conn.state != State::Aborting {
                            // A socket that cannot send zero-copy (a Unix
                            // one): send it again, normally (it took none).
                            self.cache.zerocopy_refused(slot, conn.id.generation);
                            return;
                        }
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
}
