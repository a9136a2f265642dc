//! The core's side of the stream-layer seam (`crate::layer`): starting a
//! connection's layer, putting received bytes through it before framing,
//! its plaintext writes through it before sending, its own output, its
//! readiness (the protocol's `connection_made` waits for it) and its
//! failures.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use super::{Ev, ThreadCore};
use crate::conn::{ConnError, ConnId, Layered, State};
use crate::layer::{Layer, LayerError, LayerOut};
use crate::limits::ListenerCounts;
use crate::stats::Stats;
use crate::timer::Due;

/// A connection whose layer is not ready yet: the event that opens it to
/// the protocol, and the plaintext that arrived meanwhile.
pub(crate) struct Unready {
    open: Ev,
    plain: Vec<u8>,
    /// The listener's counts it takes an unready place in (`max_unready`).
    pending: Option<Arc<ListenerCounts>>,
}

impl ThreadCore {
    /// Give connection `id` its layer and start it (a client's first
    /// handshake message goes out now); `open` (`Opened` / `Connected`)
    /// is delivered once the layer is ready. `pending`: the listener counts
    /// it as unready until then.
    pub(super) fn start_layer(
        &mut self,
        id: ConnId,
        layer: &Layer,
        open: Ev,
        pending: Option<Arc<ListenerCounts>>,
    ) {
        let outbound = matches!(open, Ev::Connected { .. });
        let (peer, local) = match &open {
            Ev::Opened { peer, local, .. } | Ev::Connected { peer, local, .. } => (*peer, *local),
            _ => (None, None),
        };
        let Some(conn) = self.conn(id) else {
            if let Some(counts) = pending {
                self.unready_done(&counts);
            }
            return;
        };
        let mut instance = layer.0.new_layer(peer, local, outbound);
        let mut out = LayerOut::default();
        let started = instance.on_start(&mut out);
        conn.rare().layer = Some(Box::new(Layered {
            layer: instance,
            name: layer.0.name(),
            plain: Default::default(),
            closed: false,
            eof: false,
        }));
        self.unready.insert(
            id.index,
            Unready {
                open,
                plain: Vec::new(),
                pending,
            },
        );
        if let Some(t) = layer.0.ready_timeout() {
            self.timers.schedule(self.now + t, Due::LayerDeadline(id));
        }
        self.layer_output(id, out, started);
    }

    /// Bytes from the wire on a layered connection.
    pub(super) fn layer_read(&mut self, id: ConnId, wire: &[u8]) {
        let Some(l) = self.conn(id).and_then(|c| c.layer_mut()) else {
            return;
        };
        let mut out = LayerOut::default();
        let result = l.layer.on_read(wire, &mut out);
        self.layer_output(id, out, result);
    }

    /// The peer's EOF on a layered connection: delivered as `Eof` if the
    /// layer accepts it, else the connection closes with the layer's reason.
    pub(super) fn layer_eof(&mut self, id: ConnId) {
        let Some(l) = self.conn(id).and_then(|c| c.layer_mut()) else {
            return;
        };
        if l.eof {
            return; // the layer ended the stream already; its Eof went
        }
        let mut out = LayerOut::default();
        let mut result = l.layer.on_eof(&mut out);
        if result.is_ok() && !l.layer.is_ready() {
            result = Err(LayerError::new(
                l.name,
                "the peer closed the connection before the layer was ready",
            ));
        }
        let ok = result.is_ok();
        self.layer_output(id, out, result);
        if ok {
            self.q.events.push_back(Ev::Eof { conn: id });
        }
    }

    /// The connection in slot `index` is no longer unready (ready, failed
    /// or gone): its entry, with its place among the listener's unready
    /// ones freed.
    pub(super) fn take_unready(&mut self, index: u32) -> Option<Unready> {
        let u = self.unready.remove(&index)?;
        if let Some(counts) = &u.pending {
            self.unready_done(counts);
        }
        Some(u)
    }

    /// The layer of `id` had until now to become ready.
    pub(super) fn layer_deadline(&mut self, id: ConnId) {
        // NOTE: `unready` is keyed by slot: the generation check (`get_mut`)
        // makes sure a new connection in the same slot is not the one timed.
        let Some(l) = self.conns.get_mut(id).and_then(|c| c.layer()) else {
            return;
        };
        if !self.unready.contains_key(&id.index) {
            return; // ready in time
        }
        let error = LayerError::new(
            l.name,
            "not ready within its time limit (stalled handshake)",
        );
        self.layer_failed(id, error);
    }

