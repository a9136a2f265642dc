//! UDP endpoints on one IO thread: opening, sending with a window in the
//! kernel, receiving, water marks, close and abort (the endpoint types are
//! `crate::udp`).

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use socket2::SockAddr;

use super::{Ev, ThreadCore};
use crate::conn::{ConnId, ConnShared};
use crate::driver::{Completion, DgramResult, Driver};
use crate::flow::{Crossing, Written};
use crate::stats::Stats;
use crate::udp::{is_peer_error, Endpoint, UdpState, SEND_WINDOW};

impl ThreadCore {
    /// Adopt a bound UDP socket (from `Engine::udp_open`).
    pub(crate) fn udp_open(&mut self, token: u64, socket: OwnedFd, max_send_queue: usize) {
        if self.shutdown_deadline.is_some() {
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "the pool is closing");
            self.q.events.push_back(Ev::ConnectFailed { token, error });
            return;
        }
        let sock = socket2::SockRef::from(&socket);
        let local = sock.local_addr().ok().and_then(|a| a.as_socket());
        let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
        let t = &mut self.udp;
        let id = t
            .eps
            .insert_with(|id| Endpoint::new(id, socket, max_send_queue));
        let Some(ep) = t.touch(id) else { return };
        let shared = ep.shared.clone();
        self.q.events.push_back(Ev::EndpointOpened {
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
        if !ep.flow.queued(ep.queued) {
            return Written::Queued;
        }
        if event {
            self.q.urgent.push_back(Ev::EndpointPauseWriting { ep: id });
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
        match ep.flow.set_limits(high, low, ep.queued) {
            Some(Crossing::Pause) => self.q.urgent.push_back(Ev::EndpointPauseWriting { ep: id }),
            Some(Crossing::Resume) => self
                .q
                .events
                .push_back(Ev::EndpointResumeWriting { ep: id }),
            None => {}
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
                let Some(ep) = self.udp.eps.slot_mut(slot as usize) else {
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
                        self.q.chunks_out.push(chunk.bid);
                        Stats::add(&self.engine.stats.datagrams_in, 1);
                        Stats::add(&self.engine.stats.bytes_in, chunk.len as u64);
                        if open {
                            self.q.events.push_back(Ev::Datagram {
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
                            self.q
                                .events
                                .push_back(Ev::DatagramTruncated { ep: id, addr, size });
                        }
                    }
                    DgramResult::NoBuffers | DgramResult::Cancelled => {}
                    DgramResult::Err(error) if is_peer_error(&error) => {
                        // An ICMP report (ECONNREFUSED on a connected
                        // socket...): asyncio's error_received; the recv is
                        // re-armed by settle.
                        if open {
                            self.q.events.push_back(Ev::DatagramError { ep: id, error });
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
                let Some(ep) = self.udp.eps.slot_mut(slot as usize) else {
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
                let resume = ep.flow.drained(ep.queued);
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
                            self.q.events.push_back(Ev::DatagramError { ep: id, error });
                        }
                    }
                }
                if resume && open {
                    self.q
                        .events
                        .push_back(Ev::EndpointResumeWriting { ep: id });
                }
            }
            _ => unreachable!("not a datagram completion"),
        }
    }

    /// Turn dirty endpoints' state into driver operations.
    pub(crate) fn udp_settle<D: Driver>(&mut self, driver: &mut D) {
        while let Some(index) = self.udp.dirty.pop() {
            let Some(ep) = self.udp.eps.slot_mut(index) else {
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
                driver.forget_dgram(slot, ep.fd.as_raw_fd());
                let (id, error) = (ep.id, ep.error);
                drop(ep.fd); // closes the socket
                self.q
                    .events
                    .push_back(Ev::EndpointClosed { ep: id, error });
            }
        }
    }
}
