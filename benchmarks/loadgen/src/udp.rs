//! One load-generating UDP socket, `connect()`ed to the server.
//!
//! Datagram `seq` of socket `id` is `size` bytes: `seq` as 8 little-endian
//! bytes, then printable bytes fixed by `(id, seq)` (the same generator as the
//! TCP modes), so a datagram meant for another socket, a corrupted byte, a
//! wrong length or a duplicate is caught. UDP may drop datagrams, and replies
//! may come back out of order: a datagram with no reply after `timeout` is
//! counted as lost and replaced by a new one, so the closed loop never stalls;
//! a reply that arrives after that is still checked byte for byte and counted
//! as late. Invariant: `outstanding` holds one entry per datagram queued or
//! sent and not yet answered or declared lost, in send order, and
//! `outstanding[..unsent_from]` have been sent.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;

use crate::conn::fill;

/// Datagram `seq` of socket `id`, `size` bytes, into `out` (cleared first).
fn build(out: &mut Vec<u8>, id: u64, size: usize, seq: u64) {
    out.clear();
    out.extend_from_slice(&seq.to_le_bytes());
    fill(out, size - HEADER_BYTES, (id << 40) ^ seq);
}

/// Bytes of the sequence-number header at the start of every datagram.
pub const HEADER_BYTES: usize = 8;

pub struct UdpConn {
    pub socket: UdpSocket,
    id: u64,
    size: usize,
    next_seq: u64,
    /// `(seq, queued at)` of every datagram awaiting its reply, oldest first.
    outstanding: VecDeque<(u64, Instant)>,
    /// `outstanding[..unsent_from]` went out; the rest wait for the socket.
    unsent_from: usize,
    /// Sequence numbers declared lost whose reply has not come (yet).
    lost: HashSet<u64>,
    scratch: Vec<u8>,
}

/// What one batch of replies did.
#[derive(Default)]
pub struct Tally {
    pub completed: usize,
    pub late: u64,
}

impl UdpConn {
    pub fn new(socket: UdpSocket, id: u64, size: usize, depth: usize) -> Self {
        UdpConn {
            socket,
            id,
            size,
            next_seq: 0,
            outstanding: VecDeque::with_capacity(depth),
            unsent_from: 0,
            lost: HashSet::new(),
            scratch: Vec::with_capacity(size),
        }
    }

    /// Queue `n` new datagrams stamped with `now` (call `flush` next).
    pub fn queue(&mut self, n: usize, now: Instant) {
        for _ in 0..n {
            self.outstanding.push_back((self.next_seq, now));
            self.next_seq += 1;
        }
    }

