//! `netring-loadgen`: a closed-loop echo load generator on one thread (mio).
//!
//! It opens `--conns` connections, keeps `--depth` messages outstanding on
//! each, and sends a new message whenever one is fully echoed. Every echoed
//! byte is checked against what was sent (see `conn`); a mismatch aborts with
//! exit status 2. After `--warmup` it prints `MEASURE_START` on stderr, counts
//! messages completed and their latencies (send → last echoed byte) for
//! `--duration`, prints `MEASURE_END`, and writes one JSON line on stdout.
//! With `--server-pid` it reads that process's utime+stime at both edges (and
//! with `--extra-pid` another's, e.g. the upstream behind a proxy); it also
//! reads its own and the whole machine's busy time there.
//!
//! `--mode udp` uses `--conns` UDP sockets, each `connect()`ed to the server,
//! instead (see `udp`): a datagram without a reply after `--timeout-ms` is
//! counted as lost and replaced; `lost` and `late` (replies that came after
//! their datagram was declared lost) are reported in the JSON.
//!
//! `--tls` speaks TLS 1.3 on the same connections (see `tls`): each one
//! completes its handshake before the warm-up starts (counted and timed on
//! their own: `handshakes`, `handshake_ms`, `handshake_p50_us`, ...), and the
//! plaintext is checked byte for byte as in plain mode. `--churn` measures new
//! handshakes per second instead (see `churn`). Without `--tls` none of this
//! is on the path.
//!
//! `--reconnect-every K` (plain TCP: raw, lp, line) opens new connections
//! throughout instead: each slot has `K` messages echoed on a connection,
//! closes it and connects again (see `reconnect`). Failures there are counted
//! (`connects`, `connect_failures`, `lost`, `conns_broken`, `closed_idle`,
//! `corrupted`, `reply_timeouts`), not fatal, and the JSON has a `timeline`
//! of `[messages, connects, failures]` per 100 ms of the window: for a server
//! reloaded under load. A mismatch there is counted, not exit status 2.
//!
//! Exit status: 0 ok; 1 no message measured, a connection failed, or setup
//! failed; 2 echo mismatch; 3 hard deadline hit; 64 bad usage. A watchdog
//! thread bounds the whole run even if a connect or the server stalls.

mod args;
mod churn;
mod conn;
mod hist;
mod reconnect;
mod tls;
mod udp;

use std::io::{self, Read};
use std::net::{SocketAddr, TcpStream as StdStream, ToSocketAddrs, UdpSocket as StdUdp};
use std::process::exit;
use std::thread;
use std::time::{Duration, Instant};

use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};

use args::{Mode, Opts};
use churn::{Churn, Slot};
use conn::Conn;
use hist::Histogram;
use reconnect::{Counts, Recon};
use tls::TlsStream;
use udp::{Tally, UdpConn};

const CONNECT_BUDGET: Duration = Duration::from_secs(5);
const DEADLINE_SLACK: Duration = Duration::from_secs(5);
const READ_BUF_BYTES: usize = 64 << 10;
/// How often unanswered UDP datagrams are checked against `--timeout-ms`.
const SWEEP_EVERY: Duration = Duration::from_millis(10);
/// /proc reports utime/stime in USER_HZ ticks: 100 per second on Linux x86 and Arm.
const USEC_PER_TICK: f64 = 10_000.0;

fn main() {
    let opts = match Opts::parse(std::env::args().skip(1)) {
        Ok(o) => o,
        Err(msg) => {
            if !msg.is_empty() {
                eprintln!("netring-loadgen: {msg}");
            }
            eprint!("{}", args::USAGE);
            exit(if msg.is_empty() { 0 } else { 64 });
        }
    };
    let hard = CONNECT_BUDGET + opts.warmup + opts.duration + DEADLINE_SLACK;
    thread::spawn(move || {
        thread::sleep(hard);
        eprintln!("netring-loadgen: hard deadline of {hard:?} passed; giving up");
        exit(3);
    });
    if let Err((code, msg)) = run(&opts) {
        eprintln!("netring-loadgen: {msg}");
        exit(code);
    }
}

