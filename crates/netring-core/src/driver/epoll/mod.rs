//! The epoll driver: the readiness-based fallback, with the io_uring
//! driver's semantics as seen from the loop.
//!
//! One epoll set per IO thread, created on that thread. Each socket has at
//! most one registration, level-triggered, carrying the union of what its
//! armed operations wait for (a connection's recv: `EPOLLIN | EPOLLRDHUP`;
//! its send: `EPOLLOUT`; a listener's accept and the mailbox eventfd:
//! `EPOLLIN`). The event data is a [`super::Token`] (operation kind and slot
//! or listener index), the layout the io_uring driver's `user_data` uses;
//! all of a connection's interests share `KIND_CONN`.
//!
//! How each operation maps onto readiness:
//!
//! - **recv** (multishot on io_uring): while armed, each `EPOLLIN` reads up
//!   to `RECV_BUFFERS_PER_READINESS` buffers taken from the `BufPool`
//!   (so an idle connection owns none), stopping at a short read or EAGAIN;
//!   each becomes `Recv { Data, more: true }`. EOF, an error or a dry pool
//!   end the recv (`more: false`) and drop its interest.
//! - **accept** (multishot on io_uring): each `EPOLLIN` accepts up to
//!   `ACCEPTS_PER_READINESS` connections, `more: true` each; running out of
//!   descriptors or memory (or any non-transient error) ends the accept and
//!   drops its interest, and the loop re-arms it after a backoff.
//! - **send**: tried at once with `sendmsg(MSG_NOSIGNAL | MSG_DONTWAIT)`; its
//!   `Sent` is queued for the next [`Driver::wait`] unless the socket buffer
//!   is full, in which case the send waits for `EPOLLOUT` and is retried.
//! - **zero-copy send** (`MSG_ZEROCOPY`, `zerocopy.rs`): as a send; one
//!   that took bytes owes a notification, read from the socket's error
//!   queue on `EPOLLERR` (the socket stays registered for it, edge-triggered
//!   when nothing else is armed). [`Driver::close`] keeps a socket that
//!   still owes some open until they are in ([`Driver::next_deadline`]:
//!   reset after `RETIRE_WAIT`).
//! - **cancel**: removes the interest and queues the operation's final
//!   completion for the next `wait`, never delivering it inside the call, as
//!   `IORING_OP_ASYNC_CANCEL` does. An operation whose final completion is
//!   already produced is no longer armed here, so cancelling it does nothing.
//!
//! Invariants: a connection is registered exactly when it has an armed
//! operation; [`Driver::in_flight`] is the number of armed operations plus
//! final completions queued but not yet delivered; completions queued by
//! calls between two waits are delivered before the readiness of the next
//! one, in the order they were queued.
//!
//! Some facts about epoll this relies on (epoll(7), epoll_ctl(2), accept(2)):
//!
//! - `EPOLLERR` and `EPOLLHUP` are reported whether asked for or not. A
//!   registration with an empty interest therefore still fires, and with
//!   level triggering it fires on every wait: a socket with nothing armed
//!   must be deleted from the set, not modified to "nothing".
//! - A registration belongs to the open file description, not the number:
//!   closing a descriptor removes it only if no duplicate exists. The loop
//!   calls [`Driver::forget`] before closing, which deletes it explicitly,
//!   so a reused descriptor number never inherits a stale registration.
//! - Level triggering reports again whatever was left unconsumed, so the
//!   per-readiness bounds above cost nothing but a later report; they keep
//!   one busy socket from starving the others in a turn.
//! - `EPOLLRDHUP` (Linux 2.6.17) reports the peer's `shutdown(SHUT_WR)`; the
//!   recv reads the EOF (or the data before it) on that readiness.
//! - accept(2): Linux passes network errors already pending on a new
//!   connection to `accept`, and a connection reset while queued gives
//!   `ECONNABORTED`. These concern one connection, not the listener: they are
//!   reported with `more: true` and accepting goes on.
//!
//! Size: this file is over 600 lines on purpose: it is the trait's 25
//! operations side by side with the readiness each one waits for (one
//! registration per socket ties them together), plus the facts above. The
//! syscalls a readiness triggers are in `syscalls.rs`, the buffer pool in
//! `bufpool.rs`.

mod bufpool;
mod syscalls;
#[cfg(test)]
mod tests;
mod zerocopy;

use std::collections::HashMap;
use std::io::{self};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use rustix::event::epoll::{self, EventData, EventFlags};
use rustix::event::Timespec;
use rustix::io::Errno;
use rustix::net::SocketFlags;

use super::{Completion, DgramResult, Driver, RecvResult, SendState, Token};
use crate::config::Backend;
use crate::driver::file::send_file_now;
use bufpool::BufPool;
use syscalls::{read_datagrams, read_ready, try_send, try_send_msg};
use zerocopy::{Retired, ZcSend, ZcSocket};

