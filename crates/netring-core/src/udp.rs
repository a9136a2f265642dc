//! UDP endpoints: one IO thread's datagram sockets.
//!
//! An endpoint lives on one IO thread like a connection (principle 1), in
//! its own slab with its own generations ([`crate::ConnId`]s of endpoints
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
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use slab::Slab;
use socket2::SockAddr;

use crate::conn::{ConnId, ConnShared};
use crate::core::{Ev, ThreadCore, Written};
use crate::driver::{Completion, DgramResult, Driver};
use crate::stats::Stats;

/// Datagrams in the kernel at once per endpoint.
pub const SEND_WINDOW: usize = 16;

/// Bytes of each receive buffer that io_uring's multishot `recvmsg` uses
/// for its header (`io_uring_recvmsg_out`, 16 bytes) and the source address
/// (a `sockaddr_in6`, 28 bytes). Both backends cap datagrams the same way.
pub const DATAGRAM_HEADROOM: usize = 16 + std::mem::size_of::<libc::sockaddr_in6>();

/// The largest datagram received whole with receive buffers of
/// `buffer_size` bytes; longer ones are reported truncated.
pub fn datagram_capacity(buffer_size: usize) -> usize {
    buffer_size.saturating_sub(DATAGRAM_HEADROOM)
}

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
    iov: libc::iovec,
    addr: Option<SockAddr>,
    data: Vec<u8>,
    busy: bool,
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
enum UdpState {
    Open,
    /// Flush the queue, then close.
    Closing,
    /// Drop the queue, cancel what is in the kernel, then close.
    Aborting,
}

/// One UDP endpoint.
pub(crate) struct Endpoint {
    pub(crate) id: ConnId,
    fd: OwnedFd,
    state: UdpState,
    pub(crate) shared: Arc<ConnShared>,
    template: Box<RecvTemplate>,
    recv_armed: bool,
    read_paused: bool,
    queue: VecDeque<(Vec<u8>, Option<SockAddr>)>,
    /// Bytes queued or in the kernel.
    queued: usize,
    window: Box<[SendSlot]>,
    inflight: usize,
    next_slot: usize,
    /// A cancel of the recv alone is on its way.
    recv_cancel_sent: bool,
    /// A cancel of everything (abort) is on its way.
    abort_cancel_sent: bool,
    writing_paused: bool,
    high_water: usize,
    low_water: usize,
    max_send_queue: usize,
    dirty: bool,
    /// Why the endpoint is closing, if an error ended it.
    error: Option<io::Error>,
}

impl Endpoint {
    fn new(id: ConnId, fd: OwnedFd, max_send_queue: usize) -> Self {
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
            writing_paused: false,
            high_water: crate::config::DEFAULT_WRITE_HIGH_WATER_BYTES,
            low_water: crate::config::DEFAULT_WRITE_HIGH_WATER_BYTES / 4,
            max_send_queue,
            dirty: false,
            error: None,
        }
    }

    fn finished(&self) -> bool {
        match self.state {
            UdpState::Open => false,
            UdpState::Closing => self.queue.is_empty() && self.inflight == 0 && !self.recv_armed,
            UdpState::Aborting => self.inflight == 0 && !self.recv_armed,
        }
    }
}

/// One thread's endpoints.
#[derive(Default)]
pub(crate) struct UdpTable {
    eps: Slab<Endpoint>,
    generations: Vec<u32>,
    dirty: Vec<usize>,
}

impl UdpTable {
    pub(crate) fn is_empty(&self) -> bool {
        self.eps.is_empty()
    }

    fn get(&mut self, id: ConnId) -> Option<&mut Endpoint> {
        self.eps.get_mut(id.index as usize).filter(|e| e.id == id)
    }

    fn touch(&mut self, id: ConnId) -> Option<&mut Endpoint> {
        let ep = self.eps.get_mut(id.index as usize).filter(|e| e.id == id)?;
        if !ep.dirty {
            ep.dirty = true;
            self.dirty.push(id.index as usize);
        }
        Some(ep)
    }

    fn ids(&self) -> Vec<ConnId> {
        self.eps.iter().map(|(_, e)| e.id).collect()
    }
}