/// What the measured window saw.
struct Stats {
    hist: Histogram,
    errors: u64,
    window: Duration,
    server_ticks: Option<u64>,
    extra_ticks: Option<u64>,
    self_ticks: Option<u64>,
    machine_ticks: Option<u64>,
    lost: u64,
    late: u64,
    /// `--reconnect-every`: its counts and timeline.
    recon: Option<Counts>,
}

/// The handshakes done before the warm-up (`--tls`, not `--churn`).
struct Handshakes {
    each: Vec<Duration>,
    wall: Duration,
}

/// One load-generating connection or connected UDP socket.
enum Peer {
    Tcp(Conn),
    Udp(UdpConn),
    Tls(Conn<TlsStream>),
    Churn(Slot),
    Recon(reconnect::Slot),
}

impl Peer {
    fn queue(&mut self, n: usize, now: Instant) {
        match self {
            Peer::Tcp(c) => c.queue(n, now),
            Peer::Udp(u) => u.queue(n, now),
            Peer::Tls(c) => c.queue(n, now),
            Peer::Churn(_) => {} // a cycle queues its one message after its handshake
            Peer::Recon(_) => {} // a cycle queues its messages once connected
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        match self {
            Peer::Tcp(c) => c.flush(),
            Peer::Udp(u) => u.flush(),
            Peer::Tls(c) => c.flush(),
            Peer::Churn(_) | Peer::Recon(_) => Ok(()),
        }
    }

    fn deregister(&mut self, poll: &Poll) {
        let _ = match self {
            Peer::Tcp(c) => poll.registry().deregister(&mut c.stream),
            Peer::Udp(u) => poll.registry().deregister(&mut u.socket),
            Peer::Tls(c) => poll.registry().deregister(&mut c.stream.sock),
            Peer::Churn(s) => poll.registry().deregister(&mut s.conn.stream.sock),
            Peer::Recon(s) => {
                s.close(poll);
                Ok(())
            }
        };
    }
}

/// Failed reads and writes (the connection is dropped and counted) and
/// wrong echoes (the run aborts).
enum Failure {
    Mismatch(String),
    Io(String),
}

fn run(o: &Opts) -> Result<(), (i32, String)> {
    let fail = |msg: String| (1, msg);
    let addr = (o.host.as_str(), o.port)
        .to_socket_addrs()
        .map_err(|e| fail(format!("cannot resolve {}:{}: {e}", o.host, o.port)))?
        .next()
        .ok_or_else(|| fail(format!("{} resolves to nothing", o.host)))?;
    let mut poll = Poll::new().map_err(|e| fail(format!("epoll: {e}")))?;
    let connect_deadline = Instant::now() + CONNECT_BUDGET;
    let client = match (&o.tls_ca, o.tls) {
        (Some(ca), true) => {
            let name = o.tls_server_name.as_deref().unwrap_or(&o.host);
            Some(tls::Client::new(ca, name).map_err(fail)?)
        }
        _ => None,
    };
    let (mut conns, mut churn, mut handshakes) = (Vec::new(), None, None);
    let mut recon = None;
    match client {
        Some(client) if o.churn => {
            let ch = Churn {
                client,
                addr,
                conns: o.conns,
                size: o.size,
            };
            for i in 0..o.conns {
                conns.push(Some(Peer::Churn(
                    Slot::open(&ch, &poll, i, 0).map_err(fail)?,
                )));
            }
            churn = Some(ch);
        }
        Some(client) => {
            conns = connect_all(o, addr, &poll, Some(&client)).map_err(fail)?;
            handshakes = Some(handshake_all(&mut poll, &mut conns, connect_deadline)?);
        }
        None => match o.reconnect_every {
            Some(every) => {
                let r = Recon {
                    addr,
                    conns: o.conns,
                    mode: o.mode,
                    size: o.size,
                    depth: o.depth,
                    every,
                    timeout: o.timeout,
                };
                let mut counts = Counts::new();
                for i in 0..o.conns {
                    let slot = reconnect::Slot::new(&r, &poll, i, &mut counts);
                    conns.push(Some(Peer::Recon(slot)));
                }
                recon = Some((r, counts));
            }
            None => conns = connect_all(o, addr, &poll, None).map_err(fail)?,
        },
    }

    let start = Instant::now();
    for c in conns.iter_mut().flatten() {
        c.queue(o.depth, start);
        c.flush().map_err(|e| fail(format!("first write: {e}")))?;
    }
    let stats = drive(o, &mut poll, &mut conns, start, churn.as_ref(), recon)?;
    report(o, &stats, handshakes.as_ref());
    if stats.hist.count() == 0 {
        return Err(fail("no message completed in the measured window".into()));
    }
    if stats.errors > 0 {
        return Err(fail(format!("{} connection(s) failed", stats.errors)));
    }
    Ok(())
}

fn connect_all(
    o: &Opts,
    addr: SocketAddr,
    poll: &Poll,
    client: Option<&tls::Client>,
) -> Result<Vec<Option<Peer>>, String> {
    if o.mode == Mode::Udp {
        return open_udp(o, addr, poll);
    }
    let deadline = Instant::now() + CONNECT_BUDGET;
    let mut conns = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("connecting took over {CONNECT_BUDGET:?}"));
        }
        let s = StdStream::connect_timeout(&addr, left)
            .map_err(|e| format!("connect {addr} (connection {i}): {e}"))?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        if o.proxy_v2 {
            use std::io::Write;
            (&s).write_all(&proxy_v2_header(i, addr))
                .map_err(|e| format!("PROXY header (connection {i}): {e}"))?;
        }
        if o.mode == Mode::Ws {
            ws_upgrade(&s, addr, left).map_err(|e| format!("upgrade (connection {i}): {e}"))?;
        }
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut stream = TcpStream::from_std(s);
        poll.registry()
            .register(
                &mut stream,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        let peer = match client {
            None => Peer::Tcp(Conn::new(stream, i as u64, o.mode, o.size, o.depth)),
            Some(client) => Peer::Tls(Conn::new(
                client.start(stream)?,
                i as u64,
                o.mode,
                o.size,
                o.depth,
            )),
        };
        conns.push(Some(peer));
    }
    Ok(conns)
}

