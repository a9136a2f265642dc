//! Framers: pure decoders that cut a byte stream into packets. No IO.
//!
//! A [`Decoder`] holds one connection's framing rule and whatever part of a
//! packet it has seen. [`Decoder::decode`] takes the next received bytes and
//! returns at most **one** packet with the number of bytes it consumed, so a
//! caller that changes the rule between packets ([`Decoder::set_framing`])
//! has the change apply from the very next byte. Bytes the decoder buffered
//! under the old rule are re-framed under the new one.
//!
//! Contract (Twisted's for `dataReceived`): the packets produced do not
//! depend on how the stream is split into `decode` calls, down to one byte at
//! a time. Limits apply before buffering: a length header above
//! `max_packet`, or `max_line` bytes without a delimiter, is an error at
//! once, and a declared body is never allocated ahead of the bytes that
//! carry it (the reassembly buffer grows only as data arrives).
//!
//! A packet lying entirely inside one input is returned borrowed (the only
//! copy is the caller's); a packet spanning inputs is reassembled into an
//! owned buffer.

mod decoder;
pub mod reference;
pub mod resp;

pub use decoder::{Decoder, Packet, PacketAlloc, PacketBuf, BUILD_MIN_BYTES};

use std::fmt;

use crate::error::ConfigError;

/// Default largest length-prefixed packet: 1 MiB.
///
/// Twisted's `Int32StringReceiver` allows 99,999 bytes, which is too small
/// for a 2020s RPC payload; 1 MiB keeps what 10,000 slow peers can make the
/// server buffer at 10 GiB worst case *only if* each really sends its body
/// (nothing is allocated ahead of the bytes), and large-packet servers raise it.
pub const DEFAULT_MAX_PACKET_BYTES: usize = 1 << 20;
/// Default longest line, delimiter included: 16 KiB (Twisted's `LineReceiver`).
pub const DEFAULT_MAX_LINE_BYTES: usize = 16 * 1024;
/// Longest delimiter accepted.
pub const MAX_DELIMITER_BYTES: usize = 16;
/// Largest `max_packet` accepted: 1 GiB.
pub const MAX_PACKET_LIMIT_BYTES: usize = 1 << 30;

/// `Framing::Raw` as a `'static` reference (for holders that store only
/// the other rules and answer Raw when they have none).
pub static RAW: Framing = Framing::Raw;

/// How a connection's byte stream is cut into packets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum Framing {
    /// No framing: each received chunk is delivered as it comes.
    #[default]
    Raw,
    /// A `header`-byte length (1, 2, 4 or 8), then that many bytes.
    LengthPrefixed {
        /// Header size in bytes: 1, 2, 4 or 8.
        header: u8,
        /// Network byte order (true) or little-endian.
        big_endian: bool,
        /// The length counts the header too.
        includes_header: bool,
        /// Largest body accepted.
        max_packet: usize,
    },
    /// Lines ending with `delimiter` (1 to 16 bytes).
    Delimited {
        /// The terminator.
        delimiter: Vec<u8>,
        /// Longest line accepted, delimiter included.
        max_line: usize,
        /// Deliver lines without the delimiter.
        strip: bool,
    },
    /// Packets of exactly this many bytes.
    Exactly(usize),
    /// Redis protocol requests: one packet per whole command (an array of
    /// bulk strings, or an inline line); see [`resp`].
    Resp(resp::Limits),
}

