//! The state machine on a fake driver with injected time: the loop
//! ([`Turns`]) and the per-thread core driven deterministically, no sockets
//! on the network and no sleeps. Descriptors are Unix socket pairs, so
//! `shutdown` and `close` have something real to act on.
//!
//! Size: over 600 lines because it is one scenario per test around one
//! rig (`Rig`); each test reads top to bottom on its own.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::{Backend, ConnOptions, ListenLimits, Overflow};
use crate::conn::{ConnError, ConnId};
use crate::driver::fake::{FakeDriver, Op};
use crate::event::{Batch, Event, Handler};
use crate::framing::Framing;
use crate::handle::ConnRef;
use crate::io_thread::Turns;
use crate::layer::testing::{encode, ToyFactory, END, HELLO, HELLO_MAX, WELCOME};
use crate::layer::Layer;
use crate::limits::ListenerCounts;
use crate::mailbox::Cmd;
use crate::shared::Shared;

const MS: Duration = Duration::from_millis(1);

/// Records what the protocol saw; echoes data; closes on EOF.
#[derive(Default)]
struct Recorder {
    log: Vec<String>,
    conns: HashMap<ConnId, ConnRef>,
    echo: bool,
}

impl Handler for Recorder {
    fn dispatch(&mut self, batch: &mut Batch<'_>) {
        while let Some(ev) = batch.next() {
            match ev {
                Event::Opened { conn, .. } => {
                    self.log.push(format!("opened {}", conn.id().index));
                    self.conns.insert(conn.id(), conn);
                }
                Event::Connected { conn, token, .. } => {
                    self.log.push(format!("connected {token}"));
                    self.conns.insert(conn.id(), conn);
                }
                Event::ConnectFailed { token, error } => {
                    self.log.push(format!("connect failed {token}: {error}"))
                }
                Event::Data { conn, data } | Event::Packet { conn, data } => {
                    self.log
                        .push(format!("data {}", String::from_utf8_lossy(data)));
                    if self.echo {
                        self.conns[&conn].write(data);
                    }
                }
                Event::Eof { conn } => {
                    self.log.push("eof".into());
                    self.conns[&conn].close();
                }
                Event::IdleTimeout { .. } => self.log.push("idle".into()),
                Event::Closed { conn, error } => {
                    self.conns.remove(&conn);
                    self.log.push(match error {
                        None => format!("closed {}", conn.index),
                        Some(ConnError::Limit(l)) => format!("closed {}: {l}", conn.index),
                        Some(e) => format!("closed {}: {e}", conn.index),
                    });
                }
                other => self.log.push(format!("{other:?}")),
            }
        }
    }
}

struct Rig {
    turns: Turns<FakeDriver>,
    shared: Arc<Shared>,
    now: Arc<Mutex<Instant>>,
    h: Recorder,
    /// The far ends of the connections' socket pairs (kept open).
    peers: Vec<UnixStream>,
}

impl Rig {
    fn new() -> Rig {
        let shared = Arc::new(Shared::new(Backend::Epoll, None, 1, None).unwrap());
        let now = Arc::new(Mutex::new(Instant::now()));
        let clock = now.clone();
        let turns = Turns::with_clock(
            shared.clone(),
            0,
            FakeDriver::new(),
            Box::new(move || *clock.lock().unwrap()),
        );
        Rig {
            turns,
            shared,
            now,
            h: Recorder {
                echo: true,
                ..Default::default()
            },
            peers: Vec::new(),
        }
    }

    fn fake(&mut self) -> &mut FakeDriver {
        self.turns.driver()
    }

    /// Run turns until nothing is pending (events, completions, commands).
    fn run(&mut self) {
        for _ in 0..3 {
            self.turns.step(&mut self.h, Some(Duration::ZERO));
        }
    }

    fn advance(&mut self, d: Duration) {
        *self.now.lock().unwrap() += d;
        self.run();
    }

    fn now(&self) -> Instant {
        *self.now.lock().unwrap()
    }

    fn ops(&mut self) -> Vec<Op> {
        self.fake().take_ops()
    }

