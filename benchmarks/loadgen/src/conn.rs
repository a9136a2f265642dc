//! One load-generating connection: what it has sent, what it expects back.
//!
//! Message `seq` of connection `id` has a payload fixed by `(id, seq)` alone
//! (printable bytes: the connection's body from a PRNG seeded by `id`, its
//! first 8 bytes stamped from `(id, seq)`), so any byte from another
//! connection, a reordering, a loss or a duplicate is caught. The body is made
//! once and copied per message, and echoes are compared with `memcmp`, so
//! large messages cost the load generator little more than the copies. The echo of a message is the
//! message itself in every mode (raw, length-prefixed, line), so one buffer
//! serves both ways: `window[head..sent]` was written and awaits its echo,
//! `window[sent..]` is queued and not yet written. Invariant:
//! `head <= sent <= window.len()` and `sent_at` holds one send time per
//! message not yet fully echoed, oldest first.
//!
//! The stream is a plain `TcpStream` or, with `--tls`, a `tls::TlsStream`
//! (whose `write` returns fewer bytes than asked only when the socket is full,
//! as a socket's does); the bookkeeping is the same.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::time::{Duration, Instant};

use mio::net::TcpStream;

use crate::args::Mode;

pub struct Conn<S = TcpStream> {
    pub stream: S,
    id: u64,
    mode: Mode,
    size: usize,
    wire_len: usize,
    /// The connection's payload body (`size` bytes), stamped per message.
    body: Vec<u8>,
    window: Vec<u8>,
    head: usize,
    sent: usize,
    next_seq: u64,
    recv_seq: u64,
    recv_off: usize,
    sent_at: VecDeque<Instant>,
    /// ws mode: the frames to write (`window` then holds the echoes
    /// expected, all counted as written) and how much of them is written.
    frames: Vec<u8>,
    frames_sent: usize,
}

const COMPACT_AFTER_BYTES: usize = 64 << 10;

impl<S: Write> Conn<S> {
    pub fn new(stream: S, id: u64, mode: Mode, size: usize, depth: usize) -> Self {
        let wire_len = mode.wire_len(size);
        let mut body = Vec::with_capacity(size);
        fill(&mut body, size, !id);
        Conn {
            body,
            stream,
            id,
            mode,
            size,
            wire_len,
            window: Vec::with_capacity(wire_len * depth),
            head: 0,
            sent: 0,
            next_seq: 0,
            recv_seq: 0,
            recv_off: 0,
            sent_at: VecDeque::with_capacity(depth),
            frames: Vec::new(),
            frames_sent: 0,
        }
    }

    /// Queue `n` new messages stamped with send time `now` (call `flush` next).
    pub fn queue(&mut self, n: usize, now: Instant) {
        for _ in 0..n {
            let seed = (self.id << 40) ^ self.next_seq;
            match self.mode {
                Mode::Raw | Mode::Udp => stamped(&mut self.window, &self.body, seed),
                Mode::Lp => {
                    let len = u32::try_from(self.size).expect("size is validated to fit u32");
                    self.window.extend_from_slice(&len.to_be_bytes());
                    stamped(&mut self.window, &self.body, seed);
                }
                Mode::Line => {
                    stamped(&mut self.window, &self.body[..self.size - 2], seed);
                    self.window.extend_from_slice(b"\r\n");
                }
                Mode::Ws => {
                    // A masked binary frame with a zero masking key (the
                    // payload goes as is); the echo is the server's frame.
                    ws_header(&mut self.frames, self.size, true);
                    stamped(&mut self.frames, &self.body, seed);
                    ws_header(&mut self.window, self.size, false);
                    stamped(&mut self.window, &self.body, seed);
                    self.sent = self.window.len();
                }
            }
            self.sent_at.push_back(now);
            self.next_seq += 1;
        }
    }

    /// Messages queued or sent whose echo is not complete yet.
    pub fn in_flight(&self) -> usize {
        self.sent_at.len()
    }

    /// The send time of the oldest message not fully echoed, if any.
    pub fn oldest(&self) -> Option<Instant> {
        self.sent_at.front().copied()
    }

