//! `--reconnect-every K`: new plain TCP connections throughout the run,
//! and failures counted instead of fatal (for a server being reloaded).
//!
//! Each of the `--conns` slots runs one cycle after another: a non-blocking
//! connect, `K` messages echoed and checked at `--depth` (as in plain
//! mode), then a clean close and the next cycle's connect at once. Cycle
//! `k` of slot `i` uses connection id `k * conns + i`, so every cycle's
//! payloads are its own and a reply delivered to the wrong connection is a
//! mismatch.
//!
//! Nothing ends the run early; every failure is counted (see [`Counts`]),
//! the connection dropped, and the slot connects again at the next sweep
//! (every 10 ms, so a server that is down is not hammered):
//!
//! * `connect_failures`: the connect failed (refused, reset, no route) or
//!   was not established within `--timeout-ms`;
//! * `conns_broken` / `lost`: the server closed or reset a connection
//!   with messages in flight (queued or sent, echo not complete): those
//!   messages are lost;
//! * `closed_idle`: the server closed a connection with nothing in flight
//!   (no loss; the slot connects again at once);
//! * `corrupted`: an echo that differs from what was sent;
//! * `reply_timeouts`: a message in flight for `--timeout-ms` (its
//!   connection's messages in flight are added to `lost`).
//!
//! The counts cover the whole run, warm-up included (a reload is a
//! failure whenever it happens); messages and latencies are the measured
//! window's, as in every mode, and the timeline splits the window into
//! 100 ms buckets of `[messages, connects, failures]`, failures being
//! failed connects, broken, corrupted and timed-out connections.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use crate::args::Mode;
use crate::conn::Conn;
use crate::hist::Histogram;

/// Width of one timeline bucket.
pub const BUCKET: Duration = Duration::from_millis(100);
/// Failures described on stderr, at most (the counts go on).
const NOTES_MAX: u64 = 20;

/// What every cycle shares.
pub struct Recon {
    pub addr: SocketAddr,
    pub conns: usize,
    pub mode: Mode,
    pub size: usize,
    pub depth: usize,
    pub every: u64,
    pub timeout: Duration,
}

/// The failure counts and the timeline.
pub struct Counts {
    pub connects: u64,
    pub connect_failures: u64,
    pub closed_idle: u64,
    pub lost: u64,
    pub conns_broken: u64,
    pub corrupted: u64,
    pub reply_timeouts: u64,
    /// Connect (call to established) times of the measured window.
    pub connect_hist: Histogram,
    /// `[messages, connects, failures]` per `BUCKET` of the window.
    pub timeline: Vec<[u64; 3]>,
    /// The window: `(start, end)` once it started.
    window: Option<(Instant, Instant)>,
    notes: u64,
}

impl Counts {
    pub fn new() -> Self {
        Counts {
            connects: 0,
            connect_failures: 0,
            closed_idle: 0,
            lost: 0,
            conns_broken: 0,
            corrupted: 0,
            reply_timeouts: 0,
            connect_hist: Histogram::new(),
            timeline: Vec::new(),
            window: None,
            notes: 0,
        }
    }

    /// The measured window starts now and ends at `end`.
    pub fn measure(&mut self, start: Instant, end: Instant) {
        self.window = Some((start, end));
    }

    /// Pad the timeline to `window` (the buckets after the last event).
    pub fn finish(&mut self, window: Duration) {
        let n = window.as_nanos().div_ceil(BUCKET.as_nanos()) as usize;
        if self.timeline.len() < n {
            self.timeline.resize(n, [0; 3]);
        }
    }

    fn bump(&mut self, now: Instant, what: usize) {
        let Some((start, end)) = self.window else {
            return;
        };
        if now < start || now >= end {
            return;
        }
        let i = (now.duration_since(start).as_nanos() / BUCKET.as_nanos()) as usize;
        if self.timeline.len() <= i {
            self.timeline.resize(i + 1, [0; 3]);
        }
        self.timeline[i][what] += 1;
    }

    /// A message completed (the caller records its latency).
    pub fn message(&mut self, now: Instant) {
        self.bump(now, 0);
    }