    /// Settle's hook: the plaintext written since the last settle through
    /// the layer of the connection in `index`.
    pub(super) fn flush_layer(&mut self, index: usize) {
        let Some(conn) = self.conns.slot_mut(index) else {
            return;
        };
        if conn.layer().is_none() {
            return;
        }
        let result = conn.flush_layer(&mut self.cache);
        conn.shared.set_queued(conn.queued());
        let files = conn.layer_mut().map_or(0, |l| l.plain.take_files_done());
        for _ in 0..files {
            self.q.events.push_back(Ev::FileSent { conn: conn.id });
        }
        if let Err(e) = result {
            let id = conn.id;
            self.layer_failed(id, e);
        }
    }

    /// What a layer call produced: its wire bytes queued, its plaintext
    /// delivered (after the opening event once the layer became ready), or
    /// the connection closed with its error.
    fn layer_output(&mut self, id: ConnId, out: LayerOut, result: Result<(), LayerError>) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if !out.wire.is_empty() {
            conn.sendq.push_vec(out.wire, &mut self.cache);
            conn.shared.set_queued(conn.queued());
        }
        Self::mark_dirty(&mut self.dirty, conn);
        let layer = conn.layer().map(|l| &l.layer);
        let ready = layer.is_some_and(|l| l.is_ready());
        let open = conn.state == State::Open;
        if let Some(u) = self.unready.get_mut(&id.index) {
            u.plain.extend_from_slice(&out.plain);
            if ready && open && result.is_ok() {
                let layer_info = layer.map(|l| Box::new(l.info()));
                let mut u = self.take_unready(id.index).expect("just found");
                if let Ev::Opened { info, peer, .. } | Ev::Connected { info, peer, .. } =
                    &mut u.open
                {
                    // A layer that speaks for another peer (a PROXY header)
                    // gives the protocol that peer's address.
                    if let Some(real) = layer_info.as_ref().and_then(|i| i.peer) {
                        *peer = Some(real);
                    }
                    *info = layer_info;
                }
                self.q.events.push_back(u.open);
                if !u.plain.is_empty() {
                    self.q.events.push_back(Ev::Held {
                        conn: id,
                        data: u.plain,
                    });
                }
                // NOTE: a PROXY header without TLS behind it: the layer
                // would only copy bytes from here on. Later reads (even the
                // rest of this completion batch) take the unlayered path,
                // queued after the Held above, so order is kept.
                if let Some(conn) = self.conns.get_mut(id) {
                    conn.drop_spent_layer();
                }
            }
        } else if !out.plain.is_empty() && open {
            self.q.events.push_back(Ev::Held {
                conn: id,
                data: out.plain,
            });
        }
        if out.eof && open && result.is_ok() && !self.unready.contains_key(&id.index) {
            if let Some(l) = self.conns.get_mut(id).and_then(|c| c.layer_mut()) {
                if !std::mem::replace(&mut l.eof, true) {
                    self.q.events.push_back(Ev::Eof { conn: id });
                }
            }
        }
        if let Err(e) = result {
            self.layer_failed(id, e);
        }
    }

    /// The layer closed `id` with `error`: gracefully, so that its last
    /// bytes (an alert) still go out. A connection the protocol never saw
    /// closes silently (an outbound one fails its connect).
    pub(super) fn layer_failed(&mut self, id: ConnId, error: LayerError) {
        let Some(conn) = self.conns.get_mut(id) else {
            return;
        };
        if conn.state != State::Open {
            return;
        }
        if let Some(l) = conn.layer_mut() {
            l.closed = true; // a failed layer has no last words to add
        }
        conn.begin_close(); // nothing more is delivered
        Self::mark_dirty(&mut self.dirty, conn);
        if !self.unready.contains_key(&id.index) {
            conn.rare().error = Some(ConnError::Layer(error));
            return;
        }
        conn.silent = true;
        let peer = socket2::SockRef::from(&conn.fd)
            .peer_addr()
            .ok()
            .and_then(|a| a.as_socket());
        let u = self.take_unready(id.index).expect("just found");
        self.closed_unready(u, peer, io::Error::new(io::ErrorKind::InvalidData, error));
    }

    /// A connection closed before its layer was ready (a failed or reset
    /// handshake): the protocol never hears of it, an outbound connect
    /// fails with `error`; counted as closed and as a failed handshake, and
    /// logged at DEBUG with the peer and the reason.
    pub(super) fn closed_unready(
        &mut self,
        u: Unready,
        peer: Option<SocketAddr>,
        error: io::Error,
    ) {
        let outbound = matches!(u.open, Ev::Connected { .. });
        log::debug!(
            "netring: connection {} {} closed before it opened: {error}",
            if outbound { "to" } else { "from" },
            peer.map_or_else(|| "?".to_string(), |p| p.to_string()),
        );
        Stats::add(&self.engine.stats.handshakes_failed, 1);
        Stats::add(&self.engine.stats.closed, 1);
        if let Ev::Connected { token, .. } = u.open {
            self.q.events.push_back(Ev::ConnectFailed { token, error });
        }
    }
}
