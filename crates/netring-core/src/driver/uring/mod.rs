//! The io_uring driver.
//!
//! One ring per IO thread, created on that thread with SINGLE_ISSUER and
//! DEFER_TASKRUN (completion work runs only when this thread enters the
//! kernel, so there are no surprise interrupts of user code). Multishot
//! accept and multishot recv into a provided-buffer ring (a recv takes a
//! bundle of buffers per completion where the kernel can, Linux 6.16: a
//! stream's read is as large as what waits, in 16 KiB buffers); one vectored
//! `sendmsg(MSG_NOSIGNAL)` in flight per socket; the mailbox eventfd has a
//! `read` kept in the ring so other threads can wake this one.
//!
//! `user_data` is a [`super::Token`] (the layout both drivers share): the
//! operation kind, the slot or listener index; cancel requests carry
//! [`KIND_CANCEL`] and their completions are ignored.

mod bufring;
#[cfg(test)]
mod tests;

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use io_uring::{cqueue, opcode, squeue, types, IoUring};

use super::{
    error_of, result_of, Chunk, Completion, DgramResult, Driver, RecvResult, SendState, Token,
};
use crate::config::Backend;
use crate::driver::file::send_file_now;
use crate::driver::{kernel_at_least, FileSpan};
use bufring::BufRing;

const KIND_ACCEPT: u8 = 1;
const KIND_RECV: u8 = 2;
const KIND_SEND: u8 = 3;
const KIND_WAKE: u8 = 4;
const KIND_CANCEL: u8 = 5;
const KIND_CONNECT: u8 = 6;
const KIND_RECVFROM: u8 = 7;
const KIND_SENDTO: u8 = 8;
/// A file send waiting for its socket to be writable (see `driver::file`).
const KIND_FILE_POLL: u8 = 9;
/// A zero-copy send: its result, then (with `F_MORE`) its notification.
const KIND_SEND_ZC: u8 = 10;
/// `SEND_ZC`'s `ioprio` flag asking the notification to say whether the
/// kernel copied after all (Linux 6.2; `io_uring` crate's private `sys`).
const IORING_SEND_ZC_REPORT_USAGE: u16 = 8;
/// A notification's result bit: the data was copied, not sent in place.
const IORING_NOTIF_USAGE_ZC_COPIED: u32 = 1 << 31;
const BUF_GROUP: u16 = 0;
/// Enters a polled ring's zero wait makes at most (20 deferred items each);
/// work left after them waits for the next turn (see `new_polled`).
const POLLED_ENTERS: usize = 64;
/// Submission queue entries per ring; the completion queue is 4× larger.
const RING_ENTRIES: u32 = 1024;

fn user_data(kind: u8, id: u32) -> u64 {
    Token::new(kind, id).pack()
}

/// An io_uring instance with its buffer ring.
pub struct UringDriver {
    // NOTE: field order matters: the ring must be dropped (unregistering the
    // buffer ring in the kernel) before the buffer memory is freed.
    ring: IoUring,
    bufs: BufRing,
    wake_fd: RawFd,
    wake_buf: Box<u64>,
    wake_armed: bool,
    wake_cancelled: bool,
    in_flight: usize,
    cqes: Vec<cqueue::Entry>,
    /// Set up with DEFER_TASKRUN: completions are only posted inside
    /// `io_uring_enter`, so even a zero wait must enter.
    deferred: bool,
    /// A ring another poller watches (`new_polled`) with DEFER_TASKRUN.
    polled: bool,
    /// A polled ring's doorbell: the mailbox's eventfd, registered with the
    /// ring (the kernel signals it when it defers completion work) and
    /// watched by the poller instead of the ring (see `new_polled`).
    poll_fd: Option<RawFd>,
    /// `POLLED_ENTERS` (tests lower it to leave work for the next turn).
    polled_enters: usize,
    /// Completions made without the kernel (file sends done at once),
    /// delivered by the next `wait`.
    ready: Vec<Completion>,
    /// File sends waiting for their socket to be writable: (socket, range).
    file_waits: std::collections::HashMap<u32, (RawFd, FileSpan)>,
    /// The buffer of file sends that cannot use `sendfile`.
    file_scratch: Vec<u8>,
    /// The kernel has `SEND_ZC` and `SENDMSG_ZC` and reports copies
    /// (Linux 6.2).
    zerocopy: bool,
    /// Zero-copy sends in flight, by slot: their sequence (in their
    /// `user_data`, which a cancel must name exactly).
    zc_sending: std::collections::HashMap<u32, u32>,
    /// Stream recvs take bundles: one completion for as many buffers as
    /// the bytes waiting fill (`IORING_FEAT_RECVSEND_BUNDLE` from Linux 6.10; used from 6.16).
    bundles: bool,
}

