//! Driver-level tests of the io_uring backend's polled ring (`new_polled`,
//! the ring an asyncio loop's epoll watches): its one descriptor must be
//! readable whenever completions or commands wait, however many there are.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use super::UringDriver;
use crate::driver::{Completion, Driver, RecvResult};

/// A polled ring, or None (the test is skipped) where io_uring is refused.
fn polled() -> Option<UringDriver> {
    match UringDriver::new_polled(512, 512) {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("skipped: io_uring unavailable ({e})");
            None
        }
    }
}

fn eventfd() -> OwnedFd {
    rustix::event::eventfd(
        0,
        rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
    )
    .unwrap()
}

/// Whether `fd` is readable within `ms` milliseconds.
fn readable(fd: i32, ms: i32) -> bool {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd, which lives across the call.
    unsafe { libc::poll(&mut p, 1, ms) == 1 }
}

#[test]
fn a_polled_ring_stays_readable_until_every_deferred_completion_is_taken() {
    let Some(mut d) = polled() else { return };
    let mailbox = eventfd();
    d.arm_wake(mailbox.as_raw_fd());
    // NOTE: far more than the 20 deferred items the kernel runs per enter,
    // with one enter per turn: the rest must keep the descriptor readable
    // (the kernel does not signal again for work it already holds).
    d.polled_enters = 1;
    let n = 200;
    let pairs: Vec<(UnixStream, UnixStream)> = (0..n)
        .map(|_| {
            let (a, b) = UnixStream::pair().unwrap();
            a.set_nonblocking(true).unwrap();
            (a, b)
        })
        .collect();
    for (slot, (ours, _)) in pairs.iter().enumerate() {
        d.arm_recv(slot as u32, ours.as_raw_fd());
    }
    d.submit().unwrap();
    for (_, peer) in &pairs {
        (&*peer).write_all(b"x").unwrap();
    }
    let mut got = 0;
    let mut turns = 0;
    let mut out = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while got < n {
        // The loop runs a turn only when the descriptor says so.
        assert!(
            readable(d.fd(), 1000),
            "the descriptor is not readable with {} of {n} completions still waiting",
            n - got
        );
        assert!(Instant::now() < end, "{got} of {n} completions in 5 s");
        out.clear();
        turns += 1;
        d.wait(Some(Duration::ZERO), &mut out).unwrap();
        for c in &out {
            if let Completion::Recv {
                result: RecvResult::Data(chunk),
                ..
            } = c
            {
                d.release(chunk.bid);
                got += 1;
            }
        }
        d.submit().unwrap();
    }
    // One enter of 20 items per turn.
    assert!(turns >= n / 20, "{turns} turns");
    assert_eq!(got, n);
}

#[test]
fn a_mailbox_doorbell_makes_a_polled_ring_readable_at_once_and_a_turn_clears_it() {
    let Some(mut d) = polled() else { return };
    let mailbox = eventfd();
    d.arm_wake(mailbox.as_raw_fd());
    let mut out = Vec::new();
    d.wait(Some(Duration::ZERO), &mut out).unwrap();
    assert!(!readable(d.fd(), 0), "readable with nothing to do");
    // A command pushed on the loop's own thread (or any other) rings the
    // mailbox's eventfd: no read of it in the ring, no deferred signal.
    rustix::io::write(&mailbox, &1u64.to_ne_bytes()).unwrap();
    assert!(readable(d.fd(), 0), "the doorbell did not reach the poller");
    d.wait(Some(Duration::ZERO), &mut out).unwrap();
    assert!(!readable(d.fd(), 0), "a turn left the doorbell ringing");
}

/// A connected TCP pair on loopback (SEND_ZC is TCP's and UDP's).
fn tcp_pair() -> (std::net::TcpStream, std::net::TcpStream) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let ours = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (theirs, _) = listener.accept().unwrap();
    ours.set_nonblocking(true).unwrap();
    // NOTE: fixed, small buffers (no autotuning): a peer that does not
    // read fills them for good.
    socket2::SockRef::from(&ours)
        .set_send_buffer_size(64 << 10)
        .unwrap();
    socket2::SockRef::from(&theirs)
        .set_recv_buffer_size(64 << 10)
        .unwrap();
    (ours, theirs)
}

