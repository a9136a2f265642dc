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