/// Why io_uring cannot be used here, as `syscall: ERRNO`.
fn describe(what: &str, e: &io::Error) -> String {
    let name = match e.raw_os_error() {
        Some(libc::EPERM) => "EPERM".to_string(),
        Some(libc::ENOSYS) => "ENOSYS".to_string(),
        Some(libc::EINVAL) => "EINVAL".to_string(),
        Some(libc::ENOMEM) => "ENOMEM".to_string(),
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP".to_string(),
        Some(libc::EACCES) => "EACCES".to_string(),
        _ => e.to_string(),
    };
    format!("{what}: {name}")
}

impl UringDriver {
    /// Create a ring on the calling thread. The error string says which
    /// step failed and why (e.g. `io_uring_setup: EPERM`).
    pub fn new(buffers: usize, buffer_size: usize) -> Result<Self, String> {
        Self::with_setup(buffers, buffer_size, true)
    }

    /// A ring whose descriptor another poller watches (an asyncio loop's
    /// epoll). With DEFER_TASKRUN (and TASKRUN_FLAG) completions wait as
    /// deferred work until this thread enters the ring, and the ring's own
    /// fd does not become readable for them (seen on Linux 6.18: the loop
    /// slept), but an eventfd registered with the ring is signalled when
    /// the first such work is queued. That eventfd is the mailbox's own
    /// (`arm_wake`): one descriptor wakes the poller for both, and no read
    /// of it sits in the ring (with one there, a command's doorbell woke
    /// the loop ~15 ms late or not at all: the ring's eventfd signal, made
    /// from inside the doorbell's eventfd write, appears to be deferred by
    /// the kernel to an RCU callback). [`Driver::fd`] is that
    /// eventfd. Without deferred work the kernel would interrupt the
    /// loop's thread (an IPI and task work on its next return to user
    /// space) for every completion: 1.4-1.8x the CPU per message of
    /// uvloop, against 0.8-0.95x with it. A kernel without DEFER_TASKRUN
    /// gets that ring and its own fd.
    pub fn new_polled(buffers: usize, buffer_size: usize) -> Result<Self, String> {
        let mut driver = Self::with_setup(buffers, buffer_size, true)?;
        driver.polled = driver.deferred;
        Ok(driver)
    }

