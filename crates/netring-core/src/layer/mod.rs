//! The stream-layer seam: a per-connection transform between the wire and
//! framing, in both directions (a TLS record layer, a PROXY-protocol
//! header).
//!
//! ```text
//!   driver recv ──wire──▶ StreamLayer::on_read ──plain──▶ framing ──▶ protocol
//!   driver send ◀─wire── StreamLayer::on_write ◀─plain── write queue ◀─ protocol
//!                         (and its own bytes: handshake replies, alerts)
//! ```
//!
//! A listener or an outbound connect gets a layer through
//! [`crate::ConnOptions::layer`]: a [`LayerFactory`] makes one
//! [`StreamLayer`] per connection. The core (`core/layered.rs`) calls it;
//! nothing in `settle` or the drivers knows it exists:
//!
//! - **In.** Each received chunk goes through [`StreamLayer::on_read`] before
//!   framing; the plaintext it appends to [`LayerOut::plain`] is framed and
//!   delivered exactly like bytes read from a plain socket (every framer,
//!   `set_framing`, pausing).
//! - **Start.** When the connection is established, [`StreamLayer::on_start`]
//!   (a client's first handshake message).
//! - **Out.** The protocol's writes queue as plaintext; once per settle (so
//!   the writes of one dispatch go through in one call) the queued
//!   plaintext goes through [`StreamLayer::on_write`], and the wire bytes it
//!   appends to [`LayerOut::wire`] join the send queue in order.
//! - **On its own.** Any call may append wire bytes (a handshake reply, an
//!   alert); they are sent at once, in order with everything else.
//! - **Ready.** The protocol sees the connection (`connection_made`) only
//!   once [`StreamLayer::is_ready`] (a handshake completed, a header
//!   parsed). A layer that fails before then closes the connection without
//!   the protocol ever hearing of it; an outbound connect then fails with
//!   the layer's reason. A layer that is not ready within its factory's
//!   `ready_timeout` is closed the same way (a stalled handshake).
//! - **Closing with a reason.** An `Err(LayerError)` closes the connection
//!   gracefully (the wire bytes appended so far, e.g. an alert, are still
//!   sent) and `connection_lost` reports the reason.
//! - **End of stream.** The peer's EOF goes through [`StreamLayer::on_eof`]
//!   (a TLS layer tells a clean close from a truncation), unless the layer
//!   already ended the stream itself ([`LayerOut::eof`]); our own
//!   `write_eof`/`close` calls [`StreamLayer::on_close`] once, after the
//!   last plaintext (a TLS close_notify).
//! - **Memory.** What the layer buffers ([`StreamLayer::buffered`]) counts in
//!   the engine's `max_buffer_memory`, like queued writes.
//! - **Water marks** count plaintext queued and wire bytes not yet sent.

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

/// Where a layer puts its output.
#[derive(Debug, Default)]
pub struct LayerOut {
    /// Bytes for framing and the protocol (inbound plaintext).
    pub plain: Vec<u8>,
    /// Bytes for the peer, sent in order with everything else.
    pub wire: Vec<u8>,
    /// The peer ended its stream inside the layer (a TLS `close_notify`):
    /// the protocol gets `eof_received` now, after `plain`, and the TCP EOF
    /// that follows adds nothing.
    pub eof: bool,
}

/// Why a layer closed its connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerError {
    /// Which layer (e.g. `"tls"`, `"proxy"`): the error's kind.
    pub layer: &'static str,
    /// What went wrong, for `connection_lost` and the logs.
    pub reason: String,
}

impl LayerError {
    /// An error of `layer` with `reason`.
    pub fn new(layer: &'static str, reason: impl Into<String>) -> Self {
        LayerError {
            layer,
            reason: reason.into(),
        }
    }
}

impl fmt::Display for LayerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.layer, self.reason)
    }
}

impl std::error::Error for LayerError {}

/// One connection's transform between the wire and framing. Runs on the
/// connection's IO thread only; see the module docs for when each call
/// comes.
pub trait StreamLayer: Send {
    /// The connection is established (accepted, or an outbound connect
    /// succeeded): a client layer appends its first handshake message.
    /// `Err`: the connection may not go on (a peer the layer refuses); it
    /// is closed before it opens.
    fn on_start(&mut self, _out: &mut LayerOut) -> Result<(), LayerError> {
        Ok(())
    }

    /// Bytes arrived from the peer: append what the protocol should see to
    /// `out.plain`, and anything to answer on the layer's own to `out.wire`.
    fn on_read(&mut self, wire: &[u8], out: &mut LayerOut) -> Result<(), LayerError>;

    /// The protocol wrote `plain`: append the bytes to send to `out.wire`.
    fn on_write(&mut self, plain: &[u8], out: &mut LayerOut) -> Result<(), LayerError>;

    /// The peer shut down its sending side. `Err`: the stream ended where it
    /// must not (a truncation); the connection closes with that reason.
    fn on_eof(&mut self, _out: &mut LayerOut) -> Result<(), LayerError> {
        Ok(())
    }

    /// We are shutting our sending side down (`write_eof` or `close`),
    /// after the last plaintext: append the layer's last words to `out.wire`.
    fn on_close(&mut self, _out: &mut LayerOut) {}

    /// Whether the protocol may see the connection yet.
    fn is_ready(&self) -> bool {
        true
    }

    /// Bytes the layer holds internally (counted in `max_buffer_memory`).
    fn buffered(&self) -> usize {
        0
    }

    /// Whether the layer has nothing left to do: ready, holding nothing,
    /// and from now on passing bytes through unchanged both ways (a PROXY
    /// header parsed, no TLS behind it). The core then drops it once the
    /// connection opens: reads and writes take the unlayered path (no
    /// copy through the layer), and `on_eof` / `on_close` are not called.
    fn is_spent(&self) -> bool {
        false
    }

    /// What the protocol may ask about the layer (`get_extra_info`): taken
    /// once, when the layer becomes ready, and delivered with the event
    /// that opens the connection.
    fn info(&self) -> LayerInfo {
        LayerInfo::default()
    }
}

/// What a ready layer tells the protocol about the connection.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LayerInfo {
    /// The negotiated TLS session (a TLS layer).
    pub tls: Option<tls::TlsInfo>,
    /// The real peer, when the TCP peer speaks for it (a PROXY header's
    /// client): the connection's `peername` becomes this.
    pub peer: Option<SocketAddr>,
    /// The TCP peer that spoke for `peer` (the proxy).
    pub proxy_peer: Option<SocketAddr>,
    /// Where the client connected to, as the proxy says.
    pub proxy_destination: Option<SocketAddr>,
}

/// Makes each connection's layer (one per listener or connect).
pub trait LayerFactory: Send + Sync {
    /// The layer of a new connection; `outbound` for `connect`.
    fn new_layer(
        &self,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
        outbound: bool,
    ) -> Box<dyn StreamLayer>;

    /// A name for logs and `Debug` (e.g. `"tls"`).
    fn name(&self) -> &'static str;

    /// How long a connection may take to become ready (a handshake, a
    /// header) before it is closed; `None`: no limit.
    fn ready_timeout(&self) -> Option<std::time::Duration> {
        None
    }
}

/// A layer factory as a connection option: compared by identity.
#[derive(Clone)]
pub struct Layer(pub Arc<dyn LayerFactory>);

impl fmt::Debug for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Layer({})", self.0.name())
    }
}

impl PartialEq for Layer {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for Layer {}

pub mod proxy;
pub mod testing;
pub mod tls;