/// A PROXY protocol v2 header for connection `i`: PROXY, TCP over IPv4,
/// from 203.0.113.(i % 250 + 1):(10000 + i) to `addr` (or 127.0.0.1).
fn proxy_v2_header(i: usize, addr: SocketAddr) -> Vec<u8> {
    let mut h = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    h.extend_from_slice(&[0x21, 0x11, 0, 12]);
    h.extend_from_slice(&[203, 0, 113, (i % 250 + 1) as u8]);
    let dst = match addr {
        SocketAddr::V4(a) => a.ip().octets(),
        SocketAddr::V6(_) => [127, 0, 0, 1],
    };
    h.extend_from_slice(&dst);
    h.extend_from_slice(&((10000 + i % 50000) as u16).to_be_bytes());
    h.extend_from_slice(&addr.port().to_be_bytes());
    h
}

/// Upgrade a blocking connection to WebSocket: send the request, read the
/// response head (up to its blank line, nothing after it) and require 101.
fn ws_upgrade(s: &StdStream, addr: SocketAddr, budget: Duration) -> Result<(), String> {
    use std::io::{Read, Write};
    let request = format!(
        "GET / HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    );
    s.set_read_timeout(Some(budget.max(Duration::from_millis(1))))
        .map_err(|e| e.to_string())?;
    (&*s)
        .write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 8192 {
            return Err("response head over 8 KiB".into());
        }
        match (&*s).read(&mut byte) {
            Ok(0) => return Err("closed during the upgrade".into()),
            Ok(_) => head.push(byte[0]),
            Err(e) => return Err(e.to_string()),
        }
    }
    if !head.starts_with(b"HTTP/1.1 101") {
        let line = head.split(|&b| b == b'\r').next().unwrap_or_default();
        return Err(format!(
            "expected 101, got {:?}",
            String::from_utf8_lossy(line)
        ));
    }
    s.set_read_timeout(None).map_err(|e| e.to_string())
}