    fn connected(&mut self, now: Instant, took: Duration) {
        self.connects += 1;
        if self.window.is_some_and(|(s, e)| now >= s && now < e) {
            self.connect_hist.record(took.as_nanos() as u64);
        }
        self.bump(now, 1);
    }

    fn failed(&mut self, now: Instant, slot: usize, msg: &str) {
        self.bump(now, 2);
        if self.notes < NOTES_MAX {
            eprintln!("netring-loadgen: slot {slot}: {msg}");
            self.notes += 1;
            if self.notes == NOTES_MAX {
                eprintln!("netring-loadgen: (further failures counted, not shown)");
            }
        }
    }
}

/// One slot's current cycle; `conn` is `None` between a failure and the
/// next sweep.
pub struct Slot {
    conn: Option<Conn>,
    index: usize,
    cycle: u64,
    connected: bool,
    started: Instant,
    /// Messages of this cycle queued so far, and echoed whole.
    queued: u64,
    done: u64,
}

impl Slot {
    /// Slot `index`, its first connect under way (or failed and counted).
    pub fn new(r: &Recon, poll: &Poll, index: usize, counts: &mut Counts) -> Slot {
        let mut s = Slot {
            conn: None,
            index,
            cycle: 0,
            connected: false,
            started: Instant::now(),
            queued: 0,
            done: 0,
        };
        s.open(r, poll, counts);
        s
    }

    /// Start the next cycle: connect (non-blocking) and register the socket
    /// under `Token(index)`; a connect that fails at once is counted and
    /// tried again at the next sweep.
    fn open(&mut self, r: &Recon, poll: &Poll, counts: &mut Counts) {
        self.close(poll);
        let cycle = self.cycle;
        self.cycle += 1;
        self.connected = false;
        self.started = Instant::now();
        self.queued = 0;
        self.done = 0;
        let mut sock = match TcpStream::connect(r.addr) {
            Ok(s) => s,
            Err(e) => return self.connect_failed(counts, &e.to_string()),
        };
        if let Err(e) = poll.registry().register(
            &mut sock,
            Token(self.index),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            return self.connect_failed(counts, &format!("register: {e}"));
        }
        let id = cycle * r.conns as u64 + self.index as u64;
        self.conn = Some(Conn::new(sock, id, r.mode, r.size, r.depth));
    }

    /// Drop the connection (a clean close: everything sent was read).
    pub fn close(&mut self, poll: &Poll) {
        if let Some(mut c) = self.conn.take() {
            let _ = poll.registry().deregister(&mut c.stream);
        }
    }

    fn connect_failed(&mut self, counts: &mut Counts, msg: &str) {
        counts.connect_failures += 1;
        counts.failed(Instant::now(), self.index, &format!("connect: {msg}"));
    }

    /// The connection ended on the server's side (`why`): lost messages if
    /// any were in flight.
    fn ended(&mut self, poll: &Poll, counts: &mut Counts, why: &str) {
        let in_flight = self.conn.as_ref().map_or(0, |c| c.in_flight()) as u64;
        self.close(poll);
        if in_flight == 0 {
            counts.closed_idle += 1;
            return;
        }
        counts.conns_broken += 1;
        counts.lost += in_flight;
        let msg = format!("{why} with {in_flight} message(s) in flight");
        counts.failed(Instant::now(), self.index, &msg);
    }