    fn with_setup(buffers: usize, buffer_size: usize, defer: bool) -> Result<Self, String> {
        let mut builder = IoUring::builder();
        builder.setup_single_issuer();
        if defer {
            // NOTE: TASKRUN_FLAG marks deferred work in the SQ flags, so a
            // zero wait enters the kernel only when there is some.
            builder.setup_defer_taskrun().setup_taskrun_flag();
        }
        let mut deferred = defer;
        let ring = builder
            .setup_cqsize(RING_ENTRIES * 4)
            .build(RING_ENTRIES)
            .or_else(|_| {
                deferred = false;
                // Kernels before 6.1 lack DEFER_TASKRUN; the rest still works.
                IoUring::builder()
                    .setup_cqsize(RING_ENTRIES * 4)
                    .build(RING_ENTRIES)
            })
            .map_err(|e| describe("io_uring_setup", &e))?;
        let mut probe = io_uring::Probe::new();
        ring.submitter()
            .register_probe(&mut probe)
            .map_err(|e| describe("io_uring_register(PROBE)", &e))?;
        for (code, name) in [
            (opcode::AcceptMulti::CODE, "ACCEPT"),
            (opcode::RecvMulti::CODE, "RECV"),
            (opcode::SendMsg::CODE, "SENDMSG"),
            (opcode::Send::CODE, "SEND"),
            (opcode::Read::CODE, "READ"),
            (opcode::AsyncCancel::CODE, "ASYNC_CANCEL"),
            (opcode::Connect::CODE, "CONNECT"),
            (opcode::RecvMsgMulti::CODE, "RECVMSG"),
        ] {
            if !probe.is_supported(code) {
                return Err(format!("io_uring opcode {name} not supported"));
            }
        }
        // NOTE: the notification's "copied" report (REPORT_USAGE, which
        // turns zero-copy off where it does not pay) came in Linux 6.2,
        // after the opcodes (6.0, 6.1): 6.1 refuses the flag (EINVAL).
        let zerocopy = probe.is_supported(opcode::SendZc::CODE)
            && probe.is_supported(opcode::SendMsgZc::CODE)
            && kernel_at_least(6, 2);
        if !ring.params().is_feature_ext_arg() {
            return Err("io_uring feature EXT_ARG missing (kernel < 5.11)".into());
        }
        // NOTE: a stream's bytes arrive in 16 KiB buffers either way; a
        // bundle fills as many as the socket holds in one recv, where a
        // plain multishot recv runs (and completes) once per buffer. Before
        // Linux 6.16 a peer's FIN right behind its data made
        // the kernel shorten the ring's head entry to one byte and leave it
        // there (fixed by "io_uring/net: only consider msg_inq if larger
        // than 1", backported to some stable kernels only): streams cope
        // (`BufRing::filled`), but a UDP endpoint's recvmsg taking that
        // entry fails (EFAULT) and would close the endpoint.
        let bundles = ring.params().is_feature_recvsend_bundle() && kernel_at_least(6, 16);
        let entries = u16::try_from(buffers).map_err(|_| "too many buffers".to_string())?;
        let bufs = BufRing::new(&ring, entries, buffer_size, BUF_GROUP)
            .map_err(|e| describe("io_uring_register(PBUF_RING)", &e))?;
        Ok(UringDriver {
            ring,
            bufs,
            wake_fd: -1,
            wake_buf: Box::new(0),
            wake_armed: false,
            wake_cancelled: false,
            in_flight: 0,
            cqes: Vec::with_capacity(RING_ENTRIES as usize * 4),
            deferred,
            polled: false,
            poll_fd: None,
            polled_enters: POLLED_ENTERS,
            ready: Vec::new(),
            file_waits: std::collections::HashMap::new(),
            file_scratch: Vec::new(),
            zerocopy,
            zc_sending: std::collections::HashMap::new(),
            bundles,
        })
    }

    /// A polled ring whose enter left deferred work (the kernel keeps the
    /// rest and sets the TASKRUN flag, but does not signal the eventfd for
    /// work it already holds): signal it here, so the poller comes back.
    fn signal_if_work_left(&mut self) {
        if let Some(fd) = self.poll_fd {
            if self.ring.submission().taskrun() {
                let one = 1u64;
                // SAFETY: writes the 8 bytes of `one`, which lives across
                // the call; a full counter (EAGAIN) is readable anyway.
                unsafe { libc::write(fd, (&one as *const u64).cast(), 8) };
            }
        }
    }

    /// Reset the polled ring's eventfd (see `new_polled`).
    fn clear_poll_fd(&mut self) {
        if let Some(fd) = self.poll_fd {
            let mut count = 0u64;
            // SAFETY: reads 8 bytes into `count`, which lives across the
            // call; the eventfd is non-blocking (EAGAIN when clear).
            unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
        }
    }