/// Complete every connection's TLS handshake, all at once, before the
/// warm-up; a connection that fails it fails the run.
fn handshake_all(
    poll: &mut Poll,
    conns: &mut [Option<Peer>],
    deadline: Instant,
) -> Result<Handshakes, (i32, String)> {
    let start = Instant::now();
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let mut plain = vec![0u8; READ_BUF_BYTES];
    let mut each = vec![None; conns.len()];
    let mut advance = |i: usize, c: &mut Conn<TlsStream>, each: &mut [Option<Duration>]| {
        match tls::handshake(c, &mut buf, &mut plain) {
            Ok(true) => each[i] = Some(start.elapsed()),
            Ok(false) => {}
            Err(Failure::Io(msg) | Failure::Mismatch(msg)) => {
                return Err((1, format!("TLS handshake (connection {i}): {msg}")));
            }
        }
        Ok(())
    };
    for (i, c) in conns.iter_mut().enumerate() {
        if let Some(Peer::Tls(c)) = c {
            advance(i, c, &mut each)?;
        }
    }
    let mut events = Events::with_capacity(1024);
    while each.iter().any(Option::is_none) {
        let now = Instant::now();
        if now >= deadline {
            let left = each.iter().filter(|d| d.is_none()).count();
            return Err((
                1,
                format!("{left} TLS handshake(s) still open after {CONNECT_BUDGET:?}"),
            ));
        }
        match poll.poll(&mut events, Some(deadline - now)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((1, format!("epoll_wait: {e}"))),
        }
        for ev in events.iter() {
            let Token(i) = ev.token();
            if let (Some(Peer::Tls(c)), None) = (&mut conns[i], each[i]) {
                advance(i, c, &mut each)?;
            }
        }
    }
    Ok(Handshakes {
        each: each.into_iter().flatten().collect(),
        wall: start.elapsed(),
    })
}

