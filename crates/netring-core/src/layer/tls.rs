//! TLS in the engine: a stream layer over rustls (server side).
//!
//! Crypto provider: *ring*. It builds here in ~20 s from C and assembly
//! with the compiler CI already has; aws-lc-rs needs cmake and several
//! minutes on two cores, for speed this engine does not need yet (AES-GCM
//! and ChaCha20 on ring run at GB/s per core).
//!
//! Each received chunk goes into rustls (`read_tls`, possibly in several
//! calls when a chunk is larger than rustls takes at once), then
//! `process_new_packets`; the plaintext it yields is exactly
//! `plaintext_bytes_to_read` long, so it is read without zero-filling a
//! scratch buffer. Handshake messages and alerts are taken with
//! `write_tls` after every call. The protocol's writes of one dispatch
//! arrive in one `on_write` (the seam batches them), so they become as few
//! records as their size allows.
//!
//! The peer's `close_notify` ends the plaintext stream: the EOF that
//! follows is an ordinary `eof_received`. An EOF without it is a
//! truncation, and `connection_lost` says so.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::{ServerConfig, ServerConnection};

use super::{LayerError, LayerFactory, LayerOut, StreamLayer};

const NAME: &str = "tls";

/// How long a handshake may take by default (the common servers' 10 s).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// A listener's TLS settings: makes each accepted connection's layer.
pub struct TlsServer {
    config: Arc<ServerConfig>,
    handshake_timeout: Option<Duration>,
}

impl TlsServer {
    /// From a PEM certificate chain (leaf first) and a PEM private key
    /// (PKCS#8, PKCS#1 or SEC1), offering `alpn` protocols in order of
    /// preference. The error says what is wrong with which input.
    pub fn from_pem(cert_chain: &[u8], key: &[u8], alpn: &[Vec<u8>]) -> Result<Self, String> {
        let certs = CertificateDer::pem_slice_iter(cert_chain)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("certificate chain: {e}"))?;
        if certs.is_empty() {
            return Err("certificate chain: no CERTIFICATE block in the PEM data".into());
        }
        let key = PrivateKeyDer::from_pem_slice(key).map_err(|e| format!("private key: {e}"))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("protocol versions: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("certificate and key: {e}"))?;
        config.alpn_protocols = alpn.to_vec();
        Ok(TlsServer {
            config: Arc::new(config),
            handshake_timeout: Some(DEFAULT_HANDSHAKE_TIMEOUT),
        })
    }

    /// Close connections whose handshake has not completed after
    /// `timeout` (`None`: never).
    pub fn with_handshake_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.handshake_timeout = timeout;
        self
    }
}

impl LayerFactory for TlsServer {
    fn new_layer(
        &self,
        _peer: Option<SocketAddr>,
        _local: Option<SocketAddr>,
        _outbound: bool,
    ) -> Box<dyn StreamLayer> {
        Box::new(Tls {
            conn: ServerConnection::new(self.config.clone()).map_err(|e| e.to_string()),
            peer_closed: false,
        })
    }

    fn name(&self) -> &'static str {
        NAME
    }

    fn ready_timeout(&self) -> Option<Duration> {
        self.handshake_timeout
    }
}

/// One connection's TLS state.
struct Tls {
    /// `Err`: rustls refused to start a session (a bad configuration).
    conn: Result<ServerConnection, String>,
    /// The peer's `close_notify` arrived.
    peer_closed: bool,
}

fn error(reason: impl std::fmt::Display) -> LayerError {
    LayerError::new(NAME, reason.to_string())
}

impl Tls {
    /// Whatever rustls has to send (handshake messages, records, alerts).
    fn flush(conn: &mut ServerConnection, out: &mut LayerOut) {
        while conn.wants_write() {
            match conn.write_tls(&mut out.wire) {
                Ok(0) | Err(_) => break, // NOTE: writing to a Vec cannot fail
                Ok(_) => {}
            }
        }
    }
}

impl StreamLayer for Tls {
    fn on_read(&mut self, mut wire: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        let conn = self.conn.as_mut().map_err(|e| error(e.clone()))?;
        while !wire.is_empty() {
            let taken = conn.read_tls(&mut wire).map_err(error)?;
            let state = match conn.process_new_packets() {
                Ok(state) => state,
                Err(e) => {
                    Self::flush(conn, out); // the alert
                    return Err(error(e));
                }
            };
            let n = state.plaintext_bytes_to_read();
            if n > 0 {
                let start = out.plain.len();
                out.plain.resize(start + n, 0);
                conn.reader()
                    .read_exact(&mut out.plain[start..])
                    .map_err(error)?;
            }
            if state.peer_has_closed() && !self.peer_closed {
                self.peer_closed = true;
                out.eof = true;
            }
            if taken == 0 {
                break; // rustls takes no more until it is read (cannot happen: read above)
            }
        }
        Self::flush(conn, out);
        Ok(())
    }

    fn on_write(&mut self, plain: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        let conn = self.conn.as_mut().map_err(|e| error(e.clone()))?;
        // NOTE: rustls takes at most its buffer limit (64 KiB of records
        // not yet written out) per call: encrypt a piece, take the records,
        // and go on, so a write of any size goes through.
        let mut rest = plain;
        while !rest.is_empty() {
            let n = conn.writer().write(rest).map_err(error)?;
            Self::flush(conn, out);
            if n == 0 {
                return Err(error("rustls took no plaintext with its buffer empty"));
            }
            rest = &rest[n..];
        }
        Ok(())
    }

    fn on_eof(&mut self, _out: &mut LayerOut) -> Result<(), LayerError> {
        if self.peer_closed {
            return Ok(());
        }
        Err(error(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the peer closed the connection without close_notify (truncated)",
        )))
    }

    fn on_close(&mut self, out: &mut LayerOut) {
        if let Ok(conn) = self.conn.as_mut() {
            conn.send_close_notify();
            Self::flush(conn, out);
        }
    }

    fn is_ready(&self) -> bool {
        self.conn.as_ref().is_ok_and(|c| !c.is_handshaking())
    }
}
