//! Driver-level tests of the epoll backend over socket pairs and a loopback
//! listener: each operation's completions, cancel delivering from the next
//! wait, `in_flight` accounting, and no spinning once nothing is armed.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::EpollDriver;
use crate::driver::{Completion, Driver, RecvResult, SendState};

/// Wait until at least `n` completions arrived (at most 2 s), then once more
/// without blocking to catch anything extra.
fn collect(d: &mut EpollDriver, n: usize) -> Vec<Completion> {
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(2);
    while out.len() < n && Instant::now() < end {
        d.wait(Some(Duration::from_millis(100)), &mut out).unwrap();
    }
    d.wait(Some(Duration::ZERO), &mut out).unwrap();
    out
}

fn pair() -> (UnixStream, UnixStream) {
    let (a, b) = UnixStream::pair().unwrap();
    a.set_nonblocking(true).unwrap();
    (a, b)
}

fn data_of(c: &Completion) -> Option<(u16, Vec<u8>)> {
    match c {
        Completion::Recv {
            result: RecvResult::Data(chunk),
            more: true,
            ..
        } => {
            // SAFETY: the test has not released the buffer yet.
            Some((chunk.bid, unsafe { chunk.bytes() }.to_vec()))
        }
        _ => None,
    }
}

fn send_state(data: &[u8]) -> SendState {
    let mut state = SendState::default();
    state.iov.push(libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    });
    state
}

#[test]
fn recv_delivers_data_then_eof_and_stops_watching() {
    let mut d = EpollDriver::new(4, 512).unwrap();
    let (ours, mut peer) = pair();
    d.arm_recv(3, ours.as_raw_fd());
    assert_eq!(d.in_flight(), 1);
    assert!(collect(&mut d, 0).is_empty(), "nothing to read yet");

    peer.write_all(b"hello").unwrap();
    let got = collect(&mut d, 1);
    assert_eq!(got.len(), 1, "{got:?}");
    let (bid, bytes) = data_of(&got[0]).expect("data");
    assert_eq!(bytes, b"hello");
    d.release(bid);

    drop(peer);
    let got = collect(&mut d, 1);
    assert!(
        matches!(
            got[..],
            [Completion::Recv {
                slot: 3,
                result: RecvResult::Eof,
                more: false
            }]
        ),
        "{got:?}"
    );
    assert_eq!(d.in_flight(), 0);
    // Nothing is armed: the hung-up socket must not be reported again.
    assert!(collect(&mut d, 0).is_empty());
    d.forget(3, ours.as_raw_fd());
}

#[test]
fn cancel_recv_completes_from_the_next_wait_once() {
    let mut d = EpollDriver::new(4, 512).unwrap();
    let (ours, mut peer) = pair();
    d.arm_recv(0, ours.as_raw_fd());
    d.cancel_recv(0, ours.as_raw_fd());
    assert_eq!(d.in_flight(), 1, "the final completion is still owed");
    d.cancel_recv(0, ours.as_raw_fd()); // already finishing: no second one
    peer.write_all(b"not read").unwrap();
    let got = collect(&mut d, 1);
    assert!(
        matches!(
            got[..],
            [Completion::Recv {
                slot: 0,
                result: RecvResult::Cancelled,
                more: false
            }]
        ),
        "{got:?}"
    );
    assert_eq!(d.in_flight(), 0);
    assert!(
        collect(&mut d, 0).is_empty(),
        "cancelled recv still reading"
    );
}

#[test]
fn a_dry_pool_ends_the_recv_until_buffers_return() {
    let mut d = EpollDriver::new(2, 512).unwrap();
    let (ours, mut peer) = pair();
    d.arm_recv(1, ours.as_raw_fd());
    // Two readinesses each fill one buffer (512 bytes: the large buffer
    // that follows a full one finds nothing more) and leave the recv
    // armed; the third, with both still lent, finds the pool dry.
    let mut bids = Vec::new();
    for _ in 0..2 {
        peer.write_all(&[7u8; 512]).unwrap();
        let got = collect(&mut d, 1);
        assert_eq!(got.len(), 1, "{got:?}");
        bids.push(data_of(&got[0]).expect("data").0);
    }
    peer.write_all(&[7u8; 512]).unwrap();
    let got = collect(&mut d, 1);
    assert!(
        matches!(
            got[..],
            [Completion::Recv {
                result: RecvResult::NoBuffers,
                more: false,
                ..
            }]
        ),
        "{got:?}"
    );
    assert_eq!(d.in_flight(), 0);
    for bid in bids {
        d.release(bid);
    }
    d.arm_recv(1, ours.as_raw_fd());
    assert!(data_of(&collect(&mut d, 1)[0]).is_some());
}