const KIND_ACCEPT: u8 = 1;
const KIND_CONN: u8 = 2;
const KIND_DGRAM: u8 = 3;
const KIND_WAKE: u8 = 4;
/// A socket kept open for its zero-copy notifications (`zerocopy.rs`).
const KIND_RETIRED: u8 = 5;

/// Readiness events taken from the kernel per wait.
const EVENTS_PER_WAIT: usize = 256;
/// Reads per recv readiness before the next socket gets its turn, and the
/// bytes they may bring: 256 KiB (asyncio's read size; the dispatch joins
/// them into one `data_received`). A read that does not fill its buffer
/// ends the readiness, so only streams ever read more than once. Allowing
/// 16 reads instead of 4 cost 20 % less CPU per byte at 1 MiB messages
/// (ab_pairs.py, bulk, epoll); 64/256 KiB were level.
const RECV_BUFFERS_PER_READINESS: usize = 16;
const READ_BYTES_PER_READINESS: usize = 256 * 1024;
/// After a read filled a small buffer, the next reads of that readiness go
/// to one of these large buffers when one is free: a 256 KiB message is two
/// `recv`s, not sixteen (allocated on first use, freed by the trim once
/// unused; never more than this many per IO thread: 4 MiB).
const LARGE_BUFFERS: usize = 16;
const LARGE_BUFFER_BYTES: usize = 256 * 1024;
/// The bit that marks a large buffer's id (small ids stay below 32,768:
/// `buffers_per_thread` is at most that).
const LARGE_BID: u16 = 0x8000;
/// Datagrams read per endpoint readiness.
const DGRAMS_PER_READINESS: usize = 32;
/// Connections accepted per listener readiness.
const ACCEPTS_PER_READINESS: usize = 64;
/// Longest single wait; the loop computes a new timeout every turn anyway.
const MAX_WAIT: Duration = Duration::from_secs(3600);

fn event_data(kind: u8, id: u32) -> EventData {
    EventData::new_u64(Token::new(kind, id).pack())
}

/// Borrow a descriptor the loop owns, for one syscall.
fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: the driver only uses descriptors the loop passed in, while the
    // loop keeps them open: a connection's until `forget` (which the loop
    // calls before closing it), a listener's until its accept's final
    // completion (its interest is gone by then), the mailbox eventfd's until
    // the loop has exited. Each borrow is used for a single call.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Whether `completion` is its operation's last.
fn is_final(completion: &Completion) -> bool {
    match completion {
        Completion::Accepted { more, .. }
        | Completion::Recv { more, .. }
        | Completion::RecvFrom { more, .. } => !*more,
        Completion::Sent { .. } | Completion::Connected { .. } | Completion::SentTo { .. } => true,
        // NOTE: a notification is not an operation (`in_flight`).
        Completion::Woken | Completion::SendNotified { .. } | Completion::SendAbandoned { .. } => {
            false
        }
    }
}

/// An accept error that concerns one incoming connection, not the listener.
fn is_transient_accept_error(e: Errno) -> bool {
    matches!(
        e,
        Errno::CONNABORTED
            | Errno::PROTO
            | Errno::PERM
            | Errno::NETDOWN
            | Errno::NOPROTOOPT
            | Errno::HOSTDOWN
            | Errno::NONET
            | Errno::HOSTUNREACH
            | Errno::OPNOTSUPP
            | Errno::NETUNREACH
    )
}

/// A send that found the socket buffer full, kept to retry it: its iovecs
/// (and its zero-copy sequence), or its file range.
enum WaitingSend {
    Iov(Vec<libc::iovec>, Option<u32>),
    File(crate::driver::FileSpan),
}

// SAFETY: the iovecs point into the send queue of a connection owned by the
// same IO thread as this driver; the driver never leaves that thread while
// in use (it is `Send` only so the loop can hand `&mut` to the wait closure).
unsafe impl Send for WaitingSend {}

/// The driver's side of one connection slot (12 bytes: one per
/// connection, idle ones included).
struct ConnOps {
    fd: RawFd,
    /// The interest registered in the epoll set; empty: not registered.
    registered: EventFlags,
    /// The recv is armed and its final completion not yet produced.
    recv: bool,
    /// A send is waiting for `EPOLLOUT` (its iovecs in `EpollDriver::sends`).
    sending: bool,
    /// A non-blocking connect waiting for `EPOLLOUT`.
    connect: bool,
    /// Zero-copy notifications are owed (`EpollDriver::zc`): registered
    /// for `EPOLLERR` even with nothing armed.
    zc: bool,
}