    fn log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.h.log)
    }

    fn push(&self, cmd: Cmd) {
        self.shared.mailboxes[0].push(cmd);
    }

    fn listen(&mut self, options: ConnOptions, limits: Option<ListenLimits>) -> usize {
        let (socket, _) = UnixStream::pair().unwrap();
        self.push(Cmd::Listen {
            listener: 0,
            socket: socket.into(),
            options: Arc::new(options),
            counts: limits.map(|l| Arc::new(ListenerCounts::new(l, 0))),
            shared: false,
        });
        self.run();
        assert_eq!(self.ops(), [Op::ArmAccept(0)]);
        0
    }

    /// The kernel accepts a connection on `listener`.
    fn accept(&mut self, listener: usize) {
        let (ours, theirs) = UnixStream::pair().unwrap();
        self.peers.push(theirs);
        self.fake().accept(listener, ours.into());
        self.run();
    }

    /// Ask for an outbound connection (a socket pair's end stands in for
    /// the socket).
    fn connect(&mut self, token: u64, options: ConnOptions, deadline: Option<Instant>) {
        let (socket, peer) = UnixStream::pair().unwrap();
        self.peers.push(peer);
        self.push(Cmd::Connect {
            token,
            socket: socket.into(),
            addr: "127.0.0.1:9"
                .parse::<std::net::SocketAddr>()
                .unwrap()
                .into(),
            options: Arc::new(options),
            deadline,
        });
        self.run();
    }

    /// Accept a connection on a toy-layered `listener` and complete its
    /// handshake (the answer taken by the kernel).
    fn accept_handshaken(&mut self, listener: usize) {
        self.accept(listener);
        self.fake().recv(0, HELLO);
        self.run();
        self.fake().sent(0, WELCOME.len());
    }

    fn conn(&self, slot: u32) -> ConnRef {
        self.h
            .conns
            .iter()
            .find(|(id, _)| id.index == slot)
            .map(|(_, c)| c.clone())
            .expect("connection is open")
    }
}

#[test]
fn accept_read_echo_eof_close() {
    let mut r = Rig::new();
    let l = r.listen(ConnOptions::default(), None);
    r.accept(l);
    assert_eq!(r.log(), ["opened 0"]);
    assert_eq!(r.ops(), [Op::ArmRecv(0)]);
    r.fake().recv(0, b"hello");
    r.run();
    assert_eq!(r.log(), ["data hello"]);
    assert_eq!(r.ops(), [Op::Send(0, b"hello".to_vec())]);
    assert_eq!(r.fake().free_buffers(), 64, "the buffer came back");
    // A short send: the rest goes out next, in order.
    r.fake().sent(0, 2);
    r.run();
    assert_eq!(r.ops(), [Op::Send(0, b"llo".to_vec())]);
    r.fake().sent(0, 3);
    r.fake().recv_eof(0);
    r.run();
    // EOF → the protocol closes → flushed, half-closed, reported, freed.
    assert_eq!(r.log(), ["eof", "closed 0"]);
    assert_eq!(r.ops(), [Op::Forget(0)]);
    assert_eq!(r.turns.core().conn_count(), 0);
}

#[test]
fn a_stale_handle_never_touches_the_connection_that_reuses_its_slot() {
    let mut r = Rig::new();
    let l = r.listen(ConnOptions::default(), None);
    r.accept(l);
    let old = r.conn(0);
    old.abort();
    r.run();
    r.fake().complete_cancels();
    r.run();
    assert_eq!(r.log(), ["opened 0", "closed 0"]);
    r.accept(l);
    assert_eq!(r.log(), ["opened 0"], "slot 0 is reused");
    r.ops();
    old.write(b"stale");
    old.close();
    r.run();
    assert_eq!(r.ops(), [], "the old handle did nothing");
    assert!(r.fake().recv_armed(0));
}