#[test]
fn send_completes_from_the_next_wait_and_waits_for_room() {
    let mut d = EpollDriver::new(2, 512).unwrap();
    let (ours, mut peer) = pair();
    let fd = ours.as_raw_fd();
    let small = b"ping".to_vec();
    let mut state = send_state(&small);
    d.send(5, fd, &mut state);
    assert_eq!(d.in_flight(), 1);
    let got = collect(&mut d, 1);
    assert!(
        matches!(
            got[..],
            [Completion::Sent {
                slot: 5,
                result: Ok(4),
                ..
            }]
        ),
        "{got:?}"
    );

    // Fill the socket buffer until a send has to wait for EPOLLOUT.
    let big = vec![1u8; 256 * 1024];
    let mut state = send_state(&big);
    let waiting = loop {
        d.send(5, fd, &mut state);
        let got = collect(&mut d, 0);
        match got[..] {
            [] => break true,
            [Completion::Sent { result: Ok(_), .. }] => {}
            _ => panic!("unexpected {got:?}"),
        }
    };
    assert!(waiting);
    assert_eq!(d.in_flight(), 1);
    d.cancel_send(5, fd);
    d.cancel_send(5, fd); // its `Sent` is already queued: nothing more
    let got = collect(&mut d, 1);
    match &got[..] {
        [Completion::Sent {
            slot: 5,
            result: Err(e),
            ..
        }] => assert_eq!(e.raw_os_error(), Some(libc::ECANCELED)),
        _ => panic!("unexpected {got:?}"),
    }
    assert_eq!(d.in_flight(), 0);

    // Full again; draining the peer lets the waiting send through.
    d.send(5, fd, &mut state);
    assert!(collect(&mut d, 0).is_empty());
    let reader = std::thread::spawn(move || {
        let mut sink = vec![0u8; 64 * 1024];
        let mut total = 0;
        while total < 1024 * 1024 {
            match peer.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    });
    let got = collect(&mut d, 1);
    assert!(
        matches!(got[..], [Completion::Sent { slot: 5, result: Ok(n), .. }] if n > 0),
        "{got:?}"
    );
    assert_eq!(d.in_flight(), 0);
    d.forget(5, fd);
    drop(ours);
    reader.join().unwrap();
}

#[test]
fn accept_reports_each_connection_and_cancel_ends_it_later() {
    let mut d = EpollDriver::new(2, 512).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    d.arm_accept(9, listener.as_raw_fd(), false);
    let _a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let _b = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let got = collect(&mut d, 2);
    let accepted: Vec<&OwnedFd> = got
        .iter()
        .map(|c| match c {
            Completion::Accepted {
                listener: 9,
                result: Ok(fd),
                more: true,
            } => fd,
            _ => panic!("unexpected {c:?}"),
        })
        .collect();
    assert_eq!(accepted.len(), 2);
    assert_eq!(d.in_flight(), 1);
    d.cancel_accept(9, listener.as_raw_fd());
    let _c = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let got = collect(&mut d, 1);
    match &got[..] {
        [Completion::Accepted {
            listener: 9,
            result: Err(e),
            more: false,
        }] => assert_eq!(e.raw_os_error(), Some(libc::ECANCELED)),
        _ => panic!("unexpected {got:?}"),
    }
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn wake_reads_the_eventfd_and_cancel_disarms_at_once() {
    let mut d = EpollDriver::new(2, 512).unwrap();
    let efd = rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .unwrap();
    d.arm_wake(efd.as_raw_fd());
    assert!(d.wake_armed());
    rustix::io::write(&efd, &1u64.to_ne_bytes()).unwrap();
    let got = collect(&mut d, 1);
    assert!(matches!(got[..], [Completion::Woken]), "{got:?}");
    assert!(
        collect(&mut d, 0).is_empty(),
        "the counter was not consumed"
    );
    d.cancel_wake();
    assert!(!d.wake_armed());
    assert_eq!(d.in_flight(), 0);
}

#[test]
fn an_idle_connections_driver_record_stays_small() {
    // One per connection, idle ones included; a waiting send lives apart.
    let size = std::mem::size_of::<Option<super::ConnOps>>();
    assert!(size <= 12, "ConnOps grew to {size} bytes");
}

#[test]
fn a_stream_is_read_into_large_buffers_after_a_full_small_one() {
    let mut d = EpollDriver::new(64, 4096).unwrap();
    let (ours, mut peer) = pair();
    // A Unix socket pair's buffer holds it all at once.
    peer.set_nonblocking(true).unwrap();
    let data: Vec<u8> = (0..200_000u32).map(|i| (i % 249) as u8).collect();
    let mut sent = 0;
    while sent < data.len() {
        match peer.write(&data[sent..]) {
            Ok(n) => sent += n,
            Err(_) => break,
        }
    }
    d.arm_recv(1, ours.as_raw_fd());
    let chunks: Vec<(u16, Vec<u8>)> = collect(&mut d, 2).iter().filter_map(data_of).collect();
    assert!(chunks.len() >= 2, "{} chunks", chunks.len());
    assert_eq!(chunks[0].1.len(), 4096, "a small buffer first");
    assert_eq!(chunks[0].0 & super::LARGE_BID, 0);
    assert_ne!(chunks[1].0 & super::LARGE_BID, 0, "then a large one");
    assert!(chunks[1].1.len() > 4096);
    let got: Vec<u8> = chunks.iter().flat_map(|(_, b)| b.clone()).collect();
    assert_eq!(got, data[..got.len()]);
    for (bid, _) in &chunks {
        d.release(*bid);
    }
    // Once nothing is lent, a quiet interval's trim frees every large buffer.
    let freed = d.trim_buffers() + d.trim_buffers();
    assert!(freed >= super::LARGE_BUFFER_BYTES, "{freed}");
    d.cancel_recv(1, ours.as_raw_fd());
}

/// A connected TCP pair on loopback with fixed, small buffers (no
/// autotuning): a peer that does not read fills them for good.
fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    socket2::SockRef::from(&ours)
        .set_send_buffer_size(256 << 10)
        .unwrap();
    socket2::SockRef::from(&theirs)
        .set_recv_buffer_size(64 << 10)
        .unwrap();
    (ours, theirs)
}

fn notified(c: &[Completion], slot: u32) -> Vec<(u32, bool)> {
    c.iter()
        .filter_map(|c| match c {
            Completion::SendNotified {
                slot: s,
                seq,
                copied,
            } if *s == slot => Some((*seq, *copied)),
            _ => None,
        })
        .collect()
}

/// Read everything `peer` gets until EOF (or 5 s).
fn read_to_eof(mut peer: TcpStream) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        peer.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut sink = vec![0u8; 1 << 16];
        let mut total = 0;
        while let Ok(n) = peer.read(&mut sink) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    })
}