/// Errors a datagram socket reports about a peer (from ICMP), after which
/// it goes on working.
fn is_peer_error(e: &io::Error) -> bool {
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

impl ThreadCore {
    /// Adopt a bound UDP socket (from `Engine::udp_open`).
    pub(crate) fn udp_open(&mut self, token: u64, socket: OwnedFd, max_send_queue: usize) {
        if self.shutdown_deadline.is_some() {
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "the pool is closing");
            self.events.push_back(Ev::ConnectFailed { token, error });
            return;
        }
        let sock = socket2::SockRef::from(&socket);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        let t = &mut self.udp;
        let entry = t.eps.vacant_entry();
        let index = entry.key();
        if t.generations.len() <= index {
            t.generations.resize(index + 1, 0);
        }
        let id = ConnId {
            thread: self.thread,
            index: index as u32,
            generation: t.generations[index],
        };
        let ep = entry.insert(Endpoint::new(id, socket, max_send_queue));
        let shared = ep.shared.clone();
        t.touch(id);
        self.events.push_back(Ev::EndpointOpened {
            ep: id,
            token,
            local,
            peer,
            shared,
        });
    }

    /// Queue one datagram to `addr` (None: the connected peer).
    pub fn udp_send(&mut self, id: ConnId, data: &[u8], addr: Option<SocketAddr>) -> Written {
        self.udp_send_vec(id, data.to_vec(), addr, false)
    }

    pub(crate) fn udp_send_vec(
        &mut self,
        id: ConnId,
        data: Vec<u8>,
        addr: Option<SocketAddr>,
        event: bool,
    ) -> Written {
        let Some(ep) = self.udp.touch(id) else {
            return Written::Dropped;
        };
        if ep.state != UdpState::Open {
            return Written::Dropped;
        }
        if ep.queued + data.len() > ep.max_send_queue {
            Stats::add(&self.engine.stats.datagrams_dropped, 1);
            return Written::Dropped;
        }
        ep.queued += data.len();
        ep.shared.set_queued(ep.queued);
        ep.queue.push_back((data, addr.map(SockAddr::from)));
        if ep.writing_paused || ep.queued <= ep.high_water {
            return Written::Queued;
        }
        ep.writing_paused = true;
        if event {
            self.urgent.push_back(Ev::EndpointPauseWriting { ep: id });
            Written::Queued
        } else {
            Written::CrossedHigh
        }
    }

    /// Flush queued datagrams, then close.
    pub fn udp_close(&mut self, id: ConnId) {
        if let Some(ep) = self.udp.touch(id) {
            if ep.state == UdpState::Open {
                ep.state = UdpState::Closing;
            }
        }
    }

    /// Drop queued datagrams and close now.
    pub fn udp_abort(&mut self, id: ConnId) {
        if let Some(ep) = self.udp.touch(id) {
            ep.state = UdpState::Aborting;
        }
    }

    /// Pause or resume receiving (datagrams arriving meanwhile wait in the
    /// kernel's socket buffer, and past it are dropped by the kernel).
    pub fn udp_set_reading(&mut self, id: ConnId, paused: bool) {
        if let Some(ep) = self.udp.touch(id) {
            ep.read_paused = paused;
        }
    }

    /// Set the send queue's water marks.
    pub fn udp_set_write_limits(&mut self, id: ConnId, high: usize, low: usize) {
        let Some(ep) = self.udp.touch(id) else { return };
        ep.high_water = high;
        ep.low_water = low;
        if !ep.writing_paused && ep.queued > high {
            ep.writing_paused = true;
            self.urgent.push_back(Ev::EndpointPauseWriting { ep: id });
        } else if ep.writing_paused && ep.queued <= low {
            ep.writing_paused = false;
            self.events.push_back(Ev::EndpointResumeWriting { ep: id });
        }
    }

    pub(crate) fn udp_shared(&mut self, id: ConnId) -> Option<Arc<ConnShared>> {
        self.udp.get(id).map(|e| e.shared.clone())
    }

    /// Whether `id` names a live endpoint in the Open state.
    pub(crate) fn udp_is_open(&mut self, id: ConnId) -> bool {
        self.udp.get(id).is_some_and(|e| e.state == UdpState::Open)
    }

    pub(crate) fn udp_close_all(&mut self) {
        for id in self.udp.ids() {
            self.udp_close(id);
        }
    }

    pub(crate) fn udp_abort_all(&mut self) {
        for id in self.udp.ids() {
            self.udp_abort(id);
        }
    }

    /// A datagram completion.
    pub(crate) fn udp_complete<D: Driver>(&mut self, c: Completion, driver: &mut D) {
        match c {
            Completion::RecvFrom { slot, result, more } => {
                let Some(ep) = self.udp.eps.get_mut(slot as usize) else {
                    if let DgramResult::Data { chunk, .. } = result {
                        driver.release(chunk.bid);
                    }
                    return;
                };
                let id = ep.id;
                if !more {
                    ep.recv_armed = false;
                }
                let ep = self.udp.touch(id).expect("endpoint just found");
                let open = ep.state == UdpState::Open;
                match result {
                    DgramResult::Data { chunk, addr } => {
                        self.chunks_out.push(chunk.bid);
                        Stats::add(&self.engine.stats.datagrams_in, 1);
                        Stats::add(&self.engine.stats.bytes_in, chunk.len as u64);
                        if open {
                            self.events.push_back(Ev::Datagram {
                                ep: id,
                                chunk,
                                addr,
                            });
                        }
                    }
                    DgramResult::Truncated { chunk, addr, size } => {
                        driver.release(chunk.bid);
                        Stats::add(&self.engine.stats.datagrams_truncated, 1);
                        if open {
                            self.events
                                .push_back(Ev::DatagramTruncated { ep: id, addr, size });
                        }
                    }
                    DgramResult::NoBuffers | DgramResult::Cancelled => {}
                    DgramResult::Err(error) if is_peer_error(&error) => {
                        // An ICMP report (ECONNREFUSED on a connected
                        // socket...): asyncio's error_received; the recv is
                        // re-armed by settle.
                        if open {
                            self.events.push_back(Ev::DatagramError { ep: id, error });
                        }
                    }
                    DgramResult::Err(error) => {
                        // The socket itself failed: close with the reason.
                        if ep.error.is_none() {
                            ep.error = Some(error);
                        }
                        ep.state = UdpState::Aborting;
                    }
                }
            }
            Completion::SentTo { slot, seq, result } => {
                let Some(ep) = self.udp.eps.get_mut(slot as usize) else {
                    return;
                };
                let id = ep.id;
                let s = &mut ep.window[usize::from(seq)];
                debug_assert!(s.busy);
                s.busy = false;
                let len = s.data.len();
                s.data.clear();
                ep.inflight -= 1;
                ep.queued -= len;
                ep.shared.set_queued(ep.queued);
                let resume = ep.writing_paused && ep.queued <= ep.low_water;
                if resume {
                    ep.writing_paused = false;
                }
                let open = ep.state == UdpState::Open;
                self.udp.touch(id);
                match result {
                    Ok(n) => {
                        Stats::add(&self.engine.stats.datagrams_out, 1);
                        Stats::add(&self.engine.stats.bytes_out, n as u64);
                    }
                    Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => {}
                    Err(error) => {
                        if open {
                            self.events.push_back(Ev::DatagramError { ep: id, error });
                        }
                    }
                }
                if resume && open {
                    self.events.push_back(Ev::EndpointResumeWriting { ep: id });
                }
            }
            _ => unreachable!("not a datagram completion"),
        }
    }

    /// Turn dirty endpoints' state into driver operations.
    pub(crate) fn udp_settle<D: Driver>(&mut self, driver: &mut D) {
        while let Some(index) = self.udp.dirty.pop() {
            let Some(ep) = self.udp.eps.get_mut(index) else {
                continue;
            };
            ep.dirty = false;
            let slot = index as u32;
            let fd = ep.fd.as_raw_fd();
            if ep.state == UdpState::Aborting {
                for (data, _) in ep.queue.drain(..) {
                    ep.queued -= data.len();
                }
                ep.shared.set_queued(ep.queued);
                if (ep.inflight > 0 || ep.recv_armed) && !ep.abort_cancel_sent {
                    ep.abort_cancel_sent = true;
                    driver.cancel_dgram(slot, fd);
                }
            } else {
                while ep.inflight < SEND_WINDOW {
                    let Some((data, addr)) = ep.queue.pop_front() else {
                        break;
                    };
                    let mut i = ep.next_slot;
                    while ep.window[i].busy {
                        i = (i + 1) % SEND_WINDOW;
                    }
                    ep.next_slot = (i + 1) % SEND_WINDOW;
                    let s = &mut ep.window[i];
                    s.busy = true;
                    s.data = data;
                    s.addr = addr;
                    s.iov = libc::iovec {
                        iov_base: s.data.as_mut_ptr().cast(),
                        iov_len: s.data.len(),
                    };
                    s.msg.msg_iov = &mut s.iov;
                    s.msg.msg_iovlen = 1;
                    match &s.addr {
                        Some(a) => {
                            s.msg.msg_name = a.as_ptr() as *mut libc::c_void;
                            s.msg.msg_namelen = a.len();
                        }
                        None => {
                            s.msg.msg_name = std::ptr::null_mut();
                            s.msg.msg_namelen = 0;
                        }
                    }
                    ep.inflight += 1;
                    driver.send_to(slot, i as u16, fd, &s.msg);
                }
            }
            let wants_recv = ep.state == UdpState::Open && !ep.read_paused;
            if wants_recv && !ep.recv_armed {
                ep.recv_armed = true;
                ep.recv_cancel_sent = false;
                driver.arm_recv_from(slot, fd, &ep.template.0);
            } else if !wants_recv && ep.recv_armed && !ep.recv_cancel_sent && !ep.abort_cancel_sent
            {
                ep.recv_cancel_sent = true;
                driver.cancel_recv_from(slot, fd);
            }
            if ep.finished() {
                let ep = self.udp.eps.remove(index);
                self.udp.generations[index] = self.udp.generations[index].wrapping_add(1);
                driver.forget_dgram(slot, ep.fd.as_raw_fd());
                let (id, error) = (ep.id, ep.error);
                drop(ep.fd); // closes the socket
                self.events.push_back(Ev::EndpointClosed { ep: id, error });
            }
        }
    }
}