#[test]
fn accept_backoff_doubles_up_to_its_cap_and_retries_when_a_descriptor_frees() {
    let mut r = Rig::new();
    let l = r.listen(ConnOptions::default(), None);
    r.fake().accept_fails(l, libc::EMFILE);
    r.run();
    assert_eq!(r.ops(), [], "backing off: not re-armed at once");
    let t0 = r.now();
    assert_eq!(r.turns.next_deadline(), Some(t0 + 5 * MS));
    r.advance(4 * MS);
    assert_eq!(r.ops(), []);
    r.advance(MS);
    assert_eq!(r.ops(), [Op::ArmAccept(l)], "retried after 5 ms");
    // Each failure in a row doubles the pause: 10, 20, ... up to 1 s.
    let mut pauses = Vec::new();
    for _ in 0..10 {
        r.fake().accept_fails(l, libc::ENFILE);
        r.run();
        let t = r.now();
        let next = r.turns.next_deadline().unwrap() - t;
        pauses.push(next.as_millis());
        r.advance(next);
        assert_eq!(r.ops(), [Op::ArmAccept(l)]);
    }
    assert_eq!(pauses, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
    // Exhausted again; a connection closing frees a descriptor: retry now.
    r.accept(l);
    r.ops();
    r.fake().accept_fails(l, libc::EMFILE);
    r.run();
    assert_eq!(r.ops(), []);
    r.conn(0).abort();
    r.run();
    r.fake().complete_cancels();
    r.run();
    let ops = r.ops();
    assert!(ops.contains(&Op::Forget(0)), "{ops:?}");
    assert!(
        ops.contains(&Op::ArmAccept(l)),
        "a freed descriptor ends the pause: {ops:?}"
    );
}

#[test]
fn a_listener_at_max_connections_holds_the_next_and_serves_it_in_order() {
    let mut r = Rig::new();
    let limits = ListenLimits {
        max_connections: Some(1),
        max_connections_per_ip: None,
        max_unready: None,
        overflow: Overflow::Hold,
    };
    let l = r.listen(ConnOptions::default(), Some(limits));
    r.accept(l);
    assert_eq!(r.log(), ["opened 0"]);
    r.ops();
    // A second arrives while full: held, unserved, and accepting stops.
    r.accept(l);
    assert_eq!(r.log(), [] as [String; 0]);
    assert_eq!(r.ops(), [Op::CancelAccept(l)]);
    r.fake().complete_cancels();
    r.run();
    assert!(!r.fake().accept_armed(l));
    // The first closes: its place goes to the held one (after its
    // connection_lost), then accepting starts again.
    r.conn(0).abort();
    r.run();
    r.fake().complete_cancels();
    r.run();
    r.run();
    assert_eq!(r.log(), ["closed 0", "opened 0"]);
    let ops = r.ops();
    assert!(ops.contains(&Op::ArmRecv(0)), "{ops:?}");
    assert!(
        !ops.contains(&Op::ArmAccept(l)),
        "still full with the held one served: {ops:?}"
    );
    r.conn(0).abort();
    r.run();
    r.fake().complete_cancels();
    r.run();
    assert!(r.ops().contains(&Op::ArmAccept(l)), "room again: accepting");
}

#[test]
fn a_graceful_close_lingers_for_the_peers_eof_at_most_linger_max() {
    let mut r = Rig::new();
    let l = r.listen(ConnOptions::default(), None);
    r.accept(l);
    r.ops();
    r.conn(0).write(b"bye");
    r.conn(0).close();
    r.run();
    assert_eq!(r.ops(), [Op::Send(0, b"bye".to_vec())]);
    r.fake().sent(0, 3);
    r.run();
    assert_eq!(r.log(), ["opened 0", "closed 0"], "reported once flushed");
    // Lingering: still reading (and discarding) until the peer's EOF.
    assert!(r.fake().recv_armed(0));
    r.fake().recv(0, b"late");
    r.run();
    assert_eq!(r.log(), [] as [String; 0], "input after close is discarded");
    r.advance(crate::core::LINGER_MAX - MS);
    assert_eq!(r.ops(), []);
    r.advance(MS);
    assert_eq!(r.ops(), [Op::CancelRecv(0)], "linger over: stop reading");
    r.fake().complete_cancels();
    r.run();
    assert_eq!(r.ops(), [Op::Forget(0)]);
}

#[test]
fn idle_timeout_is_reported_after_a_quiet_period_and_postponed_by_data() {
    let mut r = Rig::new();
    let options = ConnOptions {
        idle_timeout: Some(Duration::from_secs(1)),
        ..Default::default()
    };
    let l = r.listen(options, None);
    r.accept(l);
    r.log();
    r.advance(600 * MS);
    r.fake().recv(0, b"x");
    r.run();
    r.advance(600 * MS);
    assert_eq!(r.log(), ["data x"], "data 0.6 s ago: not idle yet");
    r.advance(400 * MS);
    assert_eq!(r.log(), ["idle"]);
    r.advance(1000 * MS);
    assert_eq!(r.log(), ["idle"], "and again a period later");
}

#[test]
fn a_packet_that_does_not_finish_within_frame_timeout_closes_its_connection() {
    let mut r = Rig::new();
    let options = ConnOptions {
        framing: Framing::LengthPrefixed {
            header: 2,
            big_endian: true,
            includes_header: false,
            max_packet: 1000,
        },
        frame_timeout: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    r.h.echo = false;
    let l = r.listen(options, None);
    r.accept(l);
    r.ops();
    r.fake().recv(0, b"\x00\x02ok\x00\x05ab");
    r.run();
    assert_eq!(r.log(), ["opened 0", "data ok"]);
    r.advance(Duration::from_secs(4));
    r.fake().recv(0, b"c");
    r.run();
    r.advance(Duration::from_secs(1));
    assert_eq!(
        r.log(),
        [] as [String; 0],
        "reported once the recv is cancelled"
    );
    assert_eq!(r.ops(), [Op::CancelRecv(0)]);
    r.fake().complete_cancels();
    r.run();
    assert_eq!(r.ops(), [Op::Forget(0)]);
    let log = r.log();
    assert_eq!(log.len(), 1, "{log:?}");
    assert!(log[0].starts_with("closed 0: a packet did not finish within frame_timeout"));
}

#[test]
fn shutdown_aborts_what_is_still_closing_at_the_deadline_then_the_loop_ends() {
    let mut r = Rig::new();
    let l = r.listen(ConnOptions::default(), None);
    r.accept(l);
    r.conn(0).write(b"never taken");
    r.run();
    r.ops();
    let deadline = r.now() + Duration::from_secs(2);
    r.push(Cmd::Shutdown { deadline });
    r.run();
    assert_eq!(r.ops(), [Op::CancelAccept(l)]);
    r.fake().complete_cancels();
    r.advance(Duration::from_secs(1));
    assert!(r.fake().send_armed(0), "still flushing before the deadline");
    r.advance(Duration::from_secs(1));
    assert_eq!(r.ops(), [Op::CancelSend(0), Op::CancelRecv(0)]);
    r.fake().complete_cancels();
    assert!(r.turns.step(&mut r.h, Some(Duration::ZERO)));
    assert!(r.turns.step(&mut r.h, Some(Duration::ZERO)));
    r.ops();
    assert!(
        !r.turns.step(&mut r.h, Some(Duration::ZERO)),
        "nothing left: the loop ends"
    );
    assert_eq!(r.log(), ["opened 0", "closed 0"]);
}

#[test]
fn spare_buffers_are_trimmed_a_second_after_they_appear() {
    let mut r = Rig::new();
    r.fake().spare_bytes = 4096;
    r.run();
    let t0 = r.now();
    assert_eq!(r.turns.next_deadline(), Some(t0 + Duration::from_secs(1)));
    r.advance(999 * MS);
    assert_eq!(r.fake().spare_bytes, 4096);
    r.advance(MS);
    assert_eq!(r.fake().spare_bytes, 0, "trimmed");
    assert_eq!(r.turns.next_deadline(), None, "nothing left to trim");
}

#[test]
fn an_outbound_connect_times_out_and_leaves_nothing() {
    let mut r = Rig::new();
    r.connect(
        7,
        ConnOptions::default(),
        Some(r.now() + Duration::from_secs(3)),
    );
    assert_eq!(r.ops(), [Op::Connect(0)]);
    r.advance(Duration::from_secs(3));
    assert_eq!(r.ops(), [Op::CancelConnect(0)]);
    r.fake().complete_cancels();
    r.run();
    let log = r.log();
    assert_eq!(log.len(), 1);
    assert!(log[0].starts_with("connect failed 7:"), "{log:?}");
    assert!(log[0].contains("timed out"), "{log:?}");
    assert_eq!(r.ops(), [Op::Forget(0)]);
    // The next one connects: from here it is an ordinary connection.
    r.connect(8, ConnOptions::default(), None);
    assert_eq!(r.ops(), [Op::Connect(0)]);
    r.fake().connected(0, Ok(()));
    r.run();
    assert_eq!(r.log(), ["connected 8"]);
    assert_eq!(r.ops(), [Op::ArmRecv(0)]);
}

#[test]
fn an_outside_owner_drives_the_loop_with_run_ready_and_next_deadline() {
    let mut r = Rig::new();
    let l = r.listen(ConnOptions::default(), None);
    assert_eq!(r.turns.next_deadline(), None, "nothing scheduled");
    r.fake().accept(l, UnixStream::pair().unwrap().0.into());
    assert_eq!(
        r.turns.next_deadline(),
        Some(r.now()),
        "completions waiting: due now"
    );
    // One call takes the completion, dispatches it and settles.
    assert!(r.turns.run_ready(&mut r.h));
    assert_eq!(r.log(), ["opened 0"]);
    assert_eq!(r.ops(), [Op::ArmRecv(0)]);
    let waits = std::mem::take(&mut r.fake().waits);
    assert!(
        waits.iter().all(|w| *w == Some(Duration::ZERO)),
        "never blocks: {waits:?}"
    );
}

// ---- the stream-layer seam (with the toy layer of `layer::testing`) ------

fn toy() -> ConnOptions {
    ConnOptions {
        layer: Some(Layer(Arc::new(ToyFactory::default()))),
        ..Default::default()
    }
}

fn wire(plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(plain, &mut out);
    out
}

#[test]
fn a_layer_answers_its_handshake_and_the_protocol_sees_plaintext_only_after_it() {
    let mut r = Rig::new();
    let l = r.listen(toy(), None);
    r.accept(l);
    assert_eq!(
        r.log(),
        [] as [String; 0],
        "not opened before the handshake"
    );
    assert_eq!(r.ops(), [Op::ArmRecv(0)]);
    // The handshake arrives cut in two, with data behind it.
    r.fake().recv(0, b"HEL");
    r.run();
    assert_eq!(r.log(), [] as [String; 0]);
    assert_eq!(r.ops(), []);
    let mut second = b"LO\n".to_vec();
    second.extend(wire(b"hi \xdf"));
    r.fake().recv(0, &second);
    r.run();
    assert_eq!(r.log(), ["opened 0", "data hi \u{fffd}"]);
    // The layer's own answer first, then the echo through the layer.
    let mut expected = WELCOME.to_vec();
    expected.extend(wire(b"hi \xdf"));
    assert_eq!(r.ops(), [Op::Send(0, expected)]);
}

#[test]
fn writes_of_one_dispatch_go_through_the_layer_together_and_close_sends_its_last_words() {
    let mut r = Rig::new();
    r.h.echo = false;
    let l = r.listen(toy(), None);
    r.accept_handshaken(l);
    r.run();
    r.ops();
    let c = r.conn(0);
    c.write(b"one ");
    c.write(b"two");
    c.close();
    r.run();
    let mut expected = wire(b"one two");
    expected.extend_from_slice(&END);
    assert_eq!(r.ops(), [Op::Send(0, expected.clone())]);
    assert_eq!(c.write_buffer_size(), expected.len());
    r.fake().sent(0, expected.len());
    r.fake().recv(0, &END);
    r.fake().recv_eof(0);
    r.run();
    assert_eq!(r.log(), ["opened 0", "closed 0"]);
    assert_eq!(r.ops(), [Op::Forget(0)]);
}

#[test]
fn a_bad_handshake_closes_the_connection_without_the_protocol_hearing_of_it() {
    let mut r = Rig::new();
    let l = r.listen(toy(), None);
    r.accept(l);
    r.fake().recv(0, b"GET / HTTP/1.1\r\n");
    r.run();
    // Closing gracefully (lingering), never opened, never reported.
    assert!(r.fake().recv_armed(0));
    r.fake().recv_eof(0);
    r.run();
    assert_eq!(r.ops(), [Op::ArmRecv(0), Op::Forget(0)]);
    assert_eq!(r.log(), [] as [String; 0]);
    // A handshake that never ends is cut at its bound.
    r.accept(l);
    r.fake().recv(0, &[b'x'; HELLO_MAX + 1]);
    r.fake().recv_eof(0);
    r.run();
    assert_eq!(r.log(), [] as [String; 0]);
    assert!(r.ops().contains(&Op::Forget(0)));
}

#[test]
fn a_layer_error_after_the_handshake_reaches_connection_lost_with_its_reason() {
    let mut r = Rig::new();
    r.h.echo = false;
    let l = r.listen(toy(), None);
    r.accept_handshaken(l);
    // EOF without the end mark: a truncation, not an `eof_received`.
    r.fake().recv_eof(0);
    r.run();
    assert_eq!(
        r.log(),
        [
            "opened 0",
            "closed 0: toy: truncated: EOF without the end mark"
        ]
    );
    // With the end mark, EOF is an ordinary EOF.
    r.accept_handshaken(l);
    let mut last = wire(b"last");
    last.extend_from_slice(&END);
    r.fake().recv(0, &last);
    r.fake().recv_eof(0);
    r.run();
    assert_eq!(r.log(), ["opened 0", "data last", "eof"]);
    // The protocol closed in answer: our end mark goes out, then it closes.
    assert_eq!(r.ops().last(), Some(&Op::Send(0, END.to_vec())));
    r.fake().sent(0, END.len());
    r.run();
    assert_eq!(r.log(), ["closed 0"]);
}

#[test]
fn an_outbound_connection_starts_its_layer_and_opens_once_it_is_ready() {
    let mut r = Rig::new();
    r.connect(3, toy(), None);
    r.fake().connected(0, Ok(()));
    r.run();
    assert_eq!(
        r.ops(),
        [Op::Connect(0), Op::Send(0, HELLO.to_vec()), Op::ArmRecv(0)]
    );
    assert_eq!(r.log(), [] as [String; 0]);
    r.fake().sent(0, HELLO.len());
    r.fake().recv(0, WELCOME);
    r.run();
    assert_eq!(r.log(), ["connected 3"]);
    // A server that answers wrong fails the connect instead.
    r.connect(4, toy(), None);
    r.fake().connected(1, Ok(()));
    r.run();
    r.fake().sent(1, HELLO.len());
    r.fake().recv(1, b"NO\n");
    r.run();
    assert_eq!(r.log(), ["connect failed 4: toy: bad handshake"]);
}

#[test]
fn what_a_layer_buffers_counts_in_buffer_memory() {
    let shared = Arc::new(Shared::new(Backend::Epoll, None, 1, Some(1 << 20)).unwrap());
    let mut r = Rig::new();
    r.shared = shared.clone();
    r.turns = Turns::with_clock(shared.clone(), 0, FakeDriver::new(), {
        let now = r.now.clone();
        Box::new(move || *now.lock().unwrap())
    });
    let l = r.listen(toy(), None);
    r.accept(l);
    r.fake().recv(0, b"HELL");
    r.run();
    assert!(shared.memory.used() >= 4, "{}", shared.memory.used());
}

#[test]
fn a_layer_that_is_not_ready_in_time_is_closed_without_the_protocol_hearing_of_it() {
    let mut r = Rig::new();
    let factory = ToyFactory {
        ready_timeout: Some(Duration::from_secs(5)),
    };
    let options = ConnOptions {
        layer: Some(Layer(Arc::new(factory))),
        ..Default::default()
    };
    let l = r.listen(options, None);
    r.accept(l);
    r.fake().recv(0, b"HEL"); // and then nothing
    r.run();
    r.ops();
    r.advance(Duration::from_secs(5) - MS);
    assert_eq!(r.ops(), []);
    r.advance(MS);
    // Closed gracefully (lingering for the peer's EOF), never reported.
    r.fake().recv_eof(0);
    r.run();
    assert_eq!(r.ops(), [Op::Forget(0)]);
    assert_eq!(r.log(), [] as [String; 0]);
    // One that completes in time is not touched by its old deadline.
    r.accept(l);
    r.fake().recv(0, HELLO);
    r.run();
    r.advance(Duration::from_secs(6));
    assert_eq!(r.log(), ["opened 0"]);
    assert!(r.fake().recv_armed(0));
}

/// A listening Unix socket (non-blocking, as the engine's listeners are)
/// at a fresh abstract name, with a way to queue connections on it.
fn queued_listener() -> (UnixListener, std::os::unix::net::SocketAddr) {
    use std::os::linux::net::SocketAddrExt;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let name = format!(
        "netring-sweep-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    );
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name).unwrap();
    let listener = UnixListener::bind_addr(&addr).unwrap();
    listener.set_nonblocking(true).unwrap();
    (listener, addr)
}

fn listen_on(r: &mut Rig, socket: UnixListener) -> usize {
    r.push(Cmd::Listen {
        listener: 0,
        socket: socket.into(),
        options: Arc::new(ConnOptions::default()),
        counts: None,
        shared: true,
    });
    r.run();
    assert_eq!(r.ops(), [Op::ArmAccept(0)]);
    0
}

#[test]
fn unlisten_accepts_what_the_kernel_queued_before_the_cancel_was_done() {
    // NOTE: on a socket shared with other processes, a connection whose
    // wake-up went to the cancelled accept would otherwise wait unserved.
    let mut r = Rig::new();
    let (socket, addr) = queued_listener();
    let l = listen_on(&mut r, socket);
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    r.push(Cmd::Unlisten {
        listener: l,
        done: done.clone(),
    });
    r.run();
    assert_eq!(r.ops(), [Op::CancelAccept(l)]);
    assert!(!done.load(std::sync::atomic::Ordering::Acquire));
    let clients: Vec<UnixStream> = (0..3)
        .map(|_| UnixStream::connect_addr(&addr).unwrap())
        .collect();
    r.fake().complete_cancels();
    r.run();
    assert_eq!(r.log(), ["opened 0", "opened 1", "opened 2"]);
    assert!(done.load(std::sync::atomic::Ordering::Acquire));
    // Served like any other: an echo.
    (&clients[2]).write_all(b"hi").unwrap();
    r.fake().recv(2, b"hi");
    r.run();
    assert_eq!(r.log(), ["data hi"]);
    // The socket is closed: nobody listens at the name any more.
    assert!(UnixStream::connect_addr(&addr).is_err());
}

#[test]
fn a_shutdown_leaves_the_queue_to_the_socket() {
    let mut r = Rig::new();
    let (socket, addr) = queued_listener();
    let l = listen_on(&mut r, socket);
    r.push(Cmd::Shutdown {
        deadline: r.now() + Duration::from_secs(1),
    });
    r.run();
    assert_eq!(r.ops(), [Op::CancelAccept(l)]);
    let _client = UnixStream::connect_addr(&addr).unwrap();
    r.fake().complete_cancels();
    r.run();
    assert_eq!(r.log(), Vec::<String>::new());
}

#[test]
fn unlisten_between_two_single_accepts_takes_the_queue_at_once() {
    let mut r = Rig::new();
    let (socket, addr) = queued_listener();
    let l = listen_on(&mut r, socket);
    // A single accept (shared socket) completed: nothing of ours waits in
    // the kernel until the loop arms the next one.
    let (ours, theirs) = UnixStream::pair().unwrap();
    r.peers.push(theirs);
    r.fake().accept_once(l, ours.into());
    r.turns.step(&mut r.h, Some(Duration::ZERO)); // reaps it
    let _queued: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect_addr(&addr).unwrap())
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    r.push(Cmd::Unlisten {
        listener: l,
        done: done.clone(),
    });
    r.run();
    assert_eq!(r.log(), ["opened 0", "opened 1", "opened 2"]);
    assert!(done.load(std::sync::atomic::Ordering::Acquire));
    assert!(!r.ops().contains(&Op::ArmAccept(l)), "not armed again");
    assert!(
        UnixStream::connect_addr(&addr).is_err(),
        "the socket is closed"
    );
}
