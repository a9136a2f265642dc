//! A driver with no kernel behind it, for deterministic tests of the state
//! machine (Twisted's `MemoryReactor` idea): it records every operation the
//! core asks for and completes them only when the test says so. Its
//! `wait` never blocks; time is whatever the test's clock says.

use std::collections::{HashSet, VecDeque};
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::time::Duration;

use super::{Chunk, Completion, DgramResult, Driver, RecvResult, SendState};
use crate::config::Backend;

/// An operation the core asked the driver for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    ArmAccept(usize),
    CancelAccept(usize),
    ArmRecv(u32),
    CancelRecv(u32),
    /// A send of these bytes (the iovecs' contents at the time).
    Send(u32, Vec<u8>),
    CancelSend(u32),
    Connect(u32),
    CancelConnect(u32),
    Forget(u32),
    ArmRecvFrom(u32),
    CancelRecvFrom(u32),
    SendTo(u32, u16, Vec<u8>),
    CancelDgram(u32),
    ForgetDgram(u32),
}

/// What an armed operation is, for `in_flight`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Armed {
    Accept(usize),
    Recv(u32),
    Send(u32),
    Connect(u32),
}

/// Receive buffers the fake hands out.
const BUFFERS: usize = 64;
const BUFFER_SIZE: usize = 4096;

pub(crate) struct FakeDriver {
    /// Every operation asked for, in order (tests drain it).
    pub(crate) ops: Vec<Op>,
    /// Completions the next `wait` delivers.
    ready: VecDeque<Completion>,
    /// Timeouts the loop asked `wait` for, in order.
    pub(crate) waits: Vec<Option<Duration>>,
    armed: HashSet<Armed>,
    /// Cancels asked for and not yet completed.
    cancelled: Vec<Armed>,
    wake_armed: bool,
    bufs: Vec<Box<[u8; BUFFER_SIZE]>>,
    free: Vec<u16>,
    /// Bytes of receive buffers "allocated" beyond need (for trim tests).
    pub(crate) spare_bytes: usize,
}

// SAFETY: the fake holds only owned data and raw pointers into its own
// buffers; it is used on one thread at a time, like a real driver.
unsafe impl Send for FakeDriver {}

impl FakeDriver {
    pub(crate) fn new() -> Self {
        FakeDriver {
            ops: Vec::new(),
            ready: VecDeque::new(),
            waits: Vec::new(),
            armed: HashSet::new(),
            cancelled: Vec::new(),
            wake_armed: false,
            bufs: (0..BUFFERS).map(|_| Box::new([0u8; BUFFER_SIZE])).collect(),
            free: (0..BUFFERS as u16).rev().collect(),
            spare_bytes: 0,
        }
    }

    /// The operations recorded since the last call.
    pub(crate) fn take_ops(&mut self) -> Vec<Op> {
        std::mem::take(&mut self.ops)
    }

    /// Receive buffers not handed out.
    pub(crate) fn free_buffers(&self) -> usize {
        self.free.len()
    }

    /// Whether a recv is armed on `slot`.
    pub(crate) fn recv_armed(&self, slot: u32) -> bool {
        self.armed.contains(&Armed::Recv(slot))
    }

    /// Whether an accept is armed on `listener`.
    pub(crate) fn accept_armed(&self, listener: usize) -> bool {
        self.armed.contains(&Armed::Accept(listener))
    }

    /// Whether a send is in flight on `slot`.
    pub(crate) fn send_armed(&self, slot: u32) -> bool {
        self.armed.contains(&Armed::Send(slot))
    }

    fn finish(&mut self, armed: Armed, more: bool) {
        if !more {
            self.armed.remove(&armed);
        }
    }

    /// The kernel accepted `fd` on `listener` (the accept stays armed).
    pub(crate) fn accept(&mut self, listener: usize, fd: OwnedFd) {
        self.ready.push_back(Completion::Accepted {
            listener,
            result: Ok(fd),
            more: true,
        });
    }