    fn push(&mut self, entry: squeue::Entry) {
        loop {
            // SAFETY: every entry built by this driver points only at memory
            // that outlives the operation: the wake buffer (boxed, owned
            // here), the buffer ring, or a connection's SendState, which the
            // loop keeps untouched until the send's completion.
            if unsafe { self.ring.submission().push(&entry) }.is_ok() {
                return;
            }
            // The submission queue is full: hand it to the kernel and retry.
            if let Err(e) = self.ring.submit() {
                log::error!("io_uring submit failed while the queue was full: {e}");
            }
        }
    }

    fn push_wake_read(&mut self) {
        let buf = &mut *self.wake_buf as *mut u64 as *mut u8;
        let entry = opcode::Read::new(types::Fd(self.wake_fd), buf, 8)
            .build()
            .user_data(user_data(KIND_WAKE, 0));
        self.push(entry);
        self.wake_armed = true;
    }

    fn cancel(&mut self, target: u64) {
        let entry = opcode::AsyncCancel::new(target)
            .build()
            .user_data(user_data(KIND_CANCEL, 0));
        self.in_flight += 1;
        self.push(entry);
    }

    /// The completion(s) of `cqe` into `out` (a bundle's bytes: one per
    /// buffer, in order).
    fn convert(&mut self, cqe: &cqueue::Entry, out: &mut Vec<Completion>) {
        if let Some(c) = self.convert_one(cqe, out) {
            out.push(c);
        }
    }

