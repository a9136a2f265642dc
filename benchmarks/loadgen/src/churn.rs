//! `--churn`: new full TLS handshakes per second.
//!
//! Each of the `--conns` slots runs one cycle after another: a non-blocking
//! connect, a full TLS 1.3 handshake (the client never resumes), one
//! `--size`-byte message echoed and checked like any other, then
//! `close_notify` and close. A cycle is the "message" of this mode: it is
//! counted when its echo is complete, and its latency runs from the connect
//! to that echo. Cycle `k` of slot `i` uses connection id `k * conns + i`,
//! so every cycle's payload is its own.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::TcpStream;
use mio::{Interest, Poll, Token};

use crate::args::Mode;
use crate::conn::Conn;
use crate::tls::{self, Client, TlsStream};
use crate::Failure;

/// What every cycle shares.
pub struct Churn {
    pub client: Client,
    pub addr: SocketAddr,
    pub conns: usize,
    pub size: usize,
}

/// One slot's current cycle.
pub struct Slot {
    pub conn: Conn<TlsStream>,
    index: usize,
    cycle: u64,
    connected: bool,
    started: Instant,
}

impl Slot {
    /// Start cycle `cycle` of slot `index`: connect (non-blocking) and
    /// register the socket under `Token(index)`.
    pub fn open(ch: &Churn, poll: &Poll, index: usize, cycle: u64) -> Result<Slot, String> {
        let started = Instant::now();
        let mut sock = TcpStream::connect(ch.addr)
            .map_err(|e| format!("connect {} (slot {index}): {e}", ch.addr))?;
        poll.registry()
            .register(
                &mut sock,
                Token(index),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        let id = cycle * ch.conns as u64 + index as u64;
        let conn = Conn::new(ch.client.start(sock)?, id, Mode::Raw, ch.size, 1);
        Ok(Slot {
            conn,
            index,
            cycle,
            connected: false,
            started,
        })
    }

    /// The next cycle in this slot; the current connection is closed.
    pub fn reopen(&mut self, ch: &Churn, poll: &Poll) -> Result<(), String> {
        let next = Slot::open(ch, poll, self.index, self.cycle + 1)?;
        let mut old = std::mem::replace(self, next);
        let _ = poll.registry().deregister(&mut old.conn.stream.sock);
        Ok(())
    }
}

/// Advance a cycle; `Ok(true)` once its echo came back whole and
/// `close_notify` went out (the caller then reopens the slot).
pub fn pump(
    s: &mut Slot,
    buf: &mut [u8],
    plain: &mut [u8],
    record: &mut impl FnMut(Instant, Duration),
) -> Result<bool, Failure> {
    let fail = |what: &str, e: io::Error| Failure::Io(format!("{what}: {e}"));
    if !s.connected {
        let sock = &s.conn.stream.sock;
        if let Some(e) = sock.take_error().map_err(|e| fail("connect", e))? {
            return Err(fail("connect", e));
        }
        match sock.peer_addr() {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotConnected => return Ok(false),
            Err(e) => return Err(fail("connect", e)),
        }
        s.connected = true;
        sock.set_nodelay(true).map_err(|e| fail("TCP_NODELAY", e))?;
    }
    let handshaking = s.conn.stream.tls.is_handshaking();
    if tls::read_all(&mut s.conn, buf, plain, record)? > 0 {
        let stream = &mut s.conn.stream;
        stream.tls.send_close_notify();
        // NOTE: a socket too full for a 24-byte alert is not waited for:
        // the close follows either way.
        let _ = stream.push();
        return Ok(true);
    }
    if handshaking && !s.conn.stream.tls.is_handshaking() {
        s.conn.queue(1, s.started);
    }
    s.conn.flush().map_err(|e| fail("write", e))?;
    s.conn.stream.push().map_err(|e| fail("write", e))?;
    Ok(false)
}
