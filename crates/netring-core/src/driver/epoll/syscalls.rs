//! The non-blocking syscalls one readiness triggers: reads into pooled
//! buffers, datagram reads, and sends that go as far as the kernel takes
//! them at once (EAGAIN: wait for `EPOLLOUT`).

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendAncillaryBuffer, SendFlags};

use super::bufpool::BufPool;
use super::{
    borrow, DGRAMS_PER_READINESS, LARGE_BID, READ_BYTES_PER_READINESS, RECV_BUFFERS_PER_READINESS,
};
use crate::driver::{Chunk, Completion, DgramResult, RecvResult};

/// Read up to [`RECV_BUFFERS_PER_READINESS`] buffers from a readable socket
/// (at most `READ_BYTES_PER_READINESS`); each becomes `Recv { Data, more:
/// true }` in `out`. Once a read filled its buffer (a stream: more is
/// waiting), the next reads go to a large buffer when one is free, so a
/// large message takes a few `recv`s, not one per small buffer. Returns the
/// recv's final result if this readiness ended it.
pub(super) fn read_ready(
    fd: RawFd,
    slot: u32,
    pool: &mut BufPool,
    large: &mut BufPool,
    out: &mut Vec<Completion>,
) -> Option<RecvResult> {
    let mut streaming = false;
    let mut total = 0;
    for i in 0..RECV_BUFFERS_PER_READINESS {
        if total >= READ_BYTES_PER_READINESS {
            return None;
        }
        if streaming {
            if let Some(big) = large.take() {
                match read_one(fd, slot, large, big, LARGE_BID, out) {
                    Read::Full(n) => {
                        total += n;
                        continue;
                    }
                    Read::Drained => return None,
                    Read::Ended(r) => return Some(r),
                }
            }
        }
        let Some(bid) = pool.take() else {
            // NOTE: a pool that ran dry during this readiness does not end
            // the recv: the loop returns this turn's buffers before it waits
            // again. Only a pool that is dry to begin with does (ENOBUFS on
            // io_uring); the loop re-arms the recv once buffers are back.
            return (i == 0).then_some(RecvResult::NoBuffers);
        };
        match read_one(fd, slot, pool, bid, 0, out) {
            Read::Full(n) => {
                total += n;
                streaming = true;
            }
            Read::Drained => return None,
            Read::Ended(r) => return Some(r),
        }
    }
    None
}

/// What one `recv` into a pool buffer did.
enum Read {
    /// Filled the buffer (`n` bytes): more is likely waiting.
    Full(usize),
    /// Read less than the buffer, or nothing yet (EAGAIN): drained.
    Drained,
    /// EOF or an error: the recv is over.
    Ended(RecvResult),
}

/// `recv` into lent buffer `bid` of `pool` (reported as `bid | tag`),
/// pushing what came as a `Recv` completion; the buffer goes back to the
/// pool unless it holds data.
fn read_one(
    fd: RawFd,
    slot: u32,
    pool: &mut BufPool,
    bid: u16,
    tag: u16,
    out: &mut Vec<Completion>,
) -> Read {
    loop {
        match rustix::net::recv(borrow(fd), pool.buf_mut(bid), RecvFlags::DONTWAIT) {
            Ok((_, 0)) => {
                pool.put(bid);
                return Read::Ended(RecvResult::Eof);
            }
            Ok((_, len)) => {
                let ptr = pool.ptr(bid);
                out.push(Completion::Recv {
                    slot,
                    result: RecvResult::Data(Chunk {
                        ptr,
                        len,
                        bid: bid | tag,
                    }),
                    more: true,
                });
                // NOTE: a short read means the socket is most likely
                // drained; level triggering tells if not.
                return if len < pool.buf_size() {
                    Read::Drained
                } else {
                    Read::Full(len)
                };
            }
            Err(Errno::AGAIN) => {
                pool.put(bid);
                return Read::Drained;
            }
            Err(Errno::INTR) => {}
            Err(e) => {
                pool.put(bid);
                return Read::Ended(RecvResult::Err(e.into()));
            }
        }
    }
}