    /// Handle readiness: finish the connect, read and check echoes, queue
    /// the cycle's next messages, write; close and reconnect when the cycle
    /// is done.
    pub fn pump(
        &mut self,
        r: &Recon,
        poll: &Poll,
        counts: &mut Counts,
        buf: &mut [u8],
        record: &mut impl FnMut(Instant, Duration),
    ) {
        let Some(c) = self.conn.as_mut() else { return };
        if !self.connected {
            let sock = &c.stream;
            let err = match sock.take_error() {
                Ok(e) => e,
                Err(e) => Some(e),
            };
            if let Some(e) = err {
                self.close(poll);
                return self.connect_failed(counts, &e.to_string());
            }
            match sock.peer_addr() {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotConnected => return,
                Err(e) => {
                    self.close(poll);
                    return self.connect_failed(counts, &e.to_string());
                }
            }
            let now = Instant::now();
            self.connected = true;
            counts.connected(now, now.saturating_duration_since(self.started));
            let _ = sock.set_nodelay(true);
            let n = (r.depth as u64).min(r.every);
            c.queue(n as usize, now);
            self.queued = n;
        }
        let mut completed = 0u64;
        // NOTE: unlike `main::pump`, read until EAGAIN or EOF: a FIN that
        // came with the last bytes raises no further edge, and a close must
        // not go unseen here.
        let closed = loop {
            match c.stream.read(buf) {
                Ok(0) => break Some("server closed the connection".to_string()),
                Ok(n) => {
                    let now = Instant::now();
                    let got = c.on_data(&buf[..n], now, |lat| {
                        record(now, lat);
                        counts.message(now);
                    });
                    match got {
                        Ok(k) => completed += k as u64,
                        Err(msg) => {
                            self.close(poll);
                            counts.corrupted += 1;
                            return counts.failed(now, self.index, &msg);
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break None,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(format!("read: {e}")),
            }
        };
        self.done += completed;
        if self.done >= r.every {
            return self.open(r, poll, counts); // closes this one first
        }
        if let Some(why) = closed {
            return self.ended(poll, counts, &why);
        }
        let more = completed.min(r.every - self.queued);
        if more > 0 {
            c.queue(more as usize, Instant::now());
            self.queued += more;
        }
        if let Err(e) = c.flush() {
            self.ended(poll, counts, &format!("write: {e}"));
        }
    }

    /// Every `SWEEP_EVERY`: reconnect a slot that failed; fail a connect or
    /// an echo older than `--timeout-ms`.
    pub fn sweep(&mut self, r: &Recon, poll: &Poll, counts: &mut Counts, now: Instant) {
        let Some(c) = self.conn.as_ref() else {
            return self.open(r, poll, counts);
        };
        if !self.connected {
            if now.saturating_duration_since(self.started) >= r.timeout {
                self.close(poll);
                let msg = format!("not established within {:?}", r.timeout);
                self.connect_failed(counts, &msg);
            }
            return;
        }
        let Some(oldest) = c.oldest() else { return };
        if now.saturating_duration_since(oldest) >= r.timeout {
            let in_flight = c.in_flight() as u64;
            self.close(poll);
            counts.reply_timeouts += 1;
            counts.lost += in_flight;
            let msg = format!(
                "no complete echo within {:?}: {in_flight} message(s) in flight dropped",
                r.timeout
            );
            counts.failed(now, self.index, &msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{Counts, BUCKET};
    use crate::args::Opts;
    use std::time::{Duration, Instant};

    #[test]
    fn timeline_counts_the_window_only_and_is_padded_to_it() {
        let mut c = Counts::new();
        let t0 = Instant::now();
        c.message(t0); // before the window: not in the timeline
        c.measure(t0, t0 + 5 * BUCKET);
        c.message(t0);
        c.message(t0 + BUCKET + Duration::from_millis(1));
        c.failed(t0 + BUCKET, 0, "test");
        c.message(t0 + 5 * BUCKET); // the window's end: out
        c.finish(5 * BUCKET + Duration::from_millis(1));
        assert_eq!(
            c.timeline,
            vec![[1, 0, 0], [1, 0, 1], [0; 3], [0; 3], [0; 3], [0; 3]]
        );
    }

    #[test]
    fn timeout_defaults_by_mode_and_modes_are_checked() {
        let parse = |a: &[&str]| Opts::parse(a.iter().map(|s| s.to_string()));
        let o = parse(&["--port", "1", "--reconnect-every", "5"]).unwrap();
        assert_eq!(
            (o.reconnect_every, o.timeout),
            (Some(5), Duration::from_secs(2))
        );
        let o = parse(&["--port", "1", "--mode", "udp"]).unwrap();
        assert_eq!(o.timeout, Duration::from_millis(200));
        assert!(parse(&["--port", "1", "--reconnect-every", "5", "--mode", "ws"]).is_err());
        assert!(parse(&["--port", "1", "--reconnect-every", "0"]).is_err());
    }
}
