//! UDP endpoints: one IO thread's datagram sockets.
//!
//! An endpoint lives on one IO thread like a connection (principle 1), in
//! its own generational slab (`conn/slab.rs`) ([`crate::ConnId`]s of endpoints
//! are a separate namespace from connections'). Receiving is one multishot
//! `recvmsg` into the shared provided-buffer ring on io_uring (a readable
//! loop on epoll): a datagram costs no syscall of its own and an idle
//! endpoint owns no buffer. A datagram longer than a buffer can hold is
//! never cut silently: it is reported as [`crate::Event::DatagramTruncated`]
//! with its real size, and its bytes are dropped.
//!
//! Sending: datagrams queue in order (bounded in bytes); up to
//! [`SEND_WINDOW`] are in the kernel at once, each in its own [`SendSlot`]
//! (message header, address and bytes that stay put until its completion).
//! The queue has water marks like a connection's (`pause_writing` /
//! `resume_writing`) and a hard cap: a datagram that would cross
//! `max_send_queue` is dropped and counted, as the kernel itself drops
//! datagrams when its buffers are full — UDP promises no delivery.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use socket2::SockAddr;

use crate::conn::slab::{GenSlab, Identified};
use crate::conn::{ConnId, ConnShared};
pub use crate::driver::{datagram_capacity, DATAGRAM_HEADROOM};
use crate::flow::Flow;

/// Datagrams in the kernel at once per endpoint.
pub const SEND_WINDOW: usize = 16;

/// Default cap on one endpoint's queued outgoing bytes (1 MiB).
pub const DEFAULT_MAX_SEND_QUEUE: usize = 1 << 20;

/// Options of one endpoint.
#[derive(Clone, Debug)]
pub struct UdpConfig {
    /// Address to bind.
    pub local: SocketAddr,
    /// Default destination (the socket is connected to it): datagrams from
    /// anyone else are filtered by the kernel.
    pub remote: Option<SocketAddr>,
    /// `SO_REUSEPORT` (several sockets on one port).
    pub reuse_port: bool,
    /// `SO_BROADCAST`.
    pub broadcast: bool,
    /// Multicast groups to join, each with the local interface address to
    /// join on (IPv4: unspecified picks one; IPv6: interface index 0).
    pub multicast_groups: Vec<(std::net::IpAddr, Option<std::net::IpAddr>)>,
    /// `IP_MULTICAST_LOOP` / `IPV6_MULTICAST_LOOP` (None: the kernel's default).
    pub multicast_loop: Option<bool>,
    /// `IP_MULTICAST_TTL` / `IPV6_MULTICAST_HOPS`.
    pub multicast_ttl: Option<u32>,
    /// Hard cap on queued outgoing bytes; see the module docs.
    pub max_send_queue: usize,
}

impl UdpConfig {
    /// Defaults for an endpoint bound to `local`.
    pub fn new(local: SocketAddr) -> Self {
        UdpConfig {
            local,
            remote: None,
            reuse_port: false,
            broadcast: false,
            multicast_groups: Vec::new(),
            multicast_loop: None,
            multicast_ttl: None,
            max_send_queue: DEFAULT_MAX_SEND_QUEUE,
        }
    }
}

/// One datagram in the kernel: the message header and everything it
/// points at. Lives in a boxed slice, so it never moves while in flight.
pub(crate) struct SendSlot {
    pub(crate) msg: libc::msghdr,
    pub(crate) iov: libc::iovec,
    pub(crate) addr: Option<SockAddr>,
    pub(crate) data: Vec<u8>,
    pub(crate) busy: bool,
}

impl Default for SendSlot {
    fn default() -> Self {
        SendSlot {
            // SAFETY: msghdr and iovec are plain C structs for which all-zero
            // is a valid (empty) value.
            msg: unsafe { std::mem::zeroed() },
            // SAFETY: as above.
            iov: unsafe { std::mem::zeroed() },
            addr: None,
            data: Vec::new(),
            busy: false,
        }
    }
}

// SAFETY: the raw pointers inside a SendSlot point into the slot itself or
// its own `data`/`addr`; the slot never leaves its IO thread while in use.
unsafe impl Send for SendSlot {}

