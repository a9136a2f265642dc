//! Deadlines coming due: user timers, idle checks, abort and linger
//! deadlines, frame and connect timeouts, the trim tick.

use std::time::Instant;

use super::{Ev, ThreadCore};
use crate::conn::{ConnError, State};
use crate::timer::Due;

impl ThreadCore {
    /// Turn every deadline due by `now` into events.
    pub(crate) fn fire_timers(&mut self, now: Instant) {
        while let Some(due) = self.timers.pop_due(now) {
            match due {
                Due::User(id) => self.q.events.push_back(Ev::Timer { id }),
                Due::TrimSpares => {
                    self.trim_scheduled = false;
                    self.trim_due = true;
                }
                Due::Idle(id) => {
                    let Some(conn) = self.conns.get_mut(id) else {
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
                        self.q.events.push_back(Ev::IdleTimeout { conn: id });
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
                    let Some(conn) = self.conns.get_mut(id) else {
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
                    crate::stats::Stats::add(&self.engine.stats.frame_timeouts, 1);
                    conn.begin_abort(
                        Some(ConnError::Limit(crate::conn::LimitError::FrameTimeout {
                            timeout,
                        })),
                        false,
                    );
                    Self::mark_dirty(&mut self.dirty, conn);
                }
                Due::LayerDeadline(id) => self.layer_deadline(id),
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
}