    /// A single accept (a shared socket's) took `fd`: the accept ends.
    pub(crate) fn accept_once(&mut self, listener: usize, fd: OwnedFd) {
        self.finish(Armed::Accept(listener), false);
        self.ready.push_back(Completion::Accepted {
            listener,
            result: Ok(fd),
            more: false,
        });
    }

    /// Accept failed with `errno`; the multishot accept ends.
    pub(crate) fn accept_fails(&mut self, listener: usize, errno: i32) {
        self.finish(Armed::Accept(listener), false);
        self.ready.push_back(Completion::Accepted {
            listener,
            result: Err(io::Error::from_raw_os_error(errno)),
            more: false,
        });
    }

    /// `data` arrived on `slot` (the recv stays armed).
    pub(crate) fn recv(&mut self, slot: u32, data: &[u8]) {
        let bid = self.free.pop().expect("fake receive buffers exhausted");
        let buf = &mut self.bufs[usize::from(bid)];
        buf[..data.len()].copy_from_slice(data);
        self.ready.push_back(Completion::Recv {
            slot,
            result: RecvResult::Data(Chunk {
                ptr: buf.as_ptr(),
                len: data.len(),
                bid,
            }),
            more: true,
        });
    }

    /// The peer's EOF on `slot`; the recv ends.
    pub(crate) fn recv_eof(&mut self, slot: u32) {
        self.finish(Armed::Recv(slot), false);
        self.ready.push_back(Completion::Recv {
            slot,
            result: RecvResult::Eof,
            more: false,
        });
    }

    /// The send on `slot` took `n` bytes.
    pub(crate) fn sent(&mut self, slot: u32, n: usize) {
        self.finish(Armed::Send(slot), false);
        self.ready.push_back(Completion::Sent {
            slot,
            result: Ok(n),
            notify: false,
        });
    }

    /// The connect on `slot` finished with `result`.
    pub(crate) fn connected(&mut self, slot: u32, result: io::Result<()>) {
        self.finish(Armed::Connect(slot), false);
        self.ready.push_back(Completion::Connected { slot, result });
    }

    /// Complete every cancel the core asked for (the kernel's answer to
    /// `AsyncCancel`): each cancelled operation's final completion.
    pub(crate) fn complete_cancels(&mut self) {
        let cancelled = std::mem::take(&mut self.cancelled);
        for c in cancelled {
            match c {
                Armed::Accept(listener) => self.ready.push_back(Completion::Accepted {
                    listener,
                    result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                    more: false,
                }),
                Armed::Recv(slot) => self.ready.push_back(Completion::Recv {
                    slot,
                    result: RecvResult::Cancelled,
                    more: false,
                }),
                Armed::Send(slot) => self.ready.push_back(Completion::Sent {
                    slot,
                    result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                    notify: false,
                }),
                Armed::Connect(slot) => self.ready.push_back(Completion::Connected {
                    slot,
                    result: Err(io::Error::from_raw_os_error(libc::ECANCELED)),
                }),
            }
            self.armed.remove(&c);
        }
    }

    fn cancel(&mut self, op: Op, armed: Armed) {
        self.ops.push(op);
        if self.armed.contains(&armed) && !self.cancelled.contains(&armed) {
            self.cancelled.push(armed);
        }
    }
}

impl Driver for FakeDriver {
    fn backend(&self) -> Backend {
        Backend::Epoll
    }

    fn arm_wake(&mut self, _fd: RawFd) {
        self.wake_armed = true;
    }

    fn arm_accept(&mut self, listener: usize, _fd: RawFd, _one: bool) {
        self.ops.push(Op::ArmAccept(listener));
        self.armed.insert(Armed::Accept(listener));
    }

    fn cancel_accept(&mut self, listener: usize, _fd: RawFd) {
        self.cancel(Op::CancelAccept(listener), Armed::Accept(listener));
    }

    fn arm_recv(&mut self, slot: u32, _fd: RawFd) {
        self.ops.push(Op::ArmRecv(slot));
        assert!(self.armed.insert(Armed::Recv(slot)), "recv armed twice");
    }

