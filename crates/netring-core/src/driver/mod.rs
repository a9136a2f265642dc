//! The backend interface: one small trait that io_uring and epoll implement
//! with identical semantics as seen from the IO thread loop.
//!
//! The loop (`io_thread.rs`) owns connection state; a driver owns only the
//! kernel side: arming operations and turning what the kernel reports into
//! backend-neutral [`Completion`]s. Rules every driver keeps:
//!
//! - A recv stays armed until a completion with `more == false`; data is
//!   delivered in driver-owned buffers ([`Chunk`]) that stay valid until the
//!   loop calls [`Driver::release`].
//! - At most one send per slot is in flight; its iovecs (in [`SendState`])
//!   stay untouched until its [`Completion::Sent`].
//! - Cancelling produces the armed operation's final completion later, never
//!   synchronously inside the cancel call.
//! - [`Driver::in_flight`] counts operations that still owe their final
//!   completion (on io_uring: the kernel still owns them; on epoll: armed,
//!   or final completion queued for the next wait); the loop frees a slot or
//!   exits only when the relevant ones have completed.

pub mod epoll;
#[cfg(test)]
pub(crate) mod fake;
pub(crate) mod file;
pub mod uring;

use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::config::{Backend, BackendChoice};
use crate::error::Error;

/// Bytes of each receive buffer that io_uring's multishot `recvmsg` uses
/// for its header (`io_uring_recvmsg_out`, 16 bytes) and the source address
/// (a `sockaddr_in6`, 28 bytes). Both backends cap datagrams the same way.
pub const DATAGRAM_HEADROOM: usize = 16 + std::mem::size_of::<libc::sockaddr_in6>();

/// The largest datagram received whole with receive buffers of
/// `buffer_size` bytes; longer ones are reported truncated.
pub fn datagram_capacity(buffer_size: usize) -> usize {
    buffer_size.saturating_sub(DATAGRAM_HEADROOM)
}

/// The tag both drivers give a kernel operation (io_uring's `user_data`,
/// epoll's event data): the operation kind in the top byte, a 24-bit
/// sequence below it (which datagram of an endpoint's send window, which
/// zero-copy send of a slot), and the slot or listener in the low 32 bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Token {
    pub(crate) kind: u8,
    /// 24 bits ([`SEQ_MASK`]).
    pub(crate) seq: u32,
    pub(crate) id: u32,
}

/// The bits of a [`Token`]'s sequence.
pub(crate) const SEQ_MASK: u32 = 0xFF_FFFF;

impl Token {
    /// A token for operation `kind` on slot (or listener) `id`.
    pub(crate) fn new(kind: u8, id: u32) -> Self {
        Token { kind, seq: 0, id }
    }

    pub(crate) fn pack(self) -> u64 {
        debug_assert!(self.seq <= SEQ_MASK);
        (u64::from(self.kind) << 56) | (u64::from(self.seq) << 32) | u64::from(self.id)
    }

    pub(crate) fn unpack(data: u64) -> Self {
        Token {
            kind: (data >> 56) as u8,
            seq: ((data >> 32) as u32) & SEQ_MASK,
            id: (data & 0xFFFF_FFFF) as u32,
        }
    }
}

/// Close a connection's socket; with `reset`, an RST (`SO_LINGER` 0).
pub(crate) fn close_socket(fd: OwnedFd, reset: bool) {
    if reset {
        let _ = socket2::SockRef::from(&fd).set_linger(Some(std::time::Duration::ZERO));
    }
    drop(fd);
}