/// A datagram waiting for `EPOLLOUT`: its number and message header.
struct WaitingDgram(u16, *const libc::msghdr);

// SAFETY: the header lives in the endpoint's send window on the same IO
// thread, untouched until this datagram's `SentTo` (see `WaitingSend`).
unsafe impl Send for WaitingDgram {}

/// The driver's side of one UDP endpoint.
struct DgramOps {
    fd: RawFd,
    registered: EventFlags,
    /// The recv is armed and its final completion not yet produced.
    recv: bool,
    /// Datagrams waiting for `EPOLLOUT`, in order.
    waiting: std::collections::VecDeque<WaitingDgram>,
}

/// An epoll set with its receive buffers.
pub struct EpollDriver {
    epoll: OwnedFd,
    pool: BufPool,
    /// Large buffers for streams (see `LARGE_BUFFERS`).
    large: BufPool,
    /// Indexed by slot; `None` for slots the driver has nothing on.
    conns: Vec<Option<ConnOps>>,
    /// UDP endpoints, indexed by their own slot.
    dgrams: Vec<Option<DgramOps>>,
    /// Sends that found the socket buffer full, by slot, until `EPOLLOUT`.
    sends: HashMap<u32, WaitingSend>,
    /// The buffer of file sends that cannot use `sendfile` (see `driver::file`).
    file_scratch: Vec<u8>,
    /// Listeners whose accept is armed, with their descriptors.
    listeners: HashMap<usize, RawFd>,
    /// The mailbox eventfd while it is registered.
    wake_fd: Option<RawFd>,
    /// Completions produced between waits, delivered by the next one.
    pending: Vec<Completion>,
    in_flight: usize,
    /// The kernel has `MSG_ZEROCOPY` for TCP and reports copies.
    zerocopy: bool,
    /// Zero-copy state of connections that sent zero-copy, by slot.
    zc: HashMap<u32, ZcSocket>,
    /// Sockets of ended connections still owed notifications, by
    /// descriptor (`zerocopy.rs`).
    retired: HashMap<RawFd, Retired>,
}

impl EpollDriver {
    /// Create an epoll set on the calling thread, with a pool of `buffers`
    /// receive buffers of `buffer_size` bytes (allocated as first needed).
    pub fn new(buffers: usize, buffer_size: usize) -> Result<Self, String> {
        let epoll = epoll::create(epoll::CreateFlags::CLOEXEC)
            .map_err(|e| format!("epoll_create1: {}", io::Error::from(e)))?;
        Ok(EpollDriver {
            epoll,
            pool: BufPool::new(buffers, buffer_size)?,
            large: BufPool::new(LARGE_BUFFERS, LARGE_BUFFER_BYTES)?.keeping_none(),
            conns: Vec::new(),
            dgrams: Vec::new(),
            sends: HashMap::new(),
            file_scratch: Vec::new(),
            listeners: HashMap::new(),
            wake_fd: None,
            pending: Vec::new(),
            in_flight: 0,
            zerocopy: super::kernel_at_least(4, 19),
            zc: HashMap::new(),
            retired: HashMap::new(),
        })
    }

    /// What the driver holds for `slot`, created on first use.
    fn conn_entry(conns: &mut Vec<Option<ConnOps>>, slot: u32, fd: RawFd) -> &mut ConnOps {
        let index = slot as usize;
        if conns.len() <= index {
            conns.resize_with(index + 1, || None);
        }
        let conn = conns[index].get_or_insert_with(|| ConnOps {
            fd,
            registered: EventFlags::empty(),
            recv: false,
            sending: false,
            connect: false,
            zc: false,
        });
        debug_assert_eq!(conn.fd, fd, "slot {slot} reused without forget");
        conn
    }

    /// Bring the registration of `conn` in line with its armed operations.
    fn sync_interest(epoll: &OwnedFd, slot: u32, conn: &mut ConnOps) -> io::Result<()> {
        let mut want = EventFlags::empty();
        if conn.recv {
            want |= EventFlags::IN | EventFlags::RDHUP;
        }
        if conn.sending || conn.connect {
            want |= EventFlags::OUT;
        }
        if want.is_empty() && conn.zc {
            // Only the error queue's notifications: once each.
            want = EventFlags::ERR | EventFlags::ET;
        }
        if want == conn.registered {
            return Ok(());
        }
        let fd = borrow(conn.fd);
        if want.is_empty() {
            // NOTE: delete, never modify to an empty interest: EPOLLERR and
            // EPOLLHUP would still be reported, on every wait.
            conn.registered = EventFlags::empty();
            return Ok(epoll::delete(epoll, fd)?);
        }
        let data = event_data(KIND_CONN, slot);
        if conn.registered.is_empty() {
            epoll::add(epoll, fd, data, want)?;
        } else {
            epoll::modify(epoll, fd, data, want)?;
        }
        conn.registered = want;
        Ok(())
    }