    fn convert_one(
        &mut self,
        cqe: &cqueue::Entry,
        out: &mut Vec<Completion>,
    ) -> Option<Completion> {
        let Token { kind, seq, id } = Token::unpack(cqe.user_data());
        let res = cqe.result();
        let more = cqueue::more(cqe.flags());
        // NOTE: a zero-copy send is over for the loop at its result; its
        // notification is not waited for at exit (a peer that never
        // acknowledges would hold it for minutes): what it kept is leaked
        // instead (`BufCache`'s drop).
        let last = if kind == KIND_SEND_ZC {
            !cqueue::notif(cqe.flags())
        } else {
            !more && kind != KIND_WAKE
        };
        if last {
            self.in_flight -= 1;
        }
        match kind {
            KIND_ACCEPT => {
                // SAFETY: a non-negative accept result is a new descriptor
                // that nothing else owns.
                let result = result_of(res).map(|fd| unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
                Some(Completion::Accepted {
                    listener: id as usize,
                    result,
                    more,
                })
            }
            KIND_RECV => {
                let result = if res > 0 {
                    let first = cqueue::buffer_select(cqe.flags())
                        .expect("recv completion with data but no buffer id");
                    // One chunk per buffer filled (several for a bundle; the
                    // core releases them one by one), all but the last
                    // followed by more.
                    let (mut count, mut last) = (0, None);
                    for (bid, len) in self.bufs.filled(first, res as usize) {
                        let chunk = Chunk {
                            ptr: self.bufs.buf_ptr(bid),
                            len,
                            bid,
                        };
                        count += 1;
                        if let Some(before) = last.replace(chunk) {
                            out.push(Completion::Recv {
                                slot: id,
                                result: RecvResult::Data(before),
                                more: true,
                            });
                        }
                    }
                    self.bufs.taken(count);
                    RecvResult::Data(last.expect("a recv's bytes fill at least one buffer"))
                } else if res == 0 {
                    self.give_back_unfilled(cqe);
                    RecvResult::Eof
                } else if res == -libc::ENOBUFS {
                    self.bufs.ran_dry();
                    RecvResult::NoBuffers
                } else if res == -libc::ECANCELED {
                    self.give_back_unfilled(cqe);
                    RecvResult::Cancelled
                } else {
                    self.give_back_unfilled(cqe);
                    RecvResult::Err(error_of(res))
                };
                Some(Completion::Recv {
                    slot: id,
                    result,
                    more,
                })
            }
            KIND_SEND => {
                let result = result_of(res).map(|n| n as usize);
                Some(Completion::Sent {
                    slot: id,
                    result,
                    notify: false,
                })
            }
            KIND_SEND_ZC if cqueue::notif(cqe.flags()) => Some(Completion::SendNotified {
                slot: id,
                seq,
                copied: res as u32 & IORING_NOTIF_USAGE_ZC_COPIED != 0,
            }),
            KIND_SEND_ZC => {
                self.zc_sending.remove(&id);
                Some(Completion::Sent {
                    slot: id,
                    result: result_of(res).map(|n| n as usize),
                    notify: more,
                })
            }
            KIND_CONNECT => Some(Completion::Connected {
                slot: id,
                result: result_of(res).map(drop),
            }),
            KIND_RECVFROM => {
                let result = if res >= 0 {
                    let bid = cqueue::buffer_select(cqe.flags())
                        .expect("recvmsg completion without a buffer id");
                    self.bufs.taken(1);
                    self.datagram(bid, res as usize, id)
                } else if res == -libc::ENOBUFS {
                    self.bufs.ran_dry();
                    DgramResult::NoBuffers
                } else if res == -libc::ECANCELED {
                    self.give_back_unfilled(cqe);
                    DgramResult::Cancelled
                } else {
                    self.give_back_unfilled(cqe);
                    DgramResult::Err(error_of(res))
                };
                Some(Completion::RecvFrom {
                    slot: id,
                    result,
                    more,
                })
            }
            KIND_FILE_POLL => {
                let (fd, span) = self.file_waits.remove(&id)?;
                if res < 0 {
                    return Some(Completion::Sent {
                        slot: id,
                        result: Err(error_of(res)),
                        notify: false,
                    });
                }
                self.send_file(id, fd, span)
            }
            KIND_SENDTO => Some(Completion::SentTo {
                slot: id,
                seq: seq as u16,
                result: result_of(res).map(|n| n as usize),
            }),
            KIND_WAKE => {
                self.wake_armed = false;
                if res < 0 && res != -libc::EAGAIN && res != -libc::EINTR {
                    // Cancelled at exit (or a broken eventfd): do not re-arm.
                    return None;
                }
                if !self.wake_cancelled {
                    self.push_wake_read();
                }
                Some(Completion::Woken)
            }
            _ => None, // cancel requests
        }
    }
}

impl UringDriver {
    /// A completion without data that still names a buffer (a recv run by
    /// io-wq takes its buffer for good when it selects it): that buffer
    /// comes back to the pool.
    fn give_back_unfilled(&mut self, cqe: &cqueue::Entry) {
        if let Some(bid) = cqueue::buffer_select(cqe.flags()) {
            self.bufs.taken(1);
            self.bufs.release(bid);
        }
    }

    /// Send (part of) a file range now, or wait for the socket to be
    /// writable (a poll; its completion calls this again).
    fn send_file(&mut self, slot: u32, fd: RawFd, span: FileSpan) -> Option<Completion> {
        if let Some(result) = send_file_now(fd, span, &mut self.file_scratch) {
            return Some(Completion::Sent {
                slot,
                result,
                notify: false,
            });
        }
        self.file_waits.insert(slot, (fd, span));
        let entry = opcode::PollAdd::new(types::Fd(fd), libc::POLLOUT as u32)
            .build()
            .user_data(user_data(KIND_FILE_POLL, slot));
        self.in_flight += 1;
        self.push(entry);
        None
    }