    /// Send queued datagrams until done or the socket buffer is full.
    pub fn flush(&mut self) -> io::Result<()> {
        while self.unsent_from < self.outstanding.len() {
            let seq = self.outstanding[self.unsent_from].0;
            let size = self.size;
            build(&mut self.scratch, self.id, size, seq);
            match self.socket.send(&self.scratch) {
                Ok(n) if n == size => self.unsent_from += 1,
                Ok(n) => return Err(io::Error::other(format!("sent {n} of {size} bytes"))),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                // NOTE: ENOBUFS is the kernel dropping the datagram on the
                // way out; treat it as sent, the timeout will count it lost.
                Err(e) if e.raw_os_error() == Some(105) => self.unsent_from += 1,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Check one received datagram. Calls `done(latency)` for an answered
    /// outstanding datagram; a wrong, unknown or duplicate datagram is an
    /// `Err` describing it.
    pub fn on_datagram(
        &mut self,
        data: &[u8],
        now: Instant,
        tally: &mut Tally,
        done: impl FnOnce(Duration),
    ) -> Result<(), String> {
        let id = self.id;
        if data.len() < HEADER_BYTES {
            return Err(format!(
                "socket {id}: a {}-byte reply; datagrams are {} bytes",
                data.len(),
                self.size
            ));
        }
        let seq = u64::from_le_bytes(data[..HEADER_BYTES].try_into().expect("8 bytes"));
        if seq >= self.next_seq {
            return Err(format!(
                "socket {id}: reply with sequence number {seq}, never sent (next is {})",
                self.next_seq
            ));
        }
        let size = self.size;
        build(&mut self.scratch, id, size, seq);
        let expected = &self.scratch;
        if data.len() != size {
            return Err(format!(
                "socket {id}: reply to datagram {seq} has {} bytes, sent {size}",
                data.len()
            ));
        }
        if let Some(i) = data.iter().zip(expected).position(|(a, b)| a != b) {
            return Err(format!(
                "socket {id}: echo mismatch in datagram {seq} at byte {i} of {size}: expected {:#04x}, got {:#04x}",
                expected[i], data[i]
            ));
        }
        if let Some(pos) = self.outstanding.iter().position(|&(s, _)| s == seq) {
            if pos >= self.unsent_from {
                return Err(format!(
                    "socket {id}: reply to datagram {seq} before it was sent"
                ));
            }
            let (_, sent) = self.outstanding.remove(pos).expect("position is in range");
            self.unsent_from -= 1;
            done(now.saturating_duration_since(sent));
            tally.completed += 1;
            return Ok(());
        }
        if self.lost.remove(&seq) {
            tally.late += 1;
            return Ok(());
        }
        Err(format!("socket {id}: a second reply to datagram {seq}"))
    }

    /// Declare lost every datagram outstanding for longer than `timeout`;
    /// returns how many.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> usize {
        let mut n = 0;
        // NOTE: datagrams are queued in time order, so the expired ones are a
        // prefix of `outstanding`; all of them were sent unless the socket has
        // been unwritable for the whole timeout.
        while let Some(&(seq, at)) = self.outstanding.front() {
            if now.saturating_duration_since(at) < timeout {
                break;
            }
            self.outstanding.pop_front();
            self.unsent_from = self.unsent_from.saturating_sub(1);
            self.lost.insert(seq);
            n += 1;
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(size: usize) -> UdpConn {
        let socket = UdpSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        UdpConn::new(socket, 3, size, 4)
    }

    fn dgram(id: u64, size: usize, seq: u64) -> Vec<u8> {
        let mut v = Vec::new();
        build(&mut v, id, size, seq);
        v
    }

    #[test]
    fn replies_in_any_order_late_and_wrong() {
        let mut c = conn(32);
        let t0 = Instant::now();
        c.queue(3, t0);
        c.unsent_from = 3; // as if flushed
        let mut tally = Tally::default();
        let mut lats = 0;
        c.on_datagram(&dgram(3, 32, 1), t0, &mut tally, |_| lats += 1)
            .unwrap();
        assert_eq!((tally.completed, lats, c.unsent_from), (1, 1, 2));
        // a second reply to the same datagram
        assert!(c
            .on_datagram(&dgram(3, 32, 1), t0, &mut tally, |_| ())
            .is_err());
        // never sent
        assert!(c
            .on_datagram(&dgram(3, 32, 9), t0, &mut tally, |_| ())
            .is_err());
        // another socket's datagram with the same sequence number
        assert!(c
            .on_datagram(&dgram(4, 32, 0), t0, &mut tally, |_| ())
            .is_err());
        // one corrupted byte, and a short reply
        let mut bad = dgram(3, 32, 0);
        bad[20] ^= 1;
        assert!(c.on_datagram(&bad, t0, &mut tally, |_| ()).is_err());
        assert!(c.on_datagram(&bad[..31], t0, &mut tally, |_| ()).is_err());
        // datagrams 0 and 2 time out; 0 comes back late
        let later = t0 + Duration::from_millis(300);
        assert_eq!(c.expire(later, Duration::from_millis(200)), 2);
        assert_eq!((c.outstanding.len(), c.unsent_from), (0, 0));
        c.on_datagram(&dgram(3, 32, 0), later, &mut tally, |_| ())
            .unwrap();
        assert_eq!((tally.completed, tally.late), (1, 1));
    }
}