    /// `EPOLLIN` on an armed listener: accept what is queued.
    fn accept_ready(&mut self, listener: usize, out: &mut Vec<Completion>) {
        let Some(&fd) = self.listeners.get(&listener) else {
            return;
        };
        for _ in 0..ACCEPTS_PER_READINESS {
            let flags = SocketFlags::NONBLOCK | SocketFlags::CLOEXEC;
            match rustix::net::accept_with(borrow(fd), flags) {
                Ok(socket) => out.push(Completion::Accepted {
                    listener,
                    result: Ok(socket),
                    more: true,
                }),
                Err(Errno::AGAIN) => return,
                Err(Errno::INTR) => {}
                Err(e) if is_transient_accept_error(e) => out.push(Completion::Accepted {
                    listener,
                    result: Err(e.into()),
                    more: true,
                }),
                Err(e) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM (or a broken listener):
                    // the queued connection stays queued and level triggering
                    // would report it on every wait. End the accept, as
                    // io_uring's multishot accept ends on an error; the loop
                    // re-arms it after a backoff.
                    self.listeners.remove(&listener);
                    let _ = epoll::delete(&self.epoll, borrow(fd));
                    out.push(Completion::Accepted {
                        listener,
                        result: Err(e.into()),
                        more: false,
                    });
                    return;
                }
            }
        }
    }

    /// Readiness on a connection: read for its recv, retry its send.
    fn conn_ready(&mut self, slot: u32, flags: EventFlags, out: &mut Vec<Completion>) {
        let Some(conn) = self.conns.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let mut ended = false;
        if conn.zc && flags.contains(EventFlags::ERR) {
            if let Some(zc) = self.zc.get_mut(&slot) {
                zerocopy::drain(conn.fd, slot, zc, out);
                conn.zc = zc.owes();
                ended |= !conn.zc;
            }
        }
        let readable = EventFlags::IN | EventFlags::RDHUP | EventFlags::HUP | EventFlags::ERR;
        if conn.recv && flags.intersects(readable) {
            if let Some(result) = read_ready(conn.fd, slot, &mut self.pool, &mut self.large, out) {
                conn.recv = false;
                ended = true;
                out.push(Completion::Recv {
                    slot,
                    result,
                    more: false,
                });
            }
        }
        let writable = EventFlags::OUT | EventFlags::HUP | EventFlags::ERR;
        if conn.connect && flags.intersects(writable) {
            // connect(2): "select(2) for writability; then read SO_ERROR".
            conn.connect = false;
            ended = true;
            let result = match socket2::SockRef::from(&borrow(conn.fd)).take_error() {
                Ok(None) => Ok(()),
                Ok(Some(e)) | Err(e) => Err(e),
            };
            out.push(Completion::Connected { slot, result });
        }
        let waiting = conn.sending && flags.intersects(writable);
        if let Some(waiting) = self.sends.get(&slot).filter(|_| waiting) {
            let retried = match waiting {
                WaitingSend::Iov(iov, seq) => {
                    Self::send_iov(&mut self.zc, slot, conn.fd, iov, *seq)
                }
                WaitingSend::File(span) => {
                    send_file_now(conn.fd, *span, &mut self.file_scratch).map(|r| (r, false))
                }
            };
            if let Some((result, notify)) = retried {
                self.sends.remove(&slot);
                conn.sending = false;
                conn.zc |= notify;
                ended = true;
                out.push(Completion::Sent {
                    slot,
                    result,
                    notify,
                });
            }
        }
        if ended {
            if let Err(e) = Self::sync_interest(&self.epoll, slot, conn) {
                log::warn!("netring: epoll could not drop the interest of slot {slot}: {e}");
            }
        }
    }

    /// Send `iov` now: zero-copy as send `seq` when given (falling back to
    /// a plain send where the kernel says so). `None`: the socket is full;
    /// else the result and whether a notification is owed for it.
    #[inline(always)]
    fn send_iov(
        zc: &mut HashMap<u32, ZcSocket>,
        slot: u32,
        fd: RawFd,
        iov: &[libc::iovec],
        seq: Option<u32>,
    ) -> Option<(io::Result<usize>, bool)> {
        match seq {
            // NOTE: the common case stays what it was: one inlined sendmsg.
            None => try_send(fd, iov).map(|r| (r, false)),
            Some(seq) => Self::send_zerocopy(zc, slot, fd, iov, seq),
        }
    }

    /// A zero-copy send of `slot` owes a notification: keep its socket
    /// registered for `EPOLLERR`.
    #[cold]
    fn watch_notifications(&mut self, slot: u32, fd: RawFd) {
        let conn = Self::conn_entry(&mut self.conns, slot, fd);
        if !conn.zc {
            conn.zc = true;
            if let Err(e) = Self::sync_interest(&self.epoll, slot, conn) {
                log::warn!(
                    "netring: epoll could not watch slot {slot}'s zero-copy notifications: {e}"
                );
            }
        }
    }

    #[cold]
    fn send_zerocopy(
        zc: &mut HashMap<u32, ZcSocket>,
        slot: u32,
        fd: RawFd,
        iov: &[libc::iovec],
        seq: u32,
    ) -> Option<(io::Result<usize>, bool)> {
        match zerocopy::try_send(fd, zc.entry(slot).or_default(), iov, seq) {
            ZcSend::Sent(n) => Some((Ok(n), true)),
            ZcSend::Full => None,
            ZcSend::Failed(e) => Some((Err(e), false)),
            ZcSend::Plain => try_send(fd, iov).map(|r| (r, false)),
        }
    }

    /// `EPOLLERR` on a retired socket: its notifications; closed when the
    /// last is in.
    fn retired_ready(&mut self, fd: RawFd, out: &mut Vec<Completion>) {
        let Some(r) = self.retired.get_mut(&fd) else {
            return;
        };
        if zerocopy::drain(r.raw(), r.slot, &mut r.zc, out) && !r.reset {
            r.deadline = Instant::now() + zerocopy::RETIRE_WAIT; // progress
        }
        if !r.zc.owes() {
            self.close_retired(fd);
        }
    }

    /// Close a retired socket (its registration deleted first: a copy of
    /// the descriptor elsewhere would keep it alive).
    fn close_retired(&mut self, fd: RawFd) {
        if let Some(r) = self.retired.remove(&fd) {
            let _ = epoll::delete(&self.epoll, borrow(r.raw()));
        }
    }

    /// Keep the socket of a connection that ended with notifications owed
    /// (or close it at once when they are all in by now).
    fn retire(&mut self, slot: u32, fd: OwnedFd, mut zc: ZcSocket, reset: bool) {
        zerocopy::drain(fd.as_raw_fd(), slot, &mut zc, &mut self.pending);
        if !zc.owes() {
            return super::close_socket(fd, reset);
        }
        let raw = fd.as_raw_fd();
        let mut r = Retired::new(fd, slot, zc, reset, Instant::now());
        zerocopy::drain(raw, slot, &mut r.zc, &mut self.pending);
        if !r.zc.owes() {
            return;
        }
        let data = event_data(KIND_RETIRED, raw as u32);
        if let Err(e) = epoll::add(
            &self.epoll,
            borrow(raw),
            data,
            EventFlags::ERR | EventFlags::ET,
        ) {
            log::warn!("netring: epoll could not watch a closing socket's zero-copy notifications ({e}); its send buffers are leaked");
            r.zc.abandon(slot, &mut self.pending);
            return;
        }
        self.retired.insert(raw, r);
    }

    /// Retired sockets past their deadline: reset (the kernel drops what
    /// it still queues and notifies it), or, reset already, closed with
    /// their buffers leaked.
    fn expire_retired(&mut self, out: &mut Vec<Completion>) {
        let now = Instant::now();
        if self.next_deadline().is_none_or(|d| d > now) {
            return;
        }
        let due: Vec<RawFd> = self
            .retired
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(&fd, _)| fd)
            .collect();
        for fd in due {
            let Some(r) = self.retired.get_mut(&fd) else {
                continue;
            };
            if !r.reset {
                r.reset(now);
                self.retired_ready(fd, out);
            } else {
                r.zc.abandon(r.slot, out);
                self.close_retired(fd);
            }
        }
    }

    fn dgram_entry(dgrams: &mut Vec<Option<DgramOps>>, slot: u32, fd: RawFd) -> &mut DgramOps {
        let index = slot as usize;
        if dgrams.len() <= index {
            dgrams.resize_with(index + 1, || None);
        }
        dgrams[index].get_or_insert_with(|| DgramOps {
            fd,
            registered: EventFlags::empty(),
            recv: false,
            waiting: std::collections::VecDeque::new(),
        })
    }

    fn sync_dgram(epoll: &OwnedFd, slot: u32, ep: &mut DgramOps) -> io::Result<()> {
        let mut want = EventFlags::empty();
        if ep.recv {
            want |= EventFlags::IN;
        }
        if !ep.waiting.is_empty() {
            want |= EventFlags::OUT;
        }
        if want == ep.registered {
            return Ok(());
        }
        let fd = borrow(ep.fd);
        if want.is_empty() {
            ep.registered = EventFlags::empty();
            return Ok(epoll::delete(epoll, fd)?);
        }
        let data = event_data(KIND_DGRAM, slot);
        if ep.registered.is_empty() {
            epoll::add(epoll, fd, data, want)?;
        } else {
            epoll::modify(epoll, fd, data, want)?;
        }
        ep.registered = want;
        Ok(())
    }

    /// Readiness on a UDP endpoint: read datagrams, retry waiting sends.
    fn dgram_ready(&mut self, slot: u32, flags: EventFlags, out: &mut Vec<Completion>) {
        let Some(ep) = self.dgrams.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        let mut changed = false;
        if ep.recv && flags.intersects(EventFlags::IN | EventFlags::ERR | EventFlags::HUP) {
            if let Some(result) = read_datagrams(ep.fd, slot, &mut self.pool, out) {
                ep.recv = false;
                changed = true;
                out.push(Completion::RecvFrom {
                    slot,
                    result,
                    more: false,
                });
            }
        }
        if flags.intersects(EventFlags::OUT | EventFlags::ERR | EventFlags::HUP) {
            while let Some(w) = ep.waiting.front() {
                let Some(result) = try_send_msg(ep.fd, w.1) else {
                    break;
                };
                let seq = w.0;
                ep.waiting.pop_front();
                changed = true;
                out.push(Completion::SentTo { slot, seq, result });
            }
        }
        if changed {
            if let Err(e) = Self::sync_dgram(&self.epoll, slot, ep) {
                log::warn!("netring: epoll could not update endpoint {slot}: {e}");
            }
        }
    }

    /// `EPOLLIN` on the mailbox eventfd.
    fn wake_ready(&mut self, out: &mut Vec<Completion>) {
        let Some(fd) = self.wake_fd else { return };
        let mut counter = [0u8; 8];
        // EAGAIN (nothing to read after all) is harmless: a spurious wake-up.
        let _ = rustix::io::read(borrow(fd), &mut counter);
        out.push(Completion::Woken);
    }
}