fn open_udp(o: &Opts, addr: SocketAddr, poll: &Poll) -> Result<Vec<Option<Peer>>, String> {
    let local: SocketAddr = if addr.is_ipv4() {
        "0.0.0.0:0".parse().expect("literal")
    } else {
        "[::]:0".parse().expect("literal")
    };
    let mut conns = Vec::with_capacity(o.conns);
    for i in 0..o.conns {
        let s = StdUdp::bind(local).map_err(|e| format!("bind UDP socket {i}: {e}"))?;
        s.connect(addr)
            .map_err(|e| format!("connect UDP socket {i} to {addr}: {e}"))?;
        s.set_nonblocking(true).map_err(|e| e.to_string())?;
        let mut socket = UdpSocket::from_std(s);
        poll.registry()
            .register(
                &mut socket,
                Token(i),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        conns.push(Some(Peer::Udp(UdpConn::new(
            socket, i as u64, o.size, o.depth,
        ))));
    }
    Ok(conns)
}

/// The event loop: runs until the window ends or every connection failed.
fn drive(
    o: &Opts,
    poll: &mut Poll,
    conns: &mut [Option<Peer>],
    start: Instant,
    churn: Option<&Churn>,
    mut recon: Option<(Recon, Counts)>,
) -> Result<Stats, (i32, String)> {
    let warm_end = start + o.warmup;
    let end = warm_end + o.duration;
    let server_pid = o.server_pid.map(|p| p.to_string());
    let extra_pid = o.extra_pid.map(|p| p.to_string());
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; READ_BUF_BYTES];
    let mut plain = if o.tls {
        vec![0u8; READ_BUF_BYTES]
    } else {
        Vec::new()
    };
    let mut hist = Histogram::new();
    let (mut errors, mut alive) = (0, conns.len());
    let mut measuring = false;
    let (mut server0, mut extra0, mut self0, mut machine0) = (None, None, None, None);
    let mut measured_from = warm_end;
    let (mut lost, mut late) = (0, 0);
    let udp = o.mode == Mode::Udp;
    let sweeping = udp || recon.is_some();
    let mut next_sweep = start + SWEEP_EVERY;

    loop {
        let now = Instant::now();
        if !measuring && now >= warm_end {
            measuring = true;
            measured_from = now;
            server0 = server_pid.as_deref().and_then(cpu_ticks);
            extra0 = extra_pid.as_deref().and_then(cpu_ticks);
            self0 = cpu_ticks("self");
            machine0 = machine_busy_ticks();
            if let Some((_, counts)) = recon.as_mut() {
                counts.measure(now, end);
            }
            eprintln!("MEASURE_START");
        }
        if now >= end || alive == 0 {
            let server1 = server_pid.as_deref().and_then(cpu_ticks);
            let extra1 = extra_pid.as_deref().and_then(cpu_ticks);
            let self1 = cpu_ticks("self");
            let machine1 = machine_busy_ticks();
            eprintln!("MEASURE_END");
            let delta = |a: Option<u64>, b: Option<u64>| Some(b?.saturating_sub(a?));
            let window = now.saturating_duration_since(measured_from);
            let recon = recon.map(|(_, mut counts)| {
                counts.finish(window);
                counts
            });
            return Ok(Stats {
                hist,
                errors,
                window,
                server_ticks: delta(server0, server1),
                extra_ticks: delta(extra0, extra1),
                self_ticks: delta(self0, self1),
                machine_ticks: delta(machine0, machine1),
                lost,
                late,
                recon,
            });
        }
        let counting = measuring && now < end;
        if udp && now >= next_sweep {
            next_sweep = now + SWEEP_EVERY;
            for (i, slot) in conns.iter_mut().enumerate() {
                let Some(Peer::Udp(u)) = slot else { continue };
                let n = u.expire(now, o.timeout);
                if n == 0 {
                    continue;
                }
                lost += if counting { n as u64 } else { 0 };
                u.queue(n, now);
                if let Err(e) = u.flush() {
                    eprintln!("netring-loadgen: socket {i}: send: {e}");
                    errors += 1;
                    alive -= 1;
                    if let Some(mut c) = slot.take() {
                        c.deregister(poll);
                    }
                }
            }
        }
        if let Some((r, counts)) = recon.as_mut().filter(|_| now >= next_sweep) {
            next_sweep = now + SWEEP_EVERY;
            for slot in conns.iter_mut() {
                if let Some(Peer::Recon(s)) = slot {
                    s.sweep(r, poll, counts, now);
                }
            }
        }
        let mut edge = if measuring { end } else { warm_end };
        if sweeping {
            edge = edge.min(next_sweep);
        }
        match poll.poll(&mut events, Some(edge.saturating_duration_since(now))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err((1, format!("epoll_wait: {e}"))),
        }
        for ev in events.iter() {
            let Token(i) = ev.token();
            let Some(c) = conns[i].as_mut() else { continue };
            let mut record = |now: Instant, lat: Duration| {
                if measuring && now < end {
                    hist.record(lat.as_nanos() as u64);
                }
            };
            let outcome = match c {
                Peer::Tcp(c) => pump(c, &mut buf, &mut record),
                Peer::Udp(u) => {
                    let mut tally = Tally::default();
                    let r = pump_udp(u, &mut buf, &mut tally, &mut record);
                    if measuring && Instant::now() < end {
                        late += tally.late;
                    }
                    r
                }
                Peer::Tls(c) => tls::pump(c, &mut buf, &mut plain, &mut record),
                Peer::Recon(s) => {
                    let (r, counts) = recon.as_mut().expect("reconnect slots come with settings");
                    s.pump(r, poll, counts, &mut buf, &mut record);
                    Ok(())
                }
                Peer::Churn(s) => match churn::pump(s, &mut buf, &mut plain, &mut record) {
                    Ok(true) => {
                        let ch = churn.expect("churn slots come with their settings");
                        s.reopen(ch, poll).map_err(Failure::Io)
                    }
                    Ok(false) => Ok(()),
                    Err(e) => Err(e),
                },
            };
            if let Err(Failure::Mismatch(msg)) = outcome {
                return Err((2, msg));
            }
            if let Err(Failure::Io(msg)) = outcome {
                eprintln!("netring-loadgen: connection {i}: {msg}");
                errors += 1;
                alive -= 1;
                if let Some(mut c) = conns[i].take() {
                    c.deregister(poll);
                }
            }
        }
    }
}