/// Read up to [`DGRAMS_PER_READINESS`] datagrams, each into a pool buffer;
/// returns the recv's final result if this readiness ended it.
pub(super) fn read_datagrams(
    fd: RawFd,
    slot: u32,
    pool: &mut BufPool,
    out: &mut Vec<Completion>,
) -> Option<DgramResult> {
    let capacity = crate::driver::datagram_capacity(pool.buf_size());
    for i in 0..DGRAMS_PER_READINESS {
        let Some(bid) = pool.take() else {
            return (i == 0).then_some(DgramResult::NoBuffers);
        };
        let buf = pool.buf_mut(bid);
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: capacity,
        };
        let mut name = socket2::SockAddrStorage::zeroed();
        // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
        let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
        msg.msg_name = (&mut name as *mut socket2::SockAddrStorage).cast();
        msg.msg_namelen = name.size_of();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: every pointer in `msg` points at live locals or the pool
        // buffer `bid` (capacity ≤ its size); MSG_TRUNC makes the result the
        // datagram's real length.
        let n = unsafe { libc::recvmsg(fd, &mut msg, libc::MSG_TRUNC | libc::MSG_DONTWAIT) };
        if n < 0 {
            pool.put(bid);
            match Errno::from_raw_os_error(io::Error::last_os_error().raw_os_error().unwrap_or(0)) {
                Errno::AGAIN => return None,
                Errno::INTR => continue,
                e => return Some(DgramResult::Err(e.into())),
            }
        }
        let size = n as usize;
        // SAFETY: the kernel wrote `msg_namelen` bytes of address into `name`.
        let raw = unsafe {
            std::slice::from_raw_parts(
                (&name as *const socket2::SockAddrStorage).cast::<u8>(),
                (msg.msg_namelen as usize).min(name.size_of() as usize),
            )
        };
        let addr = crate::driver::sockaddr_from(raw);
        let chunk = Chunk {
            ptr: pool.ptr(bid),
            len: size.min(capacity),
            bid,
        };
        let result = if size > capacity {
            DgramResult::Truncated { chunk, addr, size }
        } else {
            DgramResult::Data { chunk, addr }
        };
        out.push(Completion::RecvFrom {
            slot,
            result,
            more: true,
        });
    }
    None
}

/// One non-blocking `sendmsg` of a prepared header; `None` on EAGAIN.
pub(super) fn try_send_msg(fd: RawFd, msg: *const libc::msghdr) -> Option<io::Result<usize>> {
    loop {
        // SAFETY: `msg` and what it points at stay valid until the datagram's
        // `SentTo` (the endpoint's send window); the call only reads them.
        let n = unsafe { libc::sendmsg(fd, msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
        if n >= 0 {
            return Some(Ok(n as usize));
        }
        let e = io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EAGAIN) => return None,
            Some(libc::EINTR) => {}
            _ => return Some(Err(e)),
        }
    }
}

/// One non-blocking attempt at sending `iov`; `None` if the socket buffer
/// is full (EAGAIN).
pub(super) fn try_send(fd: RawFd, iov: &[libc::iovec]) -> Option<io::Result<usize>> {
    // SAFETY: std guarantees `IoSlice` is ABI-compatible with `iovec` on
    // Unix. The iovecs describe a connection's pinned send-queue buffers,
    // which stay alive and unmodified until this send's `Sent` is delivered.
    let slices: &[IoSlice<'_>] =
        unsafe { std::slice::from_raw_parts(iov.as_ptr().cast(), iov.len()) };
    let flags = SendFlags::NOSIGNAL | SendFlags::DONTWAIT;
    loop {
        let mut no_control = SendAncillaryBuffer::default();
        match rustix::net::sendmsg(borrow(fd), slices, &mut no_control, flags) {
            Ok(n) => return Some(Ok(n)),
            Err(Errno::AGAIN) => return None,
            Err(Errno::INTR) => {}
            Err(e) => return Some(Err(e.into())),
        }
    }
}