impl Driver for EpollDriver {
    fn backend(&self) -> Backend {
        Backend::Epoll
    }

    fn arm_wake(&mut self, fd: RawFd) {
        match epoll::add(
            &self.epoll,
            borrow(fd),
            event_data(KIND_WAKE, 0),
            EventFlags::IN,
        ) {
            Ok(()) => self.wake_fd = Some(fd),
            Err(e) => log::error!(
                "netring: epoll cannot watch the mailbox eventfd ({}); commands from other threads will wait",
                io::Error::from(e)
            ),
        }
    }

    fn arm_accept(&mut self, listener: usize, fd: RawFd, _one: bool) {
        // NOTE: registered without EPOLLEXCLUSIVE: every process sharing a
        // socket is woken, whoever accepts first takes the connection.
        self.in_flight += 1;
        let data = event_data(KIND_ACCEPT, listener as u32);
        match epoll::add(&self.epoll, borrow(fd), data, EventFlags::IN) {
            Ok(()) => {
                self.listeners.insert(listener, fd);
            }
            Err(e) => self.pending.push(Completion::Accepted {
                listener,
                result: Err(e.into()),
                more: false,
            }),
        }
    }

    fn cancel_accept(&mut self, listener: usize, _fd: RawFd) {
        let Some(fd) = self.listeners.remove(&listener) else {
            return; // not armed, or its final completion is on its way
        };
        let _ = epoll::delete(&self.epoll, borrow(fd));
        self.pending.push(Completion::Accepted {
            listener,
            result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
            more: false,
        });
    }