    /// Parse a multishot recvmsg buffer: header, source address, payload.
    fn datagram(&self, bid: u16, used: usize, slot: u32) -> DgramResult {
        let ptr = self.bufs.buf_ptr(bid);
        // SAFETY: the kernel filled `used` bytes of buffer `bid`, which stays
        // ours until the loop releases it.
        let buf = unsafe { std::slice::from_raw_parts(ptr, used) };
        let template = recv_template();
        let Ok(out) = io_uring::types::RecvMsgOut::parse(buf, &template) else {
            log::error!("netring: malformed recvmsg buffer on endpoint {slot}");
            return DgramResult::Err(io::Error::from_raw_os_error(libc::EPROTO));
        };
        let addr = super::sockaddr_from(out.name_data());
        let payload = out.payload_data();
        let chunk = Chunk {
            ptr: payload.as_ptr(),
            len: payload.len(),
            bid,
        };
        if out.is_payload_truncated() {
            DgramResult::Truncated {
                chunk,
                addr,
                size: out.incoming_payload_len() as usize,
            }
        } else {
            DgramResult::Data { chunk, addr }
        }
    }
}

/// The recvmsg template every endpoint uses: room for an IPv6 source
/// address, no control data (see `udp::DATAGRAM_HEADROOM`).
fn recv_template() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
    let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
    m.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
    m
}

impl Driver for UringDriver {
    fn supports_zerocopy(&self) -> bool {
        self.zerocopy
    }

    fn backend(&self) -> Backend {
        Backend::IoUring
    }

    fn arm_wake(&mut self, fd: RawFd) {
        self.wake_fd = fd;
        if self.polled {
            match self.ring.submitter().register_eventfd(fd) {
                Ok(()) => {
                    self.poll_fd = Some(fd);
                    return;
                }
                // NOTE: then the poller watches the ring, whose fd does not
                // report deferred work: turns wait for the loop's timers.
                Err(e) => log::error!("netring: io_uring_register(EVENTFD) failed: {e}"),
            }
        }
        self.push_wake_read();
    }

    fn arm_accept(&mut self, listener: usize, fd: RawFd, one: bool) {
        // NOTE: io_uring's accept waits as an exclusive waiter on the
        // socket, and a multishot one stays where it is in the socket's
        // wait queue: on a socket shared by processes the first one armed
        // would be woken for every connection. A single accept, re-armed
        // after each connection, goes to the back of that queue.
        let flags = libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK;
        let entry = if one {
            opcode::Accept::new(types::Fd(fd), std::ptr::null_mut(), std::ptr::null_mut())
                .flags(flags)
                .build()
        } else {
            opcode::AcceptMulti::new(types::Fd(fd)).flags(flags).build()
        };
        let entry = entry.user_data(user_data(KIND_ACCEPT, listener as u32));
        self.in_flight += 1;
        self.push(entry);
    }

    fn cancel_accept(&mut self, listener: usize, _fd: RawFd) {
        self.cancel(user_data(KIND_ACCEPT, listener as u32));
    }

    fn arm_recv(&mut self, slot: u32, fd: RawFd) {
        let entry = if self.bundles {
            opcode::RecvMultiBundle::new(types::Fd(fd), BUF_GROUP).build()
        } else {
            opcode::RecvMulti::new(types::Fd(fd), BUF_GROUP).build()
        };
        let entry = entry.user_data(user_data(KIND_RECV, slot));
        self.in_flight += 1;
        self.push(entry);
    }

    fn cancel_recv(&mut self, slot: u32, _fd: RawFd) {
        self.cancel(user_data(KIND_RECV, slot));
    }