/// Read and verify everything available, refill the pipeline, write.
fn pump(
    c: &mut Conn,
    buf: &mut [u8],
    record: &mut impl FnMut(Instant, Duration),
) -> Result<(), Failure> {
    let mut completed = 0;
    loop {
        match c.stream.read(buf) {
            Ok(0) => return Err(Failure::Io("server closed the connection".into())),
            Ok(n) => {
                let now = Instant::now();
                completed += c
                    .on_data(&buf[..n], now, |lat| record(now, lat))
                    .map_err(Failure::Mismatch)?;
                // NOTE: a short read means the socket is drained; Linux raises
                // a new edge for data that arrives after it, so skip the extra
                // read that would only return EAGAIN.
                if n < buf.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::Io(format!("read: {e}"))),
        }
    }
    if completed > 0 {
        c.queue(completed, Instant::now());
    }
    c.flush().map_err(|e| Failure::Io(format!("write: {e}")))
}

/// Receive and verify every datagram available, replace the answered ones, send.
fn pump_udp(
    u: &mut UdpConn,
    buf: &mut [u8],
    tally: &mut Tally,
    record: &mut impl FnMut(Instant, Duration),
) -> Result<(), Failure> {
    loop {
        match u.socket.recv(buf) {
            Ok(n) => {
                let now = Instant::now();
                u.on_datagram(&buf[..n], now, tally, |lat| record(now, lat))
                    .map_err(Failure::Mismatch)?;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Failure::Io(format!("recv: {e}"))),
        }
    }
    if tally.completed > 0 {
        u.queue(tally.completed, Instant::now());
    }
    u.flush().map_err(|e| Failure::Io(format!("send: {e}")))
}

/// utime+stime of a process (all its threads) in clock ticks, from /proc.
fn cpu_ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name start at field 3 (state);
    // utime and stime are fields 14 and 15.
    let mut rest = stat
        .get(stat.rfind(')')? + 1..)?
        .split_whitespace()
        .skip(11);
    let utime: u64 = rest.next()?.parse().ok()?;
    let stime: u64 = rest.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Busy time of all CPUs (user, nice, system, irq, softirq) in clock ticks,
/// from the first line of /proc/stat: with the server's and our own time it
/// shows how much CPU other processes took during the window.
fn machine_busy_ticks() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    Some(f.get(0..3)?.iter().sum::<u64>() + f.get(5..7)?.iter().sum::<u64>())
}