/// Whether the running kernel's release is at least `major.minor`.
pub(crate) fn kernel_at_least(major: u32, minor: u32) -> bool {
    let uname = rustix::system::uname();
    let release = uname.release().to_string_lossy();
    let mut parts = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (got_major, got_minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    (got_major, got_minor) >= (major, minor)
}

/// A kernel result (a count, or `-errno`) as an `io::Result`.
pub(crate) fn result_of(res: i32) -> io::Result<u32> {
    if res >= 0 {
        Ok(res as u32)
    } else {
        Err(error_of(res))
    }
}

/// The error of a negative kernel result (`-errno`).
pub(crate) fn error_of(res: i32) -> io::Error {
    io::Error::from_raw_os_error(-res)
}

/// A received chunk in a driver-owned buffer.
#[derive(Debug, Clone, Copy)]
pub struct Chunk {
    pub(crate) ptr: *const u8,
    pub(crate) len: usize,
    pub(crate) bid: u16,
}

#[cfg(test)]
impl Chunk {
    /// The bytes.
    ///
    /// # Safety
    /// The buffer must not have been released back to the driver.
    pub(crate) unsafe fn bytes(&self) -> &[u8] {
        // SAFETY: the caller guarantees the buffer is still ours; ptr/len
        // came from the driver and describe initialised bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

#[cfg(test)]
mod token_tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_results_convert() {
        let t = Token {
            kind: 8,
            seq: 0xBE_BEEF,
            id: u32::MAX,
        };
        assert_eq!(Token::unpack(t.pack()), t);
        assert_eq!(Token::new(2, 7).pack(), (2 << 56) | 7);
        assert_eq!(result_of(5).unwrap(), 5);
        assert_eq!(
            result_of(-libc::ECONNRESET).unwrap_err().raw_os_error(),
            Some(libc::ECONNRESET)
        );
    }
}

// SAFETY: a chunk points into a buffer owned by the IO thread's driver; it
// is only dereferenced on that thread, before the buffer is released.
unsafe impl Send for Chunk {}

/// Outcome of one recv completion.
#[derive(Debug)]
pub enum RecvResult {
    /// Bytes arrived.
    Data(Chunk),
    /// The peer shut down its sending side.
    Eof,
    /// The buffer pool ran dry; re-arm after buffers come back.
    NoBuffers,
    /// The recv was cancelled (pause or close).
    Cancelled,
    /// A socket error (reset, ...).
    Err(io::Error),
}

/// A socket address from the raw bytes the kernel wrote (`None` if empty
/// or not IP).
pub(crate) fn sockaddr_from(raw: &[u8]) -> Option<std::net::SocketAddr> {
    let mut storage = socket2::SockAddrStorage::zeroed();
    if raw.is_empty() || raw.len() > storage.size_of() as usize {
        return None;
    }
    // SAFETY: sockaddr_storage is one of the platform's sockaddr types;
    // at most its size is copied, and SockAddr is told the real length.
    let addr = unsafe {
        let dst: &mut libc::sockaddr_storage = storage.view_as();
        std::ptr::copy_nonoverlapping(
            raw.as_ptr(),
            (dst as *mut libc::sockaddr_storage).cast::<u8>(),
            raw.len(),
        );
        socket2::SockAddr::new(storage, raw.len() as libc::socklen_t)
    };
    addr.as_socket()
}

/// Outcome of one datagram recv completion.
#[derive(Debug)]
pub enum DgramResult {
    /// A whole datagram: `chunk` is its payload (inside a receive buffer).
    Data {
        chunk: Chunk,
        addr: Option<std::net::SocketAddr>,
    },
    /// A datagram of `size` bytes did not fit a buffer; its buffer must be
    /// released and its bytes dropped.
    Truncated {
        chunk: Chunk,
        addr: Option<std::net::SocketAddr>,
        size: usize,
    },
    /// The buffer pool ran dry; re-arm after buffers come back.
    NoBuffers,
    /// The recv was cancelled (pause, close).
    Cancelled,
    /// A socket error (an ICMP error on a connected socket, ...).
    Err(io::Error),
}

/// One backend-neutral completion.
#[derive(Debug)]
pub enum Completion {
    /// A connection was accepted on `listener` (or accept failed).
    Accepted {
        listener: usize,
        result: io::Result<OwnedFd>,
        more: bool,
    },
    /// A recv on `slot` completed.
    Recv {
        slot: u32,
        result: RecvResult,
        more: bool,
    },
    /// The send on `slot` completed with the number of bytes taken. With
    /// `notify`, it went zero-copy: the kernel may still read the buffers
    /// it took until a [`Completion::SendNotified`] for `slot` follows.
    Sent {
        slot: u32,
        result: io::Result<usize>,
        notify: bool,
    },
    /// The kernel is done with the buffers of zero-copy send `seq` (its
    /// low 24 bits) on `slot` (one per `Sent` with `notify`, or a
    /// `SendAbandoned`); `copied`: it did not send them in place (copied
    /// after all, or the send failed).
    SendNotified { slot: u32, seq: u32, copied: bool },
    /// The notification of zero-copy send `seq` on `slot` will never come
    /// (its socket had to be closed while it was owed): the buffers it may
    /// read must never be freed.
    SendAbandoned { slot: u32, seq: u32 },
    /// The outbound connect on `slot` finished (or failed, or was cancelled).
    Connected { slot: u32, result: io::Result<()> },
    /// A datagram recv on endpoint `slot` completed.
    RecvFrom {
        slot: u32,
        result: DgramResult,
        more: bool,
    },
    /// Datagram `seq` of endpoint `slot` was sent (or failed).
    SentTo {
        slot: u32,
        seq: u16,
        result: io::Result<usize>,
    },
    /// The mailbox was signalled.
    Woken,
}

/// Per-connection storage a send needs while it is in flight. A connection
/// holds one (boxed: the kernel keeps its address) only while it has bytes
/// queued; idle, it is back in its thread's spares (`BufCache`).
pub struct SendState {
    /// The iovecs of the current send.
    pub iov: Vec<libc::iovec>,
    /// The message header handed to the kernel (io_uring sendmsg).
    pub msg: libc::msghdr,
    /// Instead of `iov`: a range of a file, moved by the kernel from the
    /// file to the socket (`transport.sendfile`).
    pub file: Option<FileSpan>,
    /// Send `iov` zero-copy as send number `seq` (24 bits) of its slot
    /// (only where [`Driver::supports_zerocopy`]); its notification names
    /// `seq`.
    pub zerocopy: Option<u32>,
}

/// A range of an open file to send; the descriptor stays open until the
/// send's completion.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileSpan {
    pub fd: RawFd,
    pub offset: u64,
    pub len: usize,
}

impl Default for SendState {
    fn default() -> Self {
        SendState {
            // Grown by the first send to what it needs (at most MAX_IOVECS).
            iov: Vec::new(),
            // SAFETY: msghdr is a plain C struct for which all-zero is a
            // valid (empty) value.
            msg: unsafe { std::mem::zeroed() },
            file: None,
            zerocopy: None,
        }
    }
}

// SAFETY: the raw pointers inside point into buffers owned by the same
// connection, which moves between threads only as a whole (never: connection
// state stays on its IO thread); they are never shared.
unsafe impl Send for SendState {}

/// The kernel side of one IO thread.
pub trait Driver {
    /// Which backend this is.
    fn backend(&self) -> Backend;
    /// Keep a read of the mailbox's eventfd armed; completes as `Woken`.
    fn arm_wake(&mut self, fd: RawFd);
    /// Start accepting on a listening socket: multishot where possible;
    /// with `one`, a single connection (its completion ends the accept; the
    /// caller arms it again), for a socket other processes accept from too:
    /// re-armed, this accept queues behind theirs, so the kernel's one
    /// wake-up per connection goes to each in turn.
    fn arm_accept(&mut self, listener: usize, fd: RawFd, one: bool);
    /// Stop accepting; the accept's final completion follows.
    fn cancel_accept(&mut self, listener: usize, fd: RawFd);
    /// Start receiving on a connection.
    fn arm_recv(&mut self, slot: u32, fd: RawFd);
    /// Stop receiving; the recv's final completion follows.
    fn cancel_recv(&mut self, slot: u32, fd: RawFd);
    /// Send what `state.iov` describes, or the file range `state.file`
    /// when it is set (a `Sent` of 0 bytes is allowed there: the kernel
    /// read some of the file but the socket took none yet; send again);
    /// exactly one `Sent` follows.
    fn send(&mut self, slot: u32, fd: RawFd, state: &mut SendState);
    /// Whether `send` can go zero-copy (`SendState::zerocopy`).
    fn supports_zerocopy(&self) -> bool {
        false
    }
    /// When the driver has work of its own to do even if nothing happens
    /// (epoll: a retired socket's deadline); the next `wait` returns by then.
    fn next_deadline(&self) -> Option<std::time::Instant> {
        None
    }
    /// Cancel an in-flight send (abort); its `Sent` follows.
    fn cancel_send(&mut self, slot: u32, fd: RawFd);
    /// Connect `fd` to `addr` (which stays valid until the completion);
    /// exactly one `Connected` follows.
    fn connect(&mut self, slot: u32, fd: RawFd, addr: &socket2::SockAddr);
    /// Cancel an in-flight connect; its `Connected` (ECANCELED) follows.
    fn cancel_connect(&mut self, slot: u32, fd: RawFd);
    /// The socket is about to be closed: forget any registration.
    fn forget(&mut self, slot: u32, fd: RawFd);
    /// The connection in `slot` is over: forget it and close `fd` (with
    /// `reset`, an RST: what the kernel still queues is dropped). A backend
    /// whose zero-copy notifications come through the socket (epoll) keeps
    /// it open, half-closed, until the last one owed is in.
    fn close(&mut self, slot: u32, fd: OwnedFd, reset: bool) {
        self.forget(slot, fd.as_raw_fd());
        close_socket(fd, reset);
    }
    /// Start receiving datagrams on endpoint `slot` (its own slot space);
    /// `template` (source-address length only) stays valid until the final
    /// completion. Payloads longer than
    /// [`datagram_capacity`] come back `Truncated`.
    fn arm_recv_from(&mut self, slot: u32, fd: RawFd, template: &libc::msghdr);
    /// Stop receiving datagrams; the recv's final completion follows.
    fn cancel_recv_from(&mut self, slot: u32, fd: RawFd);
    /// Send the datagram `msg` describes (address and one iovec), which
    /// stays valid and untouched until its `SentTo { seq }`.
    fn send_to(&mut self, slot: u32, seq: u16, fd: RawFd, msg: &libc::msghdr);
    /// Cancel everything armed on endpoint `slot` (abort); every final
    /// completion follows.
    fn cancel_dgram(&mut self, slot: u32, fd: RawFd);
    /// The endpoint's socket is about to be closed.
    fn forget_dgram(&mut self, slot: u32, fd: RawFd);
    /// Submit what was queued, wait up to `timeout` (None: until something
    /// completes) and append completions to `out`.
    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()>;
    /// Give a receive buffer back to the pool.
    fn release(&mut self, bid: u16);
    /// Whether receive buffers are allocated beyond what reads need now
    /// (see `trim_buffers`).
    fn has_spare_buffers(&self) -> bool {
        false
    }
    /// Free receive buffers that went unused since the last call; returns
    /// the bytes freed. (io_uring's ring is registered with the kernel and
    /// stays whole: there it sets how deep the ring is kept.)
    fn trim_buffers(&mut self) -> usize {
        0
    }
    /// A descriptor that becomes readable when completions are ready.
    fn fd(&self) -> RawFd;
    /// Hand what was queued to the kernel without waiting (`wait` does it
    /// too; this is for owners that wait elsewhere).
    fn submit(&mut self) -> io::Result<()>;
    /// Whether completions are already waiting in user space (the next
    /// `wait` returns at once, whatever `fd` says).
    fn has_pending(&self) -> bool {
        false
    }
    /// Whether the kernel has posted completions since the last `wait`
    /// (io_uring: operations a submit completed at once).
    fn posted(&mut self) -> bool {
        false
    }
    /// Operations that still owe their final completion, wake read excluded.
    fn in_flight(&self) -> usize;
    /// Stop the wake read before exit; its final completion follows.
    fn cancel_wake(&mut self);
    /// Whether the wake read is still owned by the kernel.
    fn wake_armed(&self) -> bool;
}

/// The backend an engine runs on, and why `auto` fell back (if it did).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selected {
    /// The backend.
    pub backend: Backend,
    /// Why io_uring was not used, when `auto` chose epoll
    /// (e.g. `io_uring_setup: EPERM`).
    pub fallback_reason: Option<String>,
}