    fn send(&mut self, slot: u32, fd: RawFd, state: &mut SendState) {
        if let Some(span) = state.file {
            if let Some(done) = self.send_file(slot, fd, span) {
                self.ready.push(done);
            }
            return;
        }
        if let (Some(seq), true) = (state.zerocopy, self.zerocopy) {
            // NOTE: the kernel pins the pages and reads them after the
            // result; the caller holds them until the notification.
            let entry = if let [one] = state.iov.as_slice() {
                let len = u32::try_from(one.iov_len).unwrap_or(u32::MAX);
                opcode::SendZc::new(types::Fd(fd), one.iov_base as *const u8, len)
                    .flags(libc::MSG_NOSIGNAL)
                    .zc_flags(IORING_SEND_ZC_REPORT_USAGE)
                    .build()
            } else {
                state.msg.msg_iov = state.iov.as_mut_ptr();
                state.msg.msg_iovlen = state.iov.len() as _;
                opcode::SendMsgZc::new(types::Fd(fd), &state.msg as *const libc::msghdr)
                    .flags(libc::MSG_NOSIGNAL as u32)
                    .ioprio(IORING_SEND_ZC_REPORT_USAGE)
                    .build()
            };
            let token = Token {
                kind: KIND_SEND_ZC,
                seq,
                id: slot,
            };
            self.in_flight += 1;
            self.zc_sending.insert(slot, seq);
            self.push(entry.user_data(token.pack()));
            return;
        }
        // NOTE: one contiguous buffer (the usual case: small writes are
        // coalesced) goes as a plain SEND, which spares the kernel copying
        // and checking a msghdr and an iovec array.
        let entry = if let [one] = state.iov.as_slice() {
            // A buffer over 4 GiB goes in parts: a short send resumes.
            let len = u32::try_from(one.iov_len).unwrap_or(u32::MAX);
            opcode::Send::new(types::Fd(fd), one.iov_base as *const u8, len)
                .flags(libc::MSG_NOSIGNAL)
                .build()
        } else {
            state.msg.msg_iov = state.iov.as_mut_ptr();
            state.msg.msg_iovlen = state.iov.len() as _;
            opcode::SendMsg::new(types::Fd(fd), &state.msg as *const libc::msghdr)
                .flags(libc::MSG_NOSIGNAL as u32)
                .build()
        };
        self.in_flight += 1;
        self.push(entry.user_data(user_data(KIND_SEND, slot)));
    }

    fn cancel_send(&mut self, slot: u32, _fd: RawFd) {
        if self.file_waits.contains_key(&slot) {
            self.cancel(user_data(KIND_FILE_POLL, slot));
        } else {
            let target = match self.zc_sending.get(&slot) {
                Some(&seq) => Token {
                    kind: KIND_SEND_ZC,
                    seq,
                    id: slot,
                }
                .pack(),
                None => user_data(KIND_SEND, slot),
            };
            self.cancel(target);
        }
    }

    fn connect(&mut self, slot: u32, fd: RawFd, addr: &socket2::SockAddr) {
        let entry = opcode::Connect::new(types::Fd(fd), addr.as_ptr() as *const _, addr.len())
            .build()
            .user_data(user_data(KIND_CONNECT, slot));
        self.in_flight += 1;
        self.push(entry);
    }

    fn cancel_connect(&mut self, slot: u32, _fd: RawFd) {
        self.cancel(user_data(KIND_CONNECT, slot));
    }

    fn forget(&mut self, _slot: u32, _fd: RawFd) {}

    fn arm_recv_from(&mut self, slot: u32, fd: RawFd, template: &libc::msghdr) {
        debug_assert_eq!(template.msg_namelen, recv_template().msg_namelen);
        let entry = opcode::RecvMsgMulti::new(types::Fd(fd), template as *const _, BUF_GROUP)
            .flags(libc::MSG_TRUNC as u32)
            .build()
            .user_data(user_data(KIND_RECVFROM, slot));
        self.in_flight += 1;
        self.push(entry);
    }

    fn cancel_recv_from(&mut self, slot: u32, _fd: RawFd) {
        self.cancel(user_data(KIND_RECVFROM, slot));
    }

    fn send_to(&mut self, slot: u32, seq: u16, fd: RawFd, msg: &libc::msghdr) {
        let entry = opcode::SendMsg::new(types::Fd(fd), msg as *const libc::msghdr)
            .flags(libc::MSG_NOSIGNAL as u32)
            .build()
            .user_data(
                Token {
                    kind: KIND_SENDTO,
                    seq: u32::from(seq),
                    id: slot,
                }
                .pack(),
            );
        self.in_flight += 1;
        self.push(entry);
    }

    fn cancel_dgram(&mut self, _slot: u32, fd: RawFd) {
        let entry = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .user_data(user_data(KIND_CANCEL, 0));
        self.in_flight += 1;
        self.push(entry);
    }

