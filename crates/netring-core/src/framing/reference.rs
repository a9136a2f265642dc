//! A naive reference framer: decodes a whole stream in one pass with the
//! simplest code that states each rule. Tests and the fuzz targets compare
//! [`super::Decoder`] against it (differential testing).

use super::{FrameError, Framing};

/// Every packet the whole `stream` yields under `framing`, and the error
/// that stopped it, if any. For `Raw` the one "packet" is the stream.
pub fn decode_all(framing: &Framing, stream: &[u8]) -> (Vec<Vec<u8>>, Option<FrameError>) {
    let mut out = Vec::new();
    let mut pos = 0;
    match framing {
        Framing::Raw => {
            if !stream.is_empty() {
                out.push(stream.to_vec());
            }
        }
        Framing::Resp(limits) => {
            let limits = *limits;
            // From scratch at every command (the decoder resumes instead).
            while pos < stream.len() {
                let mut st = super::resp::Scan::default();
                match super::resp::scan(&stream[pos..], &mut st, limits) {
                    Ok(Some(end)) => {
                        out.push(stream[pos..pos + end].to_vec());
                        pos += end;
                    }
                    Ok(None) => break,
                    Err(e) => return (out, Some(e)),
                }
            }
        }
        Framing::Exactly(n) => {
            while stream.len() - pos >= *n {
                out.push(stream[pos..pos + n].to_vec());
                pos += n;
            }
        }
        Framing::LengthPrefixed {
            header,
            big_endian,
            includes_header,
            max_packet,
        } => {
            let h = usize::from(*header);
            while stream.len() - pos >= h {
                let mut declared: u64 = 0;
                for i in 0..h {
                    let byte = if *big_endian {
                        stream[pos + i]
                    } else {
                        stream[pos + h - 1 - i]
                    };
                    declared = (declared << 8) | u64::from(byte);
                }
                let body = if *includes_header {
                    match declared.checked_sub(h as u64) {
                        Some(b) => b,
                        None => {
                            return (
                                out,
                                Some(FrameError::HeaderTooShort {
                                    declared,
                                    header: *header,
                                }),
                            )
                        }
                    }
                } else {
                    declared
                };
                if body > *max_packet as u64 {
                    return (
                        out,
                        Some(FrameError::PacketTooLarge {
                            declared,
                            limit: *max_packet,
                        }),
                    );
                }
                let body = body as usize;
                if stream.len() - pos - h < body {
                    break;
                }
                out.push(stream[pos + h..pos + h + body].to_vec());
                pos += h + body;
            }
        }
        Framing::Delimited {
            delimiter,
            max_line,
            strip,
        } => {
            let d = delimiter.len();
            loop {
                let rest = &stream[pos..];
                match rest.windows(d).position(|w| w == delimiter.as_slice()) {
                    Some(i) if i + d <= *max_line => {
                        out.push(rest[..if *strip { i } else { i + d }].to_vec());
                        pos += i + d;
                    }
                    Some(_) => return (out, Some(FrameError::LineTooLong { limit: *max_line })),
                    None if rest.len() >= *max_line => {
                        return (out, Some(FrameError::LineTooLong { limit: *max_line }))
                    }
                    None => break,
                }
            }
        }
    }
    (out, None)
}