/// Completions until `done` says enough (or 5 s pass).
fn collect(d: &mut UringDriver, mut done: impl FnMut(&[Completion]) -> bool) -> Vec<Completion> {
    let mut got = Vec::new();
    let end = Instant::now() + Duration::from_secs(5);
    while !done(&got) && Instant::now() < end {
        d.wait(Some(Duration::from_millis(50)), &mut got).unwrap();
    }
    got
}

#[test]
fn a_zero_copy_send_completes_then_notifies_and_a_cancel_names_the_one_in_flight() {
    let Ok(mut d) = UringDriver::new(64, 4096) else {
        return; // io_uring refused here
    };
    if !d.supports_zerocopy() {
        eprintln!("skipped: no SEND_ZC with usage reports (Linux < 6.2)");
        return;
    }
    let (ours, theirs) = tcp_pair();
    let fd = ours.as_raw_fd();
    let data = vec![7u8; 1 << 20];
    let mut state = crate::driver::SendState::default();
    state.iov.push(libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    });
    // Send 0 of slot 3: its result, then (the peer reads) its notification.
    state.zerocopy = Some(0);
    d.send(3, fd, &mut state);
    let got = collect(&mut d, |c| !c.is_empty());
    let sent = match got[..] {
        [Completion::Sent {
            slot: 3,
            result: Ok(n),
            notify: true,
        }] => n,
        _ => panic!("unexpected {got:?}"),
    };
    assert!(sent > 0);
    assert_eq!(
        d.in_flight(),
        0,
        "the notification is not waited for at exit"
    );
    let mut reader = theirs.try_clone().unwrap();
    let drain = std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0;
        while total < sent {
            total += std::io::Read::read(&mut reader, &mut buf).unwrap();
        }
    });
    let got = collect(&mut d, |c| !c.is_empty());
    drain.join().unwrap();
    assert!(
        matches!(
            got[..],
            [Completion::SendNotified {
                slot: 3,
                seq: 0,
                copied: true
            }]
        ),
        "loopback copies, and says so: {got:?}"
    );
    // Fill the socket, then send 1 waits in the kernel: the cancel must
    // name it (its token carries its sequence).
    let filler = vec![1u8; 8 << 20];
    let mut rest: &[u8] = &filler;
    loop {
        match std::io::Write::write(&mut &ours, rest) {
            Ok(n) => rest = &rest[n..],
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
            Err(e) => panic!("{e}"),
        }
    }
    // Send until one waits in the kernel (a send may still find room
    // as the peer's acknowledgements come in).
    let mut seq = 0u32;
    let mut done = Vec::new();
    loop {
        seq += 1;
        assert!(seq < 50, "the socket never filled: {done:?}");
        state.zerocopy = Some(seq);
        d.send(3, fd, &mut state);
        let mut now = Vec::new();
        d.wait(Some(Duration::from_millis(50)), &mut now).unwrap();
        let finished = now.iter().any(|c| matches!(c, Completion::Sent { .. }));
        done.extend(now);
        if !finished {
            break; // in flight: the cancel must name this one
        }
    }
    d.cancel_send(3, fd);
    let notified = |c: &[Completion], s: u32| {
        c.iter()
            .any(|c| matches!(c, Completion::SendNotified { slot: 3, seq, .. } if *seq == s))
    };
    let got = collect(&mut d, |c| notified(c, seq));
    let cancelled = got.iter().any(|c| {
        matches!(c, Completion::Sent { slot: 3, result: Err(e), .. }
            if e.raw_os_error() == Some(libc::ECANCELED))
    });
    assert!(cancelled, "the cancel found zero-copy send {seq}: {got:?}");
    assert!(notified(&got, seq), "{got:?}");
    assert_eq!(d.in_flight(), 0);
    drop(theirs);
}