#[test]
fn a_zero_copy_send_is_notified_through_the_error_queue() {
    let mut d = EpollDriver::new(8, 4096).unwrap();
    if !d.supports_zerocopy() {
        return; // Linux < 4.19
    }
    let (ours, theirs) = tcp_pair();
    let fd = ours.as_raw_fd();
    let data = vec![7u8; 1 << 20];
    let mut state = send_state(&data);
    state.zerocopy = Some(40);
    d.send(2, fd, &mut state);
    let got = collect(&mut d, 1);
    let sent = match got[..] {
        [Completion::Sent {
            slot: 2,
            result: Ok(n),
            notify: true,
        }] => n,
        _ => panic!("unexpected {got:?}"),
    };
    assert!(sent > 0 && sent < data.len(), "the peer does not read yet");
    assert_eq!(d.in_flight(), 0, "a notification is not an operation");
    // Nothing armed but the owed notification: the peer reads, and it
    // comes (loopback copies, and says so).
    let mut reader = theirs.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while total < sent {
            total += reader.read(&mut buf).unwrap();
        }
    });
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while notified(&got, 2).is_empty() && Instant::now() < end {
        d.wait(Some(Duration::from_millis(50)), &mut got).unwrap();
    }
    drain.join().unwrap();
    assert_eq!(notified(&got, 2), [(40, true)], "{got:?}");
    // Nothing owed any more: the socket is no longer watched.
    assert!(collect(&mut d, 0).is_empty());
    d.close(2, OwnedFd::from(ours), false);
    assert!(d.retired.is_empty(), "closed at once: nothing was owed");
    drop(theirs);
}