/// Print the result as one JSON object on one line (numbers, or null when
/// /proc could not be read).
fn report(o: &Opts, s: &Stats, hs: Option<&Handshakes>) {
    let msgs = s.hist.count();
    let secs = s.window.as_secs_f64().max(1e-9);
    let q = |x: f64| format!("{:.1}", s.hist.quantile_ns(x) as f64 / 1000.0);
    let cpu_us = |t: Option<u64>| t.map(|t| t as f64 * USEC_PER_TICK);
    let num = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x:.3}"));
    let server_us = cpu_us(s.server_ticks);
    let per_msg = server_us.filter(|_| msgs > 0).map(|u| u / msgs as f64);
    let fields = [
        ("msgs_per_s", format!("{:.1}", msgs as f64 / secs)),
        ("msgs", msgs.to_string()),
        ("bytes", (msgs * o.mode.wire_len(o.size) as u64).to_string()),
        ("p50_us", q(0.5)),
        ("p90_us", q(0.9)),
        ("p99_us", q(0.99)),
        ("p999_us", q(0.999)),
        ("max_us", format!("{:.1}", s.hist.max_ns() as f64 / 1000.0)),
        ("mean_us", format!("{:.1}", s.hist.mean_ns() / 1000.0)),
        ("errors", s.errors.to_string()),
        (
            "lost",
            s.recon.as_ref().map_or(s.lost, |c| c.lost).to_string(),
        ),
        ("late", s.late.to_string()),
        ("server_cpu_us", num(server_us)),
        ("server_cpu_us_per_msg", num(per_msg)),
        ("extra_cpu_us", num(cpu_us(s.extra_ticks))),
        ("loadgen_cpu_us", num(cpu_us(s.self_ticks))),
        ("machine_cpu_us", num(cpu_us(s.machine_ticks))),
        ("window_s", format!("{secs:.3}")),
        ("mode", format!("\"{}\"", o.mode.name())),
        ("size", o.size.to_string()),
        ("conns", o.conns.to_string()),
        ("depth", o.depth.to_string()),
    ];
    let mut fields = fields.to_vec();
    if o.tls {
        fields.push(("tls", "true".into()));
        fields.push(("churn", o.churn.to_string()));
    }
    if let (Some(every), Some(c)) = (o.reconnect_every, s.recon.as_ref()) {
        let us = |ns: u64| format!("{:.1}", ns as f64 / 1000.0);
        let timeline: Vec<String> = c
            .timeline
            .iter()
            .map(|[m, n, f]| format!("[{m},{n},{f}]"))
            .collect();
        fields.extend([
            ("reconnect_every", every.to_string()),
            ("timeout_ms", o.timeout.as_millis().to_string()),
            ("connects", c.connects.to_string()),
            ("connect_failures", c.connect_failures.to_string()),
            ("closed_idle", c.closed_idle.to_string()),
            ("conns_broken", c.conns_broken.to_string()),
            ("corrupted", c.corrupted.to_string()),
            ("reply_timeouts", c.reply_timeouts.to_string()),
            ("connect_p50_us", us(c.connect_hist.quantile_ns(0.5))),
            ("connect_p99_us", us(c.connect_hist.quantile_ns(0.99))),
            ("connect_max_us", us(c.connect_hist.max_ns())),
            (
                "timeline_bucket_ms",
                reconnect::BUCKET.as_millis().to_string(),
            ),
            ("timeline", format!("[{}]", timeline.join(","))),
        ]);
    }
    if let Some(hs) = hs {
        let mut each = hs.each.clone();
        each.sort_unstable();
        let us = |d: Option<&Duration>| format!("{:.1}", d.map_or(0.0, |d| d.as_secs_f64() * 1e6));
        fields.push(("handshakes", each.len().to_string()));
        fields.push((
            "handshake_ms",
            format!("{:.3}", hs.wall.as_secs_f64() * 1e3),
        ));
        fields.push(("handshake_p50_us", us(each.get(each.len() / 2))));
        fields.push(("handshake_max_us", us(each.last())));
    }
    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
    println!("{{{}}}", body.join(","));
}