    fn cancel_recv(&mut self, slot: u32, _fd: RawFd) {
        self.cancel(Op::CancelRecv(slot), Armed::Recv(slot));
    }

    fn send(&mut self, slot: u32, _fd: RawFd, state: &mut SendState) {
        let mut bytes = Vec::new();
        for v in &state.iov {
            // SAFETY: the core keeps the iovecs' buffers pinned and
            // untouched until this send's completion.
            bytes.extend_from_slice(unsafe {
                std::slice::from_raw_parts(v.iov_base.cast::<u8>(), v.iov_len)
            });
        }
        self.ops.push(Op::Send(slot, bytes));
        assert!(self.armed.insert(Armed::Send(slot)), "two sends in flight");
    }

    fn cancel_send(&mut self, slot: u32, _fd: RawFd) {
        self.cancel(Op::CancelSend(slot), Armed::Send(slot));
    }

    fn connect(&mut self, slot: u32, _fd: RawFd, _addr: &socket2::SockAddr) {
        self.ops.push(Op::Connect(slot));
        self.armed.insert(Armed::Connect(slot));
    }

    fn cancel_connect(&mut self, slot: u32, _fd: RawFd) {
        self.cancel(Op::CancelConnect(slot), Armed::Connect(slot));
    }

    fn forget(&mut self, slot: u32, _fd: RawFd) {
        assert!(
            !self.armed.contains(&Armed::Recv(slot)) && !self.armed.contains(&Armed::Send(slot)),
            "slot {slot} freed while the kernel owns an operation on it"
        );
        self.ops.push(Op::Forget(slot));
    }

    fn arm_recv_from(&mut self, slot: u32, _fd: RawFd, _template: &libc::msghdr) {
        self.ops.push(Op::ArmRecvFrom(slot));
    }

    fn cancel_recv_from(&mut self, slot: u32, _fd: RawFd) {
        self.ops.push(Op::CancelRecvFrom(slot));
        self.ready.push_back(Completion::RecvFrom {
            slot,
            result: DgramResult::Cancelled,
            more: false,
        });
    }

    fn send_to(&mut self, slot: u32, seq: u16, _fd: RawFd, msg: &libc::msghdr) {
        // SAFETY: the endpoint keeps the datagram's iovec and bytes in its
        // send slot, untouched until the completion.
        let iov = unsafe { &*msg.msg_iov };
        // SAFETY: as above.
        let bytes = unsafe { std::slice::from_raw_parts(iov.iov_base.cast::<u8>(), iov.iov_len) };
        self.ops.push(Op::SendTo(slot, seq, bytes.to_vec()));
        self.ready.push_back(Completion::SentTo {
            slot,
            seq,
            result: Ok(bytes.len()),
        });
    }

    fn cancel_dgram(&mut self, slot: u32, _fd: RawFd) {
        self.ops.push(Op::CancelDgram(slot));
    }

    fn forget_dgram(&mut self, slot: u32, _fd: RawFd) {
        self.ops.push(Op::ForgetDgram(slot));
    }

    fn wait(&mut self, timeout: Option<Duration>, out: &mut Vec<Completion>) -> io::Result<()> {
        self.waits.push(timeout);
        out.extend(self.ready.drain(..));
        Ok(())
    }

    fn release(&mut self, bid: u16) {
        assert!(!self.free.contains(&bid), "buffer {bid} released twice");
        self.free.push(bid);
    }

    fn has_spare_buffers(&self) -> bool {
        self.spare_bytes > 0
    }

    fn trim_buffers(&mut self) -> usize {
        std::mem::take(&mut self.spare_bytes)
    }

    fn fd(&self) -> RawFd {
        -1
    }

    fn submit(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn has_pending(&self) -> bool {
        !self.ready.is_empty()
    }

    fn in_flight(&self) -> usize {
        self.armed.len()
    }

    fn cancel_wake(&mut self) {
        self.wake_armed = false;
    }

    fn wake_armed(&self) -> bool {
        self.wake_armed
    }
}
