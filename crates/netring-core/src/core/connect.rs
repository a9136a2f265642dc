//! Outbound connections: the connect operation, its timeout, and its
//! outcome (established like an accepted connection, or failed silently).

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::Instant;

use socket2::SockRef;

use super::{Ev, ThreadCore};
use crate::config::ConnOptions;
use crate::conn::State;
use crate::driver::Driver;
use crate::stats::Stats;
use crate::timer::Due;

impl ThreadCore {
    pub(super) fn connect<D: Driver>(
        &mut self,
        token: u64,
        socket: OwnedFd,
        addr: socket2::SockAddr,
        options: &ConnOptions,
        deadline: Option<Instant>,
        driver: &mut D,
    ) {
        if self.shutdown_deadline.is_some() {
            let error = io::Error::new(io::ErrorKind::ConnectionAborted, "the pool is closing");
            self.q.events.push_back(Ev::ConnectFailed { token, error });
            return;
        }
        let fd = socket.as_raw_fd();
        let id = self.insert_conn(socket, options);
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        let connecting = conn.connecting.insert(Box::new(crate::conn::Connecting {
            token,
            addr,
            timed_out: false,
            cancel_sent: false,
            layer: options.layer.clone(),
        }));
        driver.connect(id.index, fd, &connecting.addr);
        if let Some(at) = deadline {
            self.timers.schedule(at, Due::ConnectTimeout(id));
        }
    }

    pub(super) fn connected<D: Driver>(
        &mut self,
        slot: u32,
        result: io::Result<()>,
        driver: &mut D,
    ) {
        let Some(conn) = self.conns.slot_mut(slot as usize) else {
            return;
        };
        let Some(attempt) = conn.connecting.take() else {
            return;
        };
        Self::mark_dirty(&mut self.dirty, conn);
        let result = match result {
            Ok(()) if conn.state == State::Open => Ok(()),
            Ok(()) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the pool is closing",
            )),
            Err(_) if attempt.timed_out => Err(io::Error::from_raw_os_error(libc::ETIMEDOUT)),
            Err(e) if e.raw_os_error() == Some(libc::ECANCELED) => Err(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "the pool is closing",
            )),
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => {
                let sock = SockRef::from(&conn.fd);
                let _ = sock.set_tcp_nodelay(true);
                let peer = sock.peer_addr().ok().and_then(|a| a.as_socket());
                let local = sock.local_addr().ok().and_then(|a| a.as_socket());
                conn.last_activity = self.now;
                Stats::add(&self.engine.stats.connected, 1);
                let (id, shared) = (conn.id, conn.shared.clone());
                let open = Ev::Connected {
                    conn: id,
                    token: attempt.token,
                    peer,
                    local,
                    shared,
                    info: None,
                };
                match &attempt.layer {
                    Some(layer) => self.start_layer(id, layer, open, None),
                    None => self.q.events.push_back(open),
                }
            }
            Err(error) => {
                conn.silent = true;
                conn.begin_abort(None, false);
                self.q.events.push_back(Ev::ConnectFailed {
                    token: attempt.token,
                    error,
                });
            }
        }
        let _ = driver;
    }
}
