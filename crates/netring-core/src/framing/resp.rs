//! RESP requests (the Redis protocol, client side to server): one packet
//! per whole command.
//!
//! A command is either an array of bulk strings (`*2\r\n$3\r\nGET\r\n$1\r\nk\r\n`)
//! or an inline line (`PING\r\n`, anything not starting with `*`). The
//! scanner finds where a command ends, resuming where it stopped when the
//! command spans reads (so a large command is scanned once, not once per
//! read), and enforces the limits before anything is buffered: a declared
//! bulk length above `max_bulk`, a command total above `max_command`, more
//! than [`MAX_ARGS`] arguments, a header line longer than
//! [`MAX_HEADER_LINE`], or an inline line longer than `max_inline`.
//! Protocol errors carry Redis's own texts ("invalid bulk length", ...), so
//! a server can answer `-ERR Protocol error: <text>` as Redis does.
//! [`args`] splits a complete command (as the scanner delimited it) into
//! its arguments.

use super::FrameError;

/// Most arguments in one command (Redis allows 1024 × 1024 too).
pub const MAX_ARGS: usize = 1024 * 1024;
/// Longest `*N` / `$N` header line, CRLF included.
pub const MAX_HEADER_LINE: usize = 24;
/// Default longest inline command: 64 KiB (Redis: PROTO_INLINE_MAX_SIZE).
pub const DEFAULT_MAX_INLINE_BYTES: usize = 64 * 1024;

/// Where the scan of the command in progress stands.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Scan {
    /// Offset (from the command's first byte) where scanning resumes.
    pos: usize,
    /// Arguments still to read; `None` before the `*N` header.
    args_left: Option<usize>,
    /// The length of the bulk string whose body comes next.
    bulk: Option<usize>,
    /// Bytes declared so far (headers and bodies).
    total: usize,
}

/// The limits a scan enforces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Largest bulk string.
    pub max_bulk: usize,
    /// Largest command, headers and bodies.
    pub max_command: usize,
    /// Longest inline line.
    pub max_inline: usize,
}

fn protocol(what: &str) -> FrameError {
    FrameError::Resp(what.to_string())
}

/// Find the end of the command starting at `buf[0]`. `Ok(None)`: more bytes
/// are needed (`st` remembers how far it got); `Ok(Some(end))`: the command
/// is `buf[..end]` (and `st` is reset).
pub fn scan(buf: &[u8], st: &mut Scan, limits: Limits) -> Result<Option<usize>, FrameError> {
    let Limits {
        max_bulk,
        max_command,
        max_inline,
    } = limits;
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'*' {
        // Inline: up to '\n'.
        return match memchr::memchr(b'\n', &buf[st.pos..]) {
            Some(i) if st.pos + i < max_inline => {
                let end = st.pos + i + 1;
                *st = Scan::default();
                Ok(Some(end))
            }
            Some(_) => Err(protocol("too big inline request")),
            None if buf.len() >= max_inline => Err(protocol("too big inline request")),
            None => {
                st.pos = buf.len();
                Ok(None)
            }
        };
    }
    loop {
        match (st.args_left, st.bulk) {
            (None, _) => {
                let Some((n, next)) = header(buf, st.pos, b'*')? else {
                    return Ok(None);
                };
                if n == 0 || n == -1 {
                    // `*0` / `*-1`: an empty command (Redis skips it).
                    *st = Scan::default();
                    return Ok(Some(next));
                }
                if n < 0 || n as u64 > MAX_ARGS as u64 {
                    return Err(protocol("invalid multibulk length"));
                }
                let n = n as usize;
                st.args_left = Some(n);
                st.total = next;
                st.pos = next;
            }
            (Some(0), _) => {
                let end = st.pos;
                *st = Scan::default();
                return Ok(Some(end));
            }
            (Some(_), None) => {
                let Some((len, next)) = header(buf, st.pos, b'$')? else {
                    return Ok(None);
                };
                if len < 0 || len as u64 > max_bulk as u64 {
                    return Err(protocol("invalid bulk length"));
                }
                let len = len as usize;
                let total = st
                    .total
                    .saturating_add(next - st.pos)
                    .saturating_add(len)
                    .saturating_add(2);
                if total > max_command {
                    return Err(FrameError::PacketTooLarge {
                        declared: total as u64,
                        limit: max_command,
                    });
                }
                st.total = total;
                st.bulk = Some(len);
                st.pos = next;
            }
            (Some(k), Some(len)) => {
                let end = st.pos + len + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(protocol("expected CRLF after bulk string"));
                }
                st.pos = end;
                st.bulk = None;
                st.args_left = Some(k - 1);
            }
        }
    }
}