    fn arm_recv(&mut self, slot: u32, fd: RawFd) {
        self.in_flight += 1;
        let conn = Self::conn_entry(&mut self.conns, slot, fd);
        debug_assert!(!conn.recv, "recv armed twice on slot {slot}");
        conn.recv = true;
        if let Err(e) = Self::sync_interest(&self.epoll, slot, conn) {
            conn.recv = false;
            self.pending.push(Completion::Recv {
                slot,
                result: RecvResult::Err(e),
                more: false,
            });
        }
    }

    fn cancel_recv(&mut self, slot: u32, _fd: RawFd) {
        let Some(conn) = self.conns.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if !conn.recv {
            return; // its final completion is already on its way
        }
        conn.recv = false;
        if let Err(e) = Self::sync_interest(&self.epoll, slot, conn) {
            log::warn!("netring: epoll could not drop the recv interest of slot {slot}: {e}");
        }
        self.pending.push(Completion::Recv {
            slot,
            result: RecvResult::Cancelled,
            more: false,
        });
    }

    fn send(&mut self, slot: u32, fd: RawFd, state: &mut SendState) {
        self.in_flight += 1;
        let seq = state.zerocopy.filter(|_| self.zerocopy);
        let now = match state.file {
            Some(span) => send_file_now(fd, span, &mut self.file_scratch).map(|r| (r, false)),
            None => Self::send_iov(&mut self.zc, slot, fd, &state.iov, seq),
        };
        if let Some((result, notify)) = now {
            self.pending.push(Completion::Sent {
                slot,
                result,
                notify,
            });
            if notify {
                self.watch_notifications(slot, fd);
            }
            return;
        }
        let conn = Self::conn_entry(&mut self.conns, slot, fd);
        debug_assert!(!conn.sending, "two sends in flight on slot {slot}");
        conn.sending = true;
        let waiting = match state.file {
            Some(span) => WaitingSend::File(span),
            None => WaitingSend::Iov(state.iov.clone(), seq),
        };
        self.sends.insert(slot, waiting);
        if let Err(e) = Self::sync_interest(&self.epoll, slot, conn) {
            conn.sending = false;
            self.sends.remove(&slot);
            self.pending.push(Completion::Sent {
                slot,
                result: Err(e),
                notify: false,
            });
        }
    }

