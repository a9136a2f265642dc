//! A layer for tests of the seam (no layer ships in the engine itself):
//! a toy handshake and a byte transform, enough to exercise everything a
//! TLS or PROXY layer needs.
//!
//! The accepting side waits for a `HELLO\n` line (at most
//! [`HELLO_MAX`] bytes), answers `WELCOME\n` on its own, and is ready from
//! there; the connecting side sends `HELLO\n` when the connection starts
//! and is ready once `WELCOME\n` came back. After the handshake every byte
//! is XORed with [`MASK`] both ways, a masked [`ESC`] byte is sent as
//! `ESC 0`, and our end of the stream is marked by `ESC 1` (sent by
//! `on_close`); an EOF without the peer's end mark is a truncation. Any
//! other byte after `ESC`, or anything else in place of the handshake,
//! closes the connection with a reason. The escape state carries across
//! reads, so the layer sees the wire cut at any point.

use std::net::SocketAddr;

use super::{LayerError, LayerFactory, LayerOut, StreamLayer};

/// What every byte is XORed with after the handshake.
pub const MASK: u8 = 0x20;
/// The handshake line a client sends.
pub const HELLO: &[u8] = b"HELLO\n";
/// The server's answer.
pub const WELCOME: &[u8] = b"WELCOME\n";
/// The escape byte on the wire.
pub const ESC: u8 = 0xFF;
/// Longest handshake line accepted.
pub const HELLO_MAX: usize = 64;

/// Makes [`Toy`] layers.
#[derive(Debug, Default)]
pub struct ToyFactory {
    /// How long the handshake may take (`None`: forever).
    pub ready_timeout: Option<std::time::Duration>,
}

impl LayerFactory for ToyFactory {
    fn new_layer(
        &self,
        _peer: Option<SocketAddr>,
        _local: Option<SocketAddr>,
        outbound: bool,
    ) -> Box<dyn StreamLayer> {
        Box::new(Toy {
            outbound,
            ..Default::default()
        })
    }

    fn name(&self) -> &'static str {
        "toy"
    }

    fn ready_timeout(&self) -> Option<std::time::Duration> {
        self.ready_timeout
    }
}

/// One connection's toy layer.
#[derive(Debug, Default)]
pub struct Toy {
    outbound: bool,
    line: Vec<u8>,
    ready: bool,
    peer_bye: bool,
    /// The last byte read was an `ESC`.
    escaped: bool,
}

/// Encode plaintext for the wire onto `out`.
pub fn encode(plain: &[u8], out: &mut Vec<u8>) {
    for &b in plain {
        let m = b ^ MASK;
        out.push(m);
        if m == ESC {
            out.push(0);
        }
    }
}

/// The end-of-stream mark on the wire.
pub const END: [u8; 2] = [ESC, 1];

impl StreamLayer for Toy {
    fn on_start(&mut self, out: &mut LayerOut) -> Result<(), LayerError> {
        if self.outbound {
            out.wire.extend_from_slice(HELLO);
        }
        Ok(())
    }

    fn on_read(&mut self, mut wire: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        if !self.ready {
            let expected = if self.outbound { WELCOME } else { HELLO };
            let Some(end) = wire.iter().position(|&b| b == b'\n') else {
                self.line.extend_from_slice(wire);
                if self.line.len() > HELLO_MAX {
                    return Err(LayerError::new("toy", "handshake line too long"));
                }
                return Ok(());
            };
            self.line.extend_from_slice(&wire[..=end]);
            wire = &wire[end + 1..];
            if self.line != expected {
                return Err(LayerError::new("toy", "bad handshake"));
            }
            self.line = Vec::new();
            self.ready = true;
            if !self.outbound {
                out.wire.extend_from_slice(WELCOME);
            }
        }
        for &b in wire {
            if self.peer_bye {
                return Err(LayerError::new("toy", "data after the peer's end mark"));
            }
            if std::mem::take(&mut self.escaped) {
                match b {
                    0 => out.plain.push(ESC ^ MASK),
                    1 => self.peer_bye = true,
                    _ => return Err(LayerError::new("toy", "bad escape")),
                }
            } else if b == ESC {
                self.escaped = true;
            } else {
                out.plain.push(b ^ MASK);
            }
        }
        Ok(())
    }

    fn on_write(&mut self, plain: &[u8], out: &mut LayerOut) -> Result<(), LayerError> {
        encode(plain, &mut out.wire);
        Ok(())
    }

    fn on_eof(&mut self, _out: &mut LayerOut) -> Result<(), LayerError> {
        if self.ready && !self.peer_bye {
            return Err(LayerError::new(
                "toy",
                "truncated: EOF without the end mark",
            ));
        }
        Ok(())
    }

    fn on_close(&mut self, out: &mut LayerOut) {
        out.wire.extend_from_slice(&END);
    }

    fn is_ready(&self) -> bool {
        self.ready
    }

    fn buffered(&self) -> usize {
        self.line.capacity()
    }
}