#[test]
fn a_bundle_recv_delivers_its_buffers_in_order_whatever_order_they_came_back_in() {
    let Ok(mut d) = UringDriver::new(64, 1024) else {
        return; // io_uring refused here
    };
    let (ours, theirs) = tcp_pair();
    let fd = ours.as_raw_fd();
    let mut writer = &theirs;
    let (mut chunks, mut cqes) = (0usize, 0usize);
    for round in 0..6u8 {
        // Bytes that say where they belong, already waiting when the recv
        // runs (one bundle can take them all; the 64 buffers run out).
        let sent: Vec<u8> = (0..40_000u32)
            .map(|i| (i % 251) as u8 ^ round.wrapping_mul(31))
            .collect();
        writer.write_all(&sent).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let r = receive(&mut d, fd, sent.len());
        assert!(r.bytes == sent, "round {round}: bytes out of order");
        chunks += r.bids.len();
        cqes += r.cqes;
    }
    if d.bundles {
        assert!(
            cqes < chunks,
            "bundles on, yet one completion per buffer ({cqes} for {chunks})"
        );
    }
}

/// What `receive` got.
struct Received {
    bytes: Vec<u8>,
    /// The buffer ids, in the order they were used.
    bids: Vec<u16>,
    /// The completions the ring posted (a bundle is one for many buffers).
    cqes: usize,
}

