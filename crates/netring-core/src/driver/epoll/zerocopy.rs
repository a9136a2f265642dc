//! Zero-copy sends on epoll (`MSG_ZEROCOPY`, msg_zerocopy.rst): the send,
//! its notification on the socket's error queue, and sockets kept open
//! after their connection ended until the kernel is done with its buffers.
//!
//! The kernel numbers a socket's zero-copy sends itself: each `sendmsg` with
//! `MSG_ZEROCOPY` that takes bytes gets the next 32-bit id (one that takes
//! nothing gives its id back), and a notification names a range of ids,
//! `ee_info..=ee_data`, with `SO_EE_CODE_ZEROCOPY_COPIED` when the kernel
//! copied after all (loopback: always). [`ZcSocket`] maps those ids to the
//! engine's per-slot sequence numbers ([`super::super::SendState`]).
//!
//! Notifications come only through the socket: closed, they are lost, and
//! the buffers could never be released safely (the kernel may still send
//! from them). So a connection that ends with notifications owed hands its
//! socket to a [`Retired`] entry instead of closing it: half-closed (or
//! reset, which drops what the kernel still queues and notifies at once),
//! registered edge-triggered for `EPOLLERR`, closed when the last
//! notification is in. One whose peer takes nothing for [`RETIRE_WAIT`]
//! (no notification comes) is reset; one still owing [`RESET_WAIT`] after
//! that is closed, and the engine told (`Completion::SendAbandoned`) to
//! never release those buffers (leaked, like an engine's that stops with
//! notifications owed).

use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use crate::driver::Completion;

/// How long a retired socket may go without a notification (its peer
/// taking nothing) before it is reset.
pub(super) const RETIRE_WAIT: Duration = Duration::from_secs(30);
/// How long a reset socket may still owe notifications before it is
/// closed anyway (its buffers leaked).
pub(super) const RESET_WAIT: Duration = Duration::from_secs(2);

/// `SO_EE_ORIGIN_ZEROCOPY` and `SO_EE_CODE_ZEROCOPY_COPIED`
/// (linux/errqueue.h; not in the libc crate).
const SO_EE_ORIGIN_ZEROCOPY: u8 = 5;
const SO_EE_CODE_ZEROCOPY_COPIED: u8 = 1;

/// A connection's zero-copy sends whose notification is owed.
#[derive(Default)]
pub(super) struct ZcSocket {
    /// `SO_ZEROCOPY` is set on the socket.
    enabled: bool,
    /// The id the kernel gives the socket's next zero-copy send.
    next_id: u32,
    /// (kernel id, the engine's sequence), in id order.
    owed: VecDeque<(u32, u32)>,
}

impl ZcSocket {
    pub(super) fn owes(&self) -> bool {
        !self.owed.is_empty()
    }
}

/// What one zero-copy send attempt did.
pub(super) enum ZcSend {
    /// Sent zero-copy: bytes taken, a notification owed for `seq`.
    Sent(usize),
    /// The socket buffer is full: wait for `EPOLLOUT`.
    Full,
    /// The kernel will not go zero-copy for this send (`ENOBUFS`: the
    /// socket's notification memory is spent): send it normally.
    Plain,
    /// It failed; `EOPNOTSUPP` where the socket refuses `SO_ZEROCOPY` (the
    /// engine sends it again, normally).
    Failed(io::Error),
}

/// One non-blocking zero-copy `sendmsg` of `iov` on `fd` as send `seq`.
pub(super) fn try_send(fd: RawFd, zc: &mut ZcSocket, iov: &[libc::iovec], seq: u32) -> ZcSend {
    if !zc.enabled {
        let on: libc::c_int = 1;
        // SAFETY: a valid socket option of `c_int` size, read by the call.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_ZEROCOPY,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r != 0 {
            // NOTE: whatever the reason (EOPNOTSUPP, or ENOTSUPP on a Unix
            // socket before Linux 5.18): refused, so sent normally.
            return ZcSend::Failed(io::Error::from_raw_os_error(libc::EOPNOTSUPP));
        }
        zc.enabled = true;
    }
    // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = iov.as_ptr().cast_mut();
    msg.msg_iovlen = iov.len() as _;
    let flags = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT | libc::MSG_ZEROCOPY;
    loop {
        // SAFETY: the iovecs describe the connection's pinned send-queue
        // buffers, alive and unmodified until the notification of this
        // send is in (the engine keeps them: `BufCache::hold_for`).
        let n = unsafe { libc::sendmsg(fd, &msg, flags) };
        if n > 0 {
            zc.owed.push_back((zc.next_id, seq));
            zc.next_id = zc.next_id.wrapping_add(1);
            return ZcSend::Sent(n as usize);
        }
        if n == 0 {
            return ZcSend::Plain; // nothing taken, no id used: plain retry
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return ZcSend::Full,
            Some(libc::EINTR) => {}
            Some(libc::ENOBUFS) => return ZcSend::Plain,
            _ => return ZcSend::Failed(e),
        }
    }
}