    fn cancel_send(&mut self, slot: u32, _fd: RawFd) {
        let Some(conn) = self.conns.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if !std::mem::take(&mut conn.sending) {
            return; // its `Sent` is already on its way
        }
        self.sends.remove(&slot);
        if let Err(e) = Self::sync_interest(&self.epoll, slot, conn) {
            log::warn!("netring: epoll could not drop the send interest of slot {slot}: {e}");
        }
        self.pending.push(Completion::Sent {
            slot,
            result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
            notify: false,
        });
    }

    fn connect(&mut self, slot: u32, fd: RawFd, addr: &socket2::SockAddr) {
        self.in_flight += 1;
        match socket2::SockRef::from(&borrow(fd)).connect(addr) {
            Ok(()) => self.pending.push(Completion::Connected {
                slot,
                result: Ok(()),
            }),
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {
                let conn = Self::conn_entry(&mut self.conns, slot, fd);
                conn.connect = true;
                if let Err(e) = Self::sync_interest(&self.epoll, slot, conn) {
                    conn.connect = false;
                    self.pending.push(Completion::Connected {
                        slot,
                        result: Err(e),
                    });
                }
            }
            Err(e) => self.pending.push(Completion::Connected {
                slot,
                result: Err(e),
            }),
        }
    }

    fn cancel_connect(&mut self, slot: u32, _fd: RawFd) {
        let Some(conn) = self.conns.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if !conn.connect {
            return; // its `Connected` is already on its way
        }
        conn.connect = false;
        if let Err(e) = Self::sync_interest(&self.epoll, slot, conn) {
            log::warn!("netring: epoll could not drop the connect interest of slot {slot}: {e}");
        }
        self.pending.push(Completion::Connected {
            slot,
            result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
        });
    }

    fn supports_zerocopy(&self) -> bool {
        self.zerocopy
    }

    fn next_deadline(&self) -> Option<Instant> {
        self.retired.values().map(|r| r.deadline).min()
    }

    fn close(&mut self, slot: u32, fd: OwnedFd, reset: bool) {
        self.forget(slot, fd.as_raw_fd());
        // NOTE: an engine without zero-copy sends: a length check per close.
        let zc = if self.zc.is_empty() {
            None
        } else {
            self.zc.remove(&slot)
        };
        match zc {
            Some(zc) if zc.owes() => self.retire(slot, fd, zc, reset),
            _ => super::close_socket(fd, reset),
        }
    }

    fn forget(&mut self, slot: u32, _fd: RawFd) {
        let Some(conn) = self.conns.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        debug_assert!(
            !conn.recv && !conn.sending && !conn.connect,
            "slot {slot} forgotten with an operation armed"
        );
        if conn.sending {
            self.sends.remove(&slot);
        }
        if !conn.registered.is_empty() {
            let _ = epoll::delete(&self.epoll, borrow(conn.fd));
        }
    }

    fn arm_recv_from(&mut self, slot: u32, fd: RawFd, _template: &libc::msghdr) {
        self.in_flight += 1;
        let ep = Self::dgram_entry(&mut self.dgrams, slot, fd);
        debug_assert!(!ep.recv, "datagram recv armed twice on endpoint {slot}");
        ep.recv = true;
        if let Err(e) = Self::sync_dgram(&self.epoll, slot, ep) {
            ep.recv = false;
            self.pending.push(Completion::RecvFrom {
                slot,
                result: DgramResult::Err(e),
                more: false,
            });
        }
    }