/// Probe io_uring for real: set up a ring and check every opcode and feature
/// the io_uring driver needs. `Err` says which step failed and why.
///
/// The probe ring lives on a short-lived thread of its own: tearing a ring
/// down queues kernel task work to the thread that created it, which
/// interrupts that thread's next blocking socket call with a timeout
/// (EINTR), and the caller's thread should not pay for a probe.
pub fn probe_io_uring() -> Result<(), String> {
    std::thread::scope(|s| {
        s.spawn(|| uring::UringDriver::new(2, 512).map(drop))
            .join()
            .unwrap_or_else(|_| Err("io_uring probe panicked".to_string()))
    })
}

/// Pick the backend for `choice`. `Auto` probes io_uring and selects epoll
/// on *any* failure, never retrying per connection; an explicit choice that
/// cannot run is an error, never a silent fallback.
pub fn choose(choice: BackendChoice) -> Result<Selected, Error> {
    match choice {
        BackendChoice::Auto => Ok(match probe_io_uring() {
            Ok(()) => Selected {
                backend: Backend::IoUring,
                fallback_reason: None,
            },
            Err(why) => {
                log::info!("netring: io_uring unavailable ({why}); using epoll");
                Selected {
                    backend: Backend::Epoll,
                    fallback_reason: Some(why),
                }
            }
        }),
        BackendChoice::Exactly(Backend::IoUring) => probe_io_uring()
            .map(|()| Selected {
                backend: Backend::IoUring,
                fallback_reason: None,
            })
            .map_err(Error::BackendUnavailable),
        BackendChoice::Exactly(Backend::Epoll) => Ok(Selected {
            backend: Backend::Epoll,
            fallback_reason: None,
        }),
    }
}