/// Read every notification queued on `fd`'s error queue into
/// `SendNotified` completions for `slot`; whether any came.
pub(super) fn drain(fd: RawFd, slot: u32, zc: &mut ZcSocket, out: &mut Vec<Completion>) -> bool {
    let before = zc.owed.len();
    // Room for one IPv6 or IPv4 `sock_extended_err` with its offender.
    let mut control = [0u64; 16];
    loop {
        // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `msg` has no iovecs and a control buffer of the size it
        // names, alive for the call.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_ERRQUEUE | libc::MSG_DONTWAIT) };
        if n < 0 {
            if io::Error::last_os_error().raw_os_error() == Some(libc::EINTR) {
                continue;
            }
            return zc.owed.len() != before; // EAGAIN: drained
        }
        // SAFETY: the kernel filled `msg_controllen` bytes of `control` with
        // well-formed control messages; the CMSG macros walk them.
        let mut cmsg = unsafe { libc::CMSG_FIRSTHDR(&msg) };
        while !cmsg.is_null() {
            // SAFETY: `cmsg` points at a header inside `control`.
            let header = unsafe { &*cmsg };
            let is_error = matches!(
                (header.cmsg_level, header.cmsg_type),
                (libc::SOL_IP, libc::IP_RECVERR) | (libc::SOL_IPV6, libc::IPV6_RECVERR)
            );
            if is_error {
                // SAFETY: an IP(V6)_RECVERR message carries a
                // `sock_extended_err` (unaligned read: control data).
                let err: libc::sock_extended_err =
                    unsafe { std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast()) };
                if err.ee_errno == 0 && err.ee_origin == SO_EE_ORIGIN_ZEROCOPY {
                    let copied = err.ee_code & SO_EE_CODE_ZEROCOPY_COPIED != 0;
                    notified(slot, zc, err.ee_info, err.ee_data, copied, out);
                }
            }
            // SAFETY: as above; null after the last message.
            cmsg = unsafe { libc::CMSG_NXTHDR(&msg, cmsg) };
        }
    }
}

/// The kernel is done with ids `lo..=hi` (wrapping).
fn notified(
    slot: u32,
    zc: &mut ZcSocket,
    lo: u32,
    hi: u32,
    copied: bool,
    out: &mut Vec<Completion>,
) {
    let span = hi.wrapping_sub(lo);
    zc.owed.retain(|&(id, seq)| {
        let done = id.wrapping_sub(lo) <= span;
        if done {
            out.push(Completion::SendNotified { slot, seq, copied });
        }
        !done
    });
}

/// A socket whose connection ended while notifications were owed.
pub(super) struct Retired {
    pub(super) fd: OwnedFd,
    pub(super) slot: u32,
    pub(super) zc: ZcSocket,
    pub(super) deadline: Instant,
    /// Reset already (`RESET_WAIT` runs).
    pub(super) reset: bool,
}

impl ZcSocket {
    /// Give up on every notification still owed (`SendAbandoned`).
    pub(super) fn abandon(&mut self, slot: u32, out: &mut Vec<Completion>) {
        log::warn!(
            "netring: the kernel did not release {} zero-copy send(s) of a closed connection in time; their buffers are leaked",
            self.owed.len()
        );
        for (_, seq) in self.owed.drain(..) {
            out.push(Completion::SendAbandoned { slot, seq });
        }
    }
}

impl Retired {
    /// Keep `fd` open for the notifications `zc` owes: half-close it (the
    /// peer gets the rest and an EOF), or with `reset`, reset it (what is
    /// still queued is dropped and notified at once).
    pub(super) fn new(fd: OwnedFd, slot: u32, zc: ZcSocket, reset: bool, now: Instant) -> Self {
        let mut retired = Retired {
            fd,
            slot,
            zc,
            deadline: now + RETIRE_WAIT,
            reset: false,
        };
        if reset {
            retired.reset(now);
        } else {
            let _ = rustix::net::shutdown(retired.fd.as_fd(), rustix::net::Shutdown::Write);
        }
        retired
    }

    /// Reset the connection but keep the socket: `connect(AF_UNSPEC)`
    /// (tcp_disconnect: an RST, the send queue dropped and its buffers
    /// notified).
    pub(super) fn reset(&mut self, now: Instant) {
        self.reset = true;
        self.deadline = now + RESET_WAIT;
        let _ = rustix::net::connect_unspec(self.fd.as_fd());
    }

    pub(super) fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