/// The receive template io_uring's multishot recvmsg reads (name length
/// only); boxed so it stays put while the recv is armed.
pub(crate) struct RecvTemplate(pub(crate) libc::msghdr);

// SAFETY: the template holds no pointers (only lengths); see SendSlot.
unsafe impl Send for RecvTemplate {}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum UdpState {
    Open,
    /// Flush the queue, then close.
    Closing,
    /// Drop the queue, cancel what is in the kernel, then close.
    Aborting,
}

/// One UDP endpoint.
pub(crate) struct Endpoint {
    pub(crate) id: ConnId,
    pub(crate) fd: OwnedFd,
    pub(crate) state: UdpState,
    pub(crate) shared: Arc<ConnShared>,
    pub(crate) template: Box<RecvTemplate>,
    pub(crate) recv_armed: bool,
    pub(crate) read_paused: bool,
    pub(crate) queue: VecDeque<(Vec<u8>, Option<SockAddr>)>,
    /// Bytes queued or in the kernel.
    pub(crate) queued: usize,
    pub(crate) window: Box<[SendSlot]>,
    pub(crate) inflight: usize,
    pub(crate) next_slot: usize,
    /// A cancel of the recv alone is on its way.
    pub(crate) recv_cancel_sent: bool,
    /// A cancel of everything (abort) is on its way.
    pub(crate) abort_cancel_sent: bool,
    /// Water marks, and whether the protocol was told to pause.
    pub(crate) flow: Flow,
    pub(crate) max_send_queue: usize,
    pub(crate) dirty: bool,
    /// Why the endpoint is closing, if an error ended it.
    pub(crate) error: Option<io::Error>,
}

impl Endpoint {
    pub(crate) fn new(id: ConnId, fd: OwnedFd, max_send_queue: usize) -> Self {
        // SAFETY: msghdr is a plain C struct; all-zero is a valid value.
        let mut template: libc::msghdr = unsafe { std::mem::zeroed() };
        template.msg_namelen = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
        Endpoint {
            id,
            fd,
            state: UdpState::Open,
            shared: Arc::new(ConnShared::default()),
            template: Box::new(RecvTemplate(template)),
            recv_armed: false,
            read_paused: false,
            queue: VecDeque::new(),
            queued: 0,
            window: (0..SEND_WINDOW).map(|_| SendSlot::default()).collect(),
            inflight: 0,
            next_slot: 0,
            recv_cancel_sent: false,
            abort_cancel_sent: false,
            flow: Flow::default(),
            max_send_queue,
            dirty: false,
            error: None,
        }
    }

    pub(crate) fn finished(&self) -> bool {
        match self.state {
            UdpState::Open => false,
            UdpState::Closing => self.queue.is_empty() && self.inflight == 0 && !self.recv_armed,
            UdpState::Aborting => self.inflight == 0 && !self.recv_armed,
        }
    }
}

/// One thread's endpoints.
pub(crate) struct UdpTable {
    pub(crate) eps: GenSlab<Endpoint>,
    pub(crate) dirty: Vec<usize>,
}

impl UdpTable {
    pub(crate) fn new(thread: u16) -> Self {
        UdpTable {
            eps: GenSlab::new(thread),
            dirty: Vec::new(),
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.eps.is_empty()
    }

    pub(crate) fn get(&mut self, id: ConnId) -> Option<&mut Endpoint> {
        self.eps.get_mut(id)
    }

    pub(crate) fn touch(&mut self, id: ConnId) -> Option<&mut Endpoint> {
        let ep = self.eps.get_mut(id)?;
        if !ep.dirty {
            ep.dirty = true;
            self.dirty.push(id.index as usize);
        }
        Some(ep)
    }

    pub(crate) fn ids(&self) -> Vec<ConnId> {
        self.eps.ids()
    }
}

impl Identified for Endpoint {
    fn id(&self) -> ConnId {
        self.id
    }
}

/// Errors a datagram socket reports about a peer (from ICMP), after which
/// it goes on working.
pub(crate) fn is_peer_error(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::EHOSTUNREACH
                | libc::ENETUNREACH
                | libc::EHOSTDOWN
                | libc::ENETDOWN
                | libc::EMSGSIZE
                | libc::ETIMEDOUT
                | libc::EPROTO
        )
    )
}