    fn cancel_recv_from(&mut self, slot: u32, _fd: RawFd) {
        let Some(ep) = self.dgrams.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        if !ep.recv {
            return; // its final completion is already on its way
        }
        ep.recv = false;
        if let Err(e) = Self::sync_dgram(&self.epoll, slot, ep) {
            log::warn!("netring: epoll could not drop the recv of endpoint {slot}: {e}");
        }
        self.pending.push(Completion::RecvFrom {
            slot,
            result: DgramResult::Cancelled,
            more: false,
        });
    }

    fn send_to(&mut self, slot: u32, seq: u16, fd: RawFd, msg: &libc::msghdr) {
        self.in_flight += 1;
        let ep = Self::dgram_entry(&mut self.dgrams, slot, fd);
        if ep.waiting.is_empty() {
            if let Some(result) = try_send_msg(fd, msg) {
                self.pending.push(Completion::SentTo { slot, seq, result });
                return;
            }
        }
        // The socket buffer is full (or earlier datagrams wait): keep order.
        ep.waiting.push_back(WaitingDgram(seq, msg));
        if let Err(e) = Self::sync_dgram(&self.epoll, slot, ep) {
            ep.waiting.pop_back();
            self.pending.push(Completion::SentTo {
                slot,
                seq,
                result: Err(e),
            });
        }
    }

    fn cancel_dgram(&mut self, slot: u32, fd: RawFd) {
        self.cancel_recv_from(slot, fd);
        let Some(ep) = self.dgrams.get_mut(slot as usize).and_then(Option::as_mut) else {
            return;
        };
        for w in ep.waiting.drain(..) {
            self.pending.push(Completion::SentTo {
                slot,
                seq: w.0,
                result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
            });
        }
        if let Err(e) = Self::sync_dgram(&self.epoll, slot, ep) {
            log::warn!("netring: epoll could not drop endpoint {slot}: {e}");
        }
    }

    fn forget_dgram(&mut self, slot: u32, _fd: RawFd) {
        let Some(ep) = self.dgrams.get_mut(slot as usize).and_then(Option::take) else {
            return;
        };
        debug_assert!(!ep.recv && ep.waiting.is_empty());
        if !ep.registered.is_empty() {
            let _ = epoll::delete(&self.epoll, borrow(ep.fd));
        }
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        // Completions already produced must not wait behind a blocking wait.
        let timeout = if self.pending.is_empty() {
            timeout
        } else {
            Some(Duration::ZERO)
        };
        let ts = timeout.map(|d| {
            let d = d.min(MAX_WAIT);
            Timespec {
                tv_sec: d.as_secs() as _,
                tv_nsec: d.subsec_nanos() as _,
            }
        });
        // NOTE: the event list lives on the stack: rustix's `Event` holds a
        // pointer-sized union and is not `Send`, which the driver must be.
        let mut events = [MaybeUninit::<epoll::Event>::uninit(); EVENTS_PER_WAIT];
        let waited = epoll::wait(&self.epoll, &mut events, ts.as_ref());
        let first = out.len();
        out.append(&mut self.pending);
        let result = match waited {
            Ok((ready, _)) => {
                for &event in ready.iter() {
                    let flags = event.flags;
                    let Token { kind, id, .. } = Token::unpack(event.data.u64());
                    match kind {
                        KIND_CONN => self.conn_ready(id, flags, out),
                        KIND_DGRAM => self.dgram_ready(id, flags, out),
                        KIND_ACCEPT => self.accept_ready(id as usize, out),
                        KIND_WAKE => self.wake_ready(out),
                        KIND_RETIRED => self.retired_ready(id as RawFd, out),
                        _ => {}
                    }
                }
                if !self.retired.is_empty() {
                    self.expire_retired(out);
                }
                Ok(())
            }
            Err(Errno::INTR) => Ok(()),
            Err(e) => Err(e.into()),
        };
        let finished = out[first..].iter().filter(|c| is_final(c)).count();
        debug_assert!(
            finished <= self.in_flight,
            "more final completions than operations"
        );
        self.in_flight = self.in_flight.saturating_sub(finished);
        result
    }

    fn release(&mut self, bid: u16) {
        if bid & LARGE_BID != 0 {
            self.large.put(bid & !LARGE_BID);
        } else {
            self.pool.put(bid);
        }
    }

    fn has_spare_buffers(&self) -> bool {
        self.pool.has_spares() || self.large.has_spares()
    }

    fn trim_buffers(&mut self) -> usize {
        self.pool.trim() + self.large.trim()
    }

    fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    fn submit(&mut self) -> io::Result<()> {
        Ok(()) // every operation reached the kernel when it was made
    }

    fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn cancel_wake(&mut self) {
        if let Some(fd) = self.wake_fd.take() {
            let _ = epoll::delete(&self.epoll, borrow(fd));
        }
    }

    fn wake_armed(&self) -> bool {
        self.wake_fd.is_some()
    }
}