/// Receive on slot 1 from `fd` until `want` bytes came (re-arming when the
/// recv ended, as when the ring ran dry), each turn's buffers given back in
/// an order unlike the one they were taken in (so the ring's entries and
/// the buffers' ids part ways), then cancel the recv and wait until it
/// ended.
fn receive(d: &mut UringDriver, fd: i32, want: usize) -> Received {
    let mut r = Received {
        bytes: Vec::new(),
        bids: Vec::new(),
        cqes: 0,
    };
    let end = Instant::now() + Duration::from_secs(5);
    d.arm_recv(1, fd);
    while r.bytes.len() < want {
        assert!(Instant::now() < end, "{} of {want} bytes", r.bytes.len());
        let mut out = Vec::new();
        d.wait(Some(Duration::from_millis(50)), &mut out).unwrap();
        r.cqes += d.cqes.len();
        let mut ended = false;
        let mut turn = Vec::new();
        for c in out {
            match c {
                Completion::Recv {
                    slot: 1,
                    result,
                    more,
                } => {
                    ended |= !more;
                    if let RecvResult::Data(chunk) = result {
                        // SAFETY: the chunk's buffer is ours until released.
                        r.bytes.extend_from_slice(unsafe {
                            std::slice::from_raw_parts(chunk.ptr, chunk.len)
                        });
                        turn.push(chunk.bid);
                    }
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        r.bids.extend_from_slice(&turn);
        // Every other one, then the rest: whether the ring or a stack takes
        // them back, neighbours part.
        let (even, odd): (Vec<_>, Vec<_>) = turn.iter().enumerate().partition(|(i, _)| i % 2 == 0);
        even.into_iter()
            .chain(odd)
            .for_each(|(_, &bid)| d.release(bid));
        if ended && r.bytes.len() < want {
            d.arm_recv(1, fd);
        }
    }
    d.cancel_recv(1, fd);
    while d.in_flight() > 0 {
        assert!(Instant::now() < end, "the cancelled recv never ended");
        d.wait(Some(Duration::from_millis(50)), &mut Vec::new())
            .unwrap();
        r.cqes += d.cqes.len();
    }
    r
}

#[test]
fn the_ring_reuses_the_buffers_given_back_last_and_deepens_when_it_runs_dry() {
    let Ok(mut d) = UringDriver::new(512, 16384) else {
        return; // io_uring refused here
    };
    let (ours, theirs) = tcp_pair();
    let fd = ours.as_raw_fd();
    let mut writer = &theirs;
    // DEPTH_MIN_BYTES of 16 KiB buffers.
    let floor = 64;
    // Small reads one after another: each buffer given back comes round
    // again after the ring's depth, not after all 512.
    let mut used = std::collections::HashSet::new();
    for i in 0..300u32 {
        writer.write_all(&i.to_le_bytes()).unwrap();
        let r = receive(&mut d, fd, 4);
        assert_eq!(r.bytes, i.to_le_bytes());
        used.extend(r.bids);
    }
    assert!(
        used.len() <= floor + 1,
        "300 reads went through {} buffers",
        used.len()
    );
    assert!(
        !d.has_spare_buffers(),
        "the ring deepened without running dry"
    );
    // 40 streams of 64 KiB waiting at once, 160 buffers where the ring
    // holds 64: it runs dry, the recvs it failed are armed again, every
    // byte arrives in order, and the ring deepens.
    let pairs: Vec<_> = (0..40).map(|_| tcp_pair()).collect();
    let sent = |k: usize| -> Vec<u8> { (0..65536usize).map(|i| ((i + k) % 253) as u8).collect() };
    for (k, (_, theirs)) in pairs.iter().enumerate() {
        (&*theirs).write_all(&sent(k)).unwrap();
    }
    std::thread::sleep(Duration::from_millis(50));
    for (k, (ours, _)) in pairs.iter().enumerate() {
        d.arm_recv(k as u32, ours.as_raw_fd());
    }
    let mut got = vec![Vec::new(); pairs.len()];
    let (mut dry, mut armed) = (0, pairs.len());
    let end = Instant::now() + Duration::from_secs(5);
    while armed > 0 {
        assert!(Instant::now() < end, "{armed} recvs still armed");
        let mut out = Vec::new();
        d.wait(Some(Duration::from_millis(50)), &mut out).unwrap();
        let mut bids = Vec::new();
        for c in out {
            let Completion::Recv { slot, result, more } = c else {
                panic!("unexpected {c:?}");
            };
            let k = slot as usize;
            match result {
                RecvResult::Data(chunk) => {
                    // SAFETY: the chunk's buffer is ours until released.
                    got[k].extend_from_slice(unsafe {
                        std::slice::from_raw_parts(chunk.ptr, chunk.len)
                    });
                    bids.push(chunk.bid);
                }
                RecvResult::NoBuffers => dry += 1,
                other => panic!("unexpected {other:?}"),
            }
            if !more {
                armed -= 1;
                if got[k].len() < 65536 {
                    d.arm_recv(slot, pairs[k].0.as_raw_fd());
                    armed += 1;
                }
            }
        }
        bids.into_iter().for_each(|bid| d.release(bid));
        if got.iter().all(|g| g.len() == 65536) {
            for (k, (ours, _)) in pairs.iter().enumerate() {
                d.cancel_recv(k as u32, ours.as_raw_fd());
            }
            while d.in_flight() > 0 {
                assert!(Instant::now() < end, "cancels never completed");
                d.wait(Some(Duration::from_millis(50)), &mut Vec::new())
                    .unwrap();
            }
            break;
        }
    }
    for (k, g) in got.iter().enumerate() {
        assert!(*g == sent(k), "stream {k}: bytes lost or out of order");
    }
    assert!(dry > 0, "the ring never ran dry");
    assert!(d.has_spare_buffers(), "the ring never deepened");
    // A quiet while: the trim brings it back to its floor.
    d.trim_buffers();
    d.trim_buffers();
    assert!(!d.has_spare_buffers(), "the ring stayed deep");
}

#[test]
fn a_ring_entry_the_kernel_shortened_holds_only_its_length() {
    // Kernels before 7.0 (and its stable backports) write a shortened
    // length into a bundle's first entry and leave it there, even when the
    // recv then read nothing (a peer's FIN right behind its data made it
    // expect one byte). The next bundle must take that entry's length, not
    // the buffer size, or it delivers stale bytes and loses a buffer.
    let Ok(mut d) = UringDriver::new(512, 16384) else {
        return; // io_uring refused here
    };
    d.bufs.shorten_head(1);
    let (ours, theirs) = tcp_pair();
    let sent: Vec<u8> = (0..40_000u32).map(|i| (i % 241) as u8).collect();
    (&theirs).write_all(&sent).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    let r = receive(&mut d, ours.as_raw_fd(), sent.len());
    assert!(r.bytes == sent, "bytes lost, stale or out of order");
    // The shortened entry's one byte, then whole buffers.
    assert!(r.bids.len() >= 4, "{:?}", r.bids);
}