#[test]
fn a_socket_closed_with_notifications_owed_stays_open_until_they_are_in() {
    let mut d = EpollDriver::new(8, 4096).unwrap();
    if !d.supports_zerocopy() {
        return;
    }
    for reset in [false, true] {
        let (ours, theirs) = tcp_pair();
        let fd = ours.as_raw_fd();
        let data = vec![3u8; 1 << 20];
        let mut state = send_state(&data);
        state.zerocopy = Some(7);
        d.send(4, fd, &mut state);
        let got = collect(&mut d, 1);
        let sent = match got[..] {
            [Completion::Sent {
                result: Ok(n),
                notify: true,
                ..
            }] => n,
            _ => panic!("unexpected {got:?}"),
        };
        // The connection ends before the peer read: the socket is kept
        // (half-closed, or reset) for the notification.
        d.close(4, OwnedFd::from(ours), reset);
        let mut got = Vec::new();
        if reset {
            // The reset drops what was queued: notified at once.
            d.wait(Some(Duration::from_millis(100)), &mut got).unwrap();
            assert_eq!(notified(&got, 4), [(7, true)], "{got:?}");
            assert!(d.retired.is_empty());
            continue;
        }
        assert_eq!(d.retired.len(), 1, "kept open while owed");
        let reader = read_to_eof(theirs);
        let end = Instant::now() + Duration::from_secs(5);
        while notified(&got, 4).is_empty() && Instant::now() < end {
            d.wait(Some(Duration::from_millis(50)), &mut got).unwrap();
        }
        assert_eq!(notified(&got, 4), [(7, true)], "{got:?}");
        assert!(d.retired.is_empty(), "closed once notified");
        assert_eq!(reader.join().unwrap(), sent, "every byte, then the EOF");
    }
}

#[test]
fn a_retired_socket_whose_peer_takes_nothing_is_reset_at_its_deadline() {
    let mut d = EpollDriver::new(8, 4096).unwrap();
    if !d.supports_zerocopy() {
        return;
    }
    let (ours, mut theirs) = tcp_pair();
    let data = vec![5u8; 1 << 20];
    let mut state = send_state(&data);
    state.zerocopy = Some(1);
    d.send(6, ours.as_raw_fd(), &mut state);
    assert!(matches!(
        collect(&mut d, 1)[..],
        [Completion::Sent { notify: true, .. }]
    ));
    d.close(6, OwnedFd::from(ours), false);
    let mut got = Vec::new();
    d.wait(Some(Duration::from_millis(50)), &mut got).unwrap();
    assert!(notified(&got, 6).is_empty(), "the peer has not read");
    // RETIRE_WAIT is over: the next wait resets it, which notifies.
    for r in d.retired.values_mut() {
        r.deadline = Instant::now();
    }
    d.wait(Some(Duration::from_millis(50)), &mut got).unwrap();
    assert_eq!(notified(&got, 6), [(1, true)], "{got:?}");
    assert!(d.retired.is_empty());
    theirs
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut sink = vec![0u8; 1 << 16];
    let reset = loop {
        match theirs.read(&mut sink) {
            Ok(0) => break false,
            Ok(_) => {}
            Err(e) => break e.kind() == std::io::ErrorKind::ConnectionReset,
        }
    };
    assert!(reset, "the peer sees a reset, not an EOF");
}