impl Framing {
    /// Check the parameters; the error names the argument.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Framing::Raw => Ok(()),
            Framing::LengthPrefixed {
                header, max_packet, ..
            } => {
                if !matches!(header, 1 | 2 | 4 | 8) {
                    return Err(ConfigError::new(
                        "header_size",
                        format!("must be 1, 2, 4 or 8, not {header}"),
                    ));
                }
                if *max_packet > MAX_PACKET_LIMIT_BYTES {
                    return Err(ConfigError::new(
                        "max_packet",
                        format!("must be at most {MAX_PACKET_LIMIT_BYTES}, not {max_packet}"),
                    ));
                }
                Ok(())
            }
            Framing::Delimited {
                delimiter,
                max_line,
                ..
            } => {
                if delimiter.is_empty() || delimiter.len() > MAX_DELIMITER_BYTES {
                    return Err(ConfigError::new(
                        "delimiter",
                        format!(
                            "must be 1 to {MAX_DELIMITER_BYTES} bytes, not {}",
                            delimiter.len()
                        ),
                    ));
                }
                if *max_line < delimiter.len() || *max_line > MAX_PACKET_LIMIT_BYTES {
                    return Err(ConfigError::new(
                        "max_line",
                        format!(
                            "must be between the delimiter's length and {MAX_PACKET_LIMIT_BYTES}, not {max_line}"
                        ),
                    ));
                }
                Ok(())
            }
            Framing::Resp(resp::Limits {
                max_bulk,
                max_command,
                max_inline,
            }) => {
                if *max_bulk > MAX_PACKET_LIMIT_BYTES {
                    return Err(ConfigError::new(
                        "max_bulk",
                        format!("must be at most {MAX_PACKET_LIMIT_BYTES}, not {max_bulk}"),
                    ));
                }
                if *max_command < 16 || *max_command > MAX_PACKET_LIMIT_BYTES {
                    return Err(ConfigError::new(
                        "max_command",
                        format!(
                            "must be between 16 and {MAX_PACKET_LIMIT_BYTES}, not {max_command}"
                        ),
                    ));
                }
                if *max_inline < 16 || *max_inline > MAX_PACKET_LIMIT_BYTES {
                    return Err(ConfigError::new(
                        "max_inline",
                        format!(
                            "must be between 16 and {MAX_PACKET_LIMIT_BYTES}, not {max_inline}"
                        ),
                    ));
                }
                Ok(())
            }
            Framing::Exactly(n) => {
                if *n == 0 || *n > MAX_PACKET_LIMIT_BYTES {
                    return Err(ConfigError::new(
                        "n",
                        format!("must be between 1 and {MAX_PACKET_LIMIT_BYTES}, not {n}"),
                    ));
                }
                Ok(())
            }
        }
    }

    /// Frame `payload` for sending under this rule: the length header before
    /// it, or the delimiter after it. Raw and Exactly send it as is.
    pub fn encode(&self, payload: &[u8], out: &mut Vec<u8>) -> Result<(), EncodeError> {
        self.encode_header(payload.len(), out)?;
        out.extend_from_slice(payload);
        if let Framing::Delimited { delimiter, .. } = self {
            out.extend_from_slice(delimiter);
        }
        Ok(())
    }

    /// Write the header of a `len`-byte payload into `out` and return its
    /// length (0 unless LengthPrefixed): no allocation.
    pub fn encode_header_into(&self, len: usize, out: &mut [u8; 8]) -> Result<usize, EncodeError> {
        if let Framing::LengthPrefixed {
            header,
            big_endian,
            includes_header,
            ..
        } = self
        {
            let h = usize::from(*header);
            let total = len as u64 + if *includes_header { h as u64 } else { 0 };
            if h < 8 && total >> (8 * h) != 0 {
                return Err(EncodeError::TooLong {
                    len,
                    header: *header,
                });
            }
            if *big_endian {
                out[..h].copy_from_slice(&total.to_be_bytes()[8 - h..]);
            } else {
                out[..h].copy_from_slice(&total.to_le_bytes()[..h]);
            }
            return Ok(h);
        }
        Ok(0)
    }

    /// Append what goes before a `len`-byte payload: the length header for
    /// LengthPrefixed, nothing otherwise.
    pub fn encode_header(&self, len: usize, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let mut header = [0u8; 8];
        let h = self.encode_header_into(len, &mut header)?;
        out.extend_from_slice(&header[..h]);
        Ok(())
    }
}

/// A payload that cannot be framed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EncodeError {
    /// The length does not fit the header.
    TooLong { len: usize, header: u8 },
}

impl fmt::Display for EncodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EncodeError::TooLong { len, header } => {
                write!(
                    f,
                    "a {len}-byte packet does not fit a {header}-byte length header"
                )
            }
        }
    }
}

/// Why a peer's stream broke the framing rule. The connection is closed
/// with this reason; nothing else is affected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FrameError {
    /// A length header declared more than `max_packet`.
    PacketTooLarge { declared: u64, limit: usize },
    /// `max_line` bytes arrived without a delimiter.
    LineTooLong { limit: usize },
    /// A header that counts itself declared less than its own size.
    HeaderTooShort { declared: u64, header: u8 },
    /// A RESP request broke the protocol (Redis's text for the error).
    Resp(String),
}

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FrameError::PacketTooLarge { declared, limit } => write!(
                f,
                "length header declares {declared} bytes, above max_packet={limit}"
            ),
            FrameError::LineTooLong { limit } => {
                write!(f, "no delimiter within max_line={limit} bytes")
            }
            FrameError::HeaderTooShort { declared, header } => write!(
                f,
                "length header declares {declared} bytes, less than its own {header} bytes"
            ),
            FrameError::Resp(what) => write!(f, "Protocol error: {what}"),
        }
    }
}

impl std::error::Error for FrameError {}

#[cfg(test)]
mod tests;