    /// Write queued bytes until done or the socket buffer is full.
    pub fn flush(&mut self) -> io::Result<()> {
        if self.mode == Mode::Ws {
            return self.flush_frames();
        }
        while self.sent < self.window.len() {
            let want = self.window.len() - self.sent;
            match self.stream.write(&self.window[self.sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.sent += n;
                    if n < want {
                        // NOTE: a short write means the send buffer is full;
                        // mio (edge-triggered) reports writable when it drains.
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn flush_frames(&mut self) -> io::Result<()> {
        while self.frames_sent < self.frames.len() {
            match self.stream.write(&self.frames[self.frames_sent..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => self.frames_sent += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.frames.clear();
        self.frames_sent = 0;
        Ok(())
    }

    /// Check `data` (the next bytes the server sent) against what was sent.
    /// Calls `done(latency)` for every message whose last byte is in `data`
    /// and returns how many that was; a wrong byte is an `Err` describing it.
    pub fn on_data(
        &mut self,
        data: &[u8],
        now: Instant,
        mut done: impl FnMut(Duration),
    ) -> Result<usize, String> {
        let expected = &self.window[self.head..self.sent];
        if data.len() > expected.len() {
            return Err(format!(
                "connection {}: server sent {} bytes but only {} are awaiting their echo",
                self.id,
                data.len(),
                expected.len()
            ));
        }
        let same = data == &expected[..data.len()]; // memcmp; find the byte only on a mismatch
        if let Some(i) = (!same)
            .then(|| data.iter().zip(expected).position(|(a, b)| a != b))
            .flatten()
        {
            let at = self.recv_off + i;
            return Err(format!(
                "connection {}: echo mismatch in message {} at byte {} of {}: expected {:#04x}, got {:#04x}",
                self.id,
                self.recv_seq + (at / self.wire_len) as u64,
                at % self.wire_len,
                self.wire_len,
                expected[i],
                data[i]
            ));
        }
        self.head += data.len();
        self.recv_off += data.len();
        let mut completed = 0;
        while self.recv_off >= self.wire_len {
            self.recv_off -= self.wire_len;
            self.recv_seq += 1;
            let sent = self.sent_at.pop_front().expect("one send time per message");
            done(now.saturating_duration_since(sent));
            completed += 1;
        }
        self.compact();
        Ok(completed)
    }

    fn compact(&mut self) {
        if self.head == self.window.len() {
            self.window.clear();
            self.head = 0;
            self.sent = 0;
        } else if self.head >= COMPACT_AFTER_BYTES && self.head * 2 >= self.window.len() {
            self.window.drain(..self.head);
            self.sent -= self.head;
            self.head = 0;
        }
    }
}

/// Append a final binary frame's header for `size` payload bytes, masked
/// (by a zero key) as a client's or unmasked as a server's.
pub fn ws_header(out: &mut Vec<u8>, size: usize, masked: bool) {
    let mask = if masked { 0x80 } else { 0 };
    out.push(0x82);
    if size < 126 {
        out.push(mask | size as u8);
    } else {
        out.push(mask | 126);
        out.extend_from_slice(&(size as u16).to_be_bytes());
    }
    if masked {
        out.extend_from_slice(&[0; 4]);
    }
}

/// Append `body` with its first (up to) 8 bytes replaced by printable bytes
/// determined by `seed`.
pub fn stamped(out: &mut Vec<u8>, body: &[u8], seed: u64) {
    let start = out.len();
    out.extend_from_slice(body);
    let mut stamp = Vec::with_capacity(8);
    fill(&mut stamp, 8, seed);
    let n = body.len().min(8);
    out[start..start + n].copy_from_slice(&stamp[..n]);
}

/// Append `n` printable bytes (0x20..=0x5f, never CR or LF) determined by `seed`.
pub fn fill(out: &mut Vec<u8>, n: usize, seed: u64) {
    let start = out.len();
    out.resize(start + n, 0);
    let mut x = seed;
    for chunk in out[start..].chunks_mut(8) {
        x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = x;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        for (o, b) in chunk.iter_mut().zip(z.to_le_bytes()) {
            *o = 0x20 + (b & 0x3f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{fill, stamped};

    #[test]
    fn stamp_makes_messages_distinct() {
        let mut body = Vec::new();
        fill(&mut body, 100, 1);
        let (mut a, mut b) = (Vec::new(), Vec::new());
        stamped(&mut a, &body, 7);
        stamped(&mut b, &body, 8);
        assert_eq!(a.len(), 100);
        assert_eq!(a[8..], body[8..]);
        assert_ne!(a[..8], b[..8]);
        let mut short = Vec::new();
        stamped(&mut short, &body[..3], 7);
        assert_eq!(short, a[..3]);
    }

    #[test]
    fn payload_is_deterministic_printable_and_distinct() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        fill(&mut a, 100, 7);
        fill(&mut b, 100, 7);
        fill(&mut c, 100, 8);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().all(|&x| (0x20..=0x5f).contains(&x)));
    }
}