    fn forget_dgram(&mut self, _slot: u32, _fd: RawFd) {}

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        self.bufs.publish();
        // Completions made without the kernel are due now: do not sleep.
        let timeout = if self.ready.is_empty() {
            timeout
        } else {
            out.append(&mut self.ready);
            Some(Duration::ZERO)
        };
        let res = match timeout {
            // NOTE: without DEFER_TASKRUN the kernel posts completions to
            // the ring's memory on its own: a zero wait only has to submit
            // what is queued (a hosted engine's turn: no syscall at all
            // when there is nothing to submit).
            Some(d) if d.is_zero() && !self.deferred => self.submit().map(|()| 0),
            // A polled ring's zero wait: run the deferred work if the SQ
            // flags say there is some, then clear the eventfd (completions
            // posted by those enters signalled it), then signal it again if
            // work is left. Work queued after the clear signals it anew,
            // or, queued before it, set the flag checked after it.
            Some(d) if d.is_zero() && self.poll_fd.is_some() => {
                let mut res = Ok(0);
                // NOTE: an enter runs at most 20 deferred items and sets the
                // TASKRUN flag again if it left some (the crate's submit
                // enters with GETEVENTS while the flag is set). Asking for
                // more (`want` with a zero timeout) goes through the
                // kernel's timed wait, which measured ~1.5x the CPU per
                // message on a single connection (101 against 66 µs).
                for _ in 0..self.polled_enters {
                    if self.ring.submission().is_empty() && !self.ring.submission().taskrun() {
                        break;
                    }
                    res = self.ring.submit();
                    if res.is_err() {
                        break;
                    }
                }
                self.clear_poll_fd();
                self.signal_if_work_left();
                res
            }
            None => self.ring.submit_and_wait(1),
            Some(d) => {
                let ts = types::Timespec::new()
                    .sec(d.as_secs())
                    .nsec(d.subsec_nanos());
                let args = types::SubmitArgs::new().timespec(&ts);
                self.ring.submitter().submit_with_args(1, &args)
            }
        };
        match res {
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME) | Some(libc::EINTR) | Some(libc::EBUSY)
                ) => {}
            Err(e) => return Err(e),
        }
        let mut cqes = std::mem::take(&mut self.cqes);
        cqes.clear();
        cqes.extend(self.ring.completion());
        out.reserve(cqes.len());
        for cqe in &cqes {
            self.convert(cqe, out);
        }
        self.cqes = cqes;
        Ok(())
    }

    fn release(&mut self, bid: u16) {
        self.bufs.release(bid);
    }

    fn has_spare_buffers(&self) -> bool {
        self.bufs.deepened()
    }

    fn trim_buffers(&mut self) -> usize {
        // NOTE: the ring's memory stays registered and whole; only how many
        // of its buffers wait in the ring follows the load.
        self.bufs.adapt();
        0
    }

    fn fd(&self) -> RawFd {
        self.poll_fd.unwrap_or_else(|| self.ring.as_raw_fd())
    }

    fn has_pending(&self) -> bool {
        !self.ready.is_empty()
    }

    fn posted(&mut self) -> bool {
        !self.ring.completion().is_empty()
    }

    fn submit(&mut self) -> io::Result<()> {
        self.bufs.publish();
        if self.ring.submission().is_empty() {
            return Ok(());
        }
        // NOTE: with the TASKRUN flag set this enter also runs (some)
        // deferred work; a polled ring must not be left with the rest.
        let res = self.ring.submit().map(drop);
        self.signal_if_work_left();
        res
    }

    fn in_flight(&self) -> usize {
        self.in_flight
    }

    fn wake_armed(&self) -> bool {
        self.wake_armed
    }

    fn cancel_wake(&mut self) {
        self.wake_cancelled = true;
        if self.wake_armed {
            self.cancel(user_data(KIND_WAKE, 0));
        }
    }
}