/// Parse a `<kind><integer>\r\n` header at `buf[pos..]`: `Ok(None)` if
/// incomplete; the integer and the offset after the CRLF otherwise.
fn header(buf: &[u8], pos: usize, kind: u8) -> Result<Option<(i64, usize)>, FrameError> {
    let Some(&k) = buf.get(pos) else {
        return Ok(None);
    };
    let invalid = || {
        protocol(if kind == b'$' {
            "invalid bulk length"
        } else {
            "invalid multibulk length"
        })
    };
    if k != kind {
        // Only a bulk header can be the wrong kind (a command starts with '*'
        // or is inline).
        return Err(FrameError::Resp(format!(
            "expected '$', got '{}'",
            char::from(k)
        )));
    }
    // The line, CRLF included, fits in MAX_HEADER_LINE: its CR comes
    // within the first MAX_HEADER_LINE - 1 bytes.
    let window = &buf[pos..buf.len().min(pos + MAX_HEADER_LINE)];
    let cr_zone = &window[..window.len().min(MAX_HEADER_LINE - 1)];
    let Some(cr) = memchr::memchr(b'\r', cr_zone) else {
        if window.len() >= MAX_HEADER_LINE - 1 {
            return Err(invalid());
        }
        return Ok(None);
    };
    let Some(&lf) = window.get(cr + 1) else {
        return Ok(None);
    };
    if lf != b'\n' {
        return Err(invalid());
    }
    let n = std::str::from_utf8(&window[1..cr])
        .ok()
        .and_then(|s| s.parse::<i64>().ok())
        .ok_or_else(invalid)?;
    Ok(Some((n, pos + cr + 2)))
}

/// One command as the scanner delimited it.
#[derive(Debug, PartialEq, Eq)]
pub enum Command<'a> {
    /// An array command's arguments.
    Args(Vec<&'a [u8]>),
    /// An inline command's line, without its line ending.
    Inline(&'a [u8]),
}

/// Split a complete command (one `scan` delimited) into its parts.
pub fn args(cmd: &[u8]) -> Command<'_> {
    if cmd.first() != Some(&b'*') {
        let mut line = cmd;
        if let Some(rest) = line.strip_suffix(b"\n") {
            line = rest;
        }
        if let Some(rest) = line.strip_suffix(b"\r") {
            line = rest;
        }
        return Command::Inline(line);
    }
    let mut out = Vec::new();
    let Some(cr) = memchr::memchr(b'\r', cmd) else {
        return Command::Args(out);
    };
    let n: i64 = std::str::from_utf8(&cmd[1..cr])
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let mut pos = cr + 2;
    for _ in 0..n.max(0) {
        let Some(cr) = memchr::memchr(b'\r', &cmd[pos..]) else {
            break;
        };
        let len: usize = std::str::from_utf8(&cmd[pos + 1..pos + cr])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let start = pos + cr + 2;
        out.push(&cmd[start..start + len]);
        pos = start + len + 2;
    }
    Command::Args(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_bulk: 1 << 16,
        max_command: 1 << 20,
        max_inline: 1024,
    };

    fn whole(buf: &[u8]) -> Result<Option<usize>, FrameError> {
        scan(buf, &mut Scan::default(), LIMITS)
    }

    fn error(buf: &[u8]) -> String {
        match whole(buf) {
            Err(FrameError::Resp(what)) => what,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn finds_array_and_inline_commands_and_splits_them() {
        let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\nva\r\nl\r\nrest";
        assert_eq!(whole(set), Ok(Some(set.len() - 4)));
        assert_eq!(
            args(&set[..set.len() - 4]),
            Command::Args(vec![b"SET".as_slice(), b"k", b"va\r\nl"])
        );
        assert_eq!(whole(b"PING\r\nx"), Ok(Some(6)));
        assert_eq!(args(b"PING\r\n"), Command::Inline(b"PING"));
        assert_eq!(whole(b"*0\r\n"), Ok(Some(4)));
        assert_eq!(args(b"*0\r\n"), Command::Args(vec![]));
    }

    #[test]
    fn every_split_point_resumes_to_the_same_end() {
        let cmd = b"*2\r\n$4\r\nECHO\r\n$10\r\n0123456789\r\n";
        for cut in 0..cmd.len() {
            let mut st = Scan::default();
            assert_eq!(scan(&cmd[..cut], &mut st, LIMITS), Ok(None));
            assert_eq!(scan(cmd, &mut st, LIMITS), Ok(Some(cmd.len())));
            assert_eq!(st, Scan::default());
        }
    }

    #[test]
    fn limits_apply_before_the_body_arrives_with_redis_texts() {
        let small = Limits {
            max_command: 64,
            ..LIMITS
        };
        let mut st = Scan::default();
        assert!(matches!(scan(b"*2\r\n$40\r\n", &mut st, small), Ok(None)));
        assert!(matches!(
            scan(b"*2\r\n$40\r\n", &mut Scan::default(), small).and_then(|_| scan(
                b"*2\r\n$40\r\n0123456789012345678901234567890123456789\r\n$40\r\n",
                &mut Scan::default(),
                small
            )),
            Err(FrameError::PacketTooLarge { .. })
        ));
        assert_eq!(error(b"*1\r\n$99999999\r\n"), "invalid bulk length");
        assert_eq!(error(b"*1\r\n$-1\r\n"), "invalid bulk length");
        assert_eq!(error(b"*2\r\n$3\r\nGET\r\n$x\r\n"), "invalid bulk length");
        assert_eq!(error(b"*99999999999\r\n"), "invalid multibulk length");
        assert_eq!(error(b"*-2\r\n"), "invalid multibulk length");
        assert_eq!(error(b"*x\r\n"), "invalid multibulk length");
        assert_eq!(error(b"*1\r\n+PING\r\n"), "expected '$', got '+'");
        assert_eq!(
            error(b"*1\r\n$3\r\nabcXY"),
            "expected CRLF after bulk string"
        );
        assert_eq!(error(&[b'*'; 40]), "invalid multibulk length");
        assert_eq!(error(&[b'a'; 2000]), "too big inline request");
        assert_eq!(whole(b"*-1\r\n"), Ok(Some(5)));
    }
}
