//! Sending a range of a file (`transport.sendfile`), shared by both
//! backends: `sendfile(2)` from the page cache to a non-blocking socket,
//! with a read-and-send fallback where the file's filesystem refuses it.
//!
//! The socket never blocks the IO thread: a full socket is `EAGAIN` and the
//! backend waits for it to be writable (`EPOLLOUT`, or an io_uring poll).
//! The disk can: `sendfile` reads pages that are not cached. To keep that
//! rare, each send asks the kernel to read ahead the next window
//! (`POSIX_FADV_WILLNEED` starts the reads and returns), so while the
//! socket drains one window the next one is on its way into the cache.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};

use rustix::io::Errno;

use super::FileSpan;

/// The most of a file one send moves (the kernel's own limit per call is
/// about 2 GiB; smaller keeps the other connections' turns short).
pub const FILE_WINDOW_BYTES: usize = 1 << 20;

/// The fallback's read size (the most sent per call without `sendfile`).
const FALLBACK_BYTES: usize = 256 * 1024;

fn borrow<'a>(fd: RawFd) -> BorrowedFd<'a> {
    // SAFETY: the socket and the file are owned by the connection that
    // asked for this send, open until its completion is handled.
    unsafe { BorrowedFd::borrow_raw(fd) }
}

/// Send (part of) `span` to `socket` now. `None`: the socket is full, wait
/// until it is writable and call again. `scratch` is the fallback's buffer.
pub(crate) fn send_file_now(
    socket: RawFd,
    span: FileSpan,
    scratch: &mut Vec<u8>,
) -> Option<io::Result<usize>> {
    loop {
        let mut offset = span.offset;
        match rustix::fs::sendfile(borrow(socket), borrow(span.fd), Some(&mut offset), span.len) {
            Ok(0) => return Some(Err(ended_early(span.offset))),
            Ok(n) => {
                read_ahead(span, n);
                return Some(Ok(n));
            }
            Err(Errno::AGAIN) => {
                read_ahead(span, 0);
                return None;
            }
            Err(Errno::INTR) => {}
            Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                return fallback(socket, span, scratch);
            }
            Err(e) => return Some(Err(e.into())),
        }
    }
}

/// The file's filesystem cannot `sendfile`: read a piece, send what the
/// socket takes (the rest is read again next time).
fn fallback(socket: RawFd, span: FileSpan, scratch: &mut Vec<u8>) -> Option<io::Result<usize>> {
    let want = span.len.min(FALLBACK_BYTES);
    scratch.resize(want, 0);
    let n = loop {
        match rustix::io::pread(borrow(span.fd), &mut scratch[..want], span.offset) {
            Ok(0) => return Some(Err(ended_early(span.offset))),
            Ok(n) => break n,
            Err(Errno::INTR) => {}
            Err(e) => return Some(Err(e.into())),
        }
    };
    let flags = rustix::net::SendFlags::NOSIGNAL | rustix::net::SendFlags::DONTWAIT;
    loop {
        match rustix::net::send(borrow(socket), &scratch[..n], flags) {
            Ok(sent) => return Some(Ok(sent)),
            Err(Errno::AGAIN) => return None,
            Err(Errno::INTR) => {}
            Err(e) => return Some(Err(e.into())),
        }
    }
}

/// Start reading the window after what was just sent into the page cache.
fn read_ahead(span: FileSpan, sent: usize) {
    let next = span.offset + sent as u64;
    let len = std::num::NonZeroU64::new(FILE_WINDOW_BYTES as u64);
    // Advice only: an error changes nothing.
    let _ = rustix::fs::fadvise(borrow(span.fd), next, len, rustix::fs::Advice::WillNeed);
}

fn ended_early(at: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("the file ended at byte {at}, inside the range given to sendfile"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    fn file_of(data: &[u8]) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("netring-file-{}", std::process::id()));
        let mut f = std::fs::File::create(&path).expect("temp file");
        f.write_all(data).expect("write");
        let f = std::fs::File::open(&path).expect("reopen");
        std::fs::remove_file(&path).expect("unlink");
        f
    }

    fn drain(peer: &mut UnixStream, n: usize) -> Vec<u8> {
        let mut got = vec![0; n];
        peer.read_exact(&mut got).expect("read");
        got
    }

    #[test]
    fn sendfile_and_its_fallback_send_the_range_until_the_socket_is_full() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        let file = file_of(&data);
        let (sock, mut peer) = UnixStream::pair().expect("socketpair");
        sock.set_nonblocking(true).expect("nonblocking");
        let span = |offset: u64, len: usize| FileSpan {
            fd: file.as_raw_fd(),
            offset,
            len,
        };
        let mut scratch = Vec::new();
        let sent = send_file_now(sock.as_raw_fd(), span(1000, 5000), &mut scratch)
            .expect("not full")
            .expect("sent");
        assert_eq!(drain(&mut peer, sent), data[1000..1000 + sent]);
        // The fallback (a filesystem without sendfile) reads and sends.
        let sent = fallback(sock.as_raw_fd(), span(7, 4000), &mut scratch)
            .expect("not full")
            .expect("sent");
        assert_eq!(drain(&mut peer, sent), data[7..7 + sent]);
        // A full socket: both say "wait until writable".
        let mut total = 0;
        while let Some(r) = send_file_now(sock.as_raw_fd(), span(0, 200_000), &mut scratch) {
            total += r.expect("sent");
            assert!(total < 64 << 20, "the socket never filled");
        }
        assert!(fallback(sock.as_raw_fd(), span(0, 10), &mut scratch).is_none());
        // A range past the file's end is an error, not a silent stop.
        drain(&mut peer, total);
        let err = send_file_now(sock.as_raw_fd(), span(data.len() as u64, 10), &mut scratch)
            .expect("not full")
            .expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
        let err = fallback(sock.as_raw_fd(), span(data.len() as u64, 10), &mut scratch)
            .expect("not full")
            .expect_err("past the end");
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }
}
