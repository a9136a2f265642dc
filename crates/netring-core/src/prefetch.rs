//! Reading file windows into the page cache off the IO threads, so that a
//! `sendfile` on an IO thread never waits for a disk.
//!
//! Before it sends a file window, the core asks [`cached`] whether the
//! window's last byte is in the page cache (a `preadv2(RWF_NOWAIT)` of one
//! byte: it fails with `EAGAIN` instead of reading the disk; the window is
//! read ahead in order, so its last byte cached means all of it). When it is
//! not, the window goes to the engine's prefetch thread, which reads it
//! (waiting for the disk there) and then calls back; meanwhile the
//! connection sends nothing and the IO thread serves the others. One thread
//! per engine, started the first time a window is cold; it ends with the
//! engine.

use std::io::IoSliceMut;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::mpsc;
use std::sync::Mutex;

use rustix::io::{Errno, ReadWriteFlags};

/// The prefetch thread's read size.
const READ_BYTES: usize = 256 * 1024;

/// A window to bring into the page cache, and what to do once it is.
struct Job {
    fd: OwnedFd,
    offset: u64,
    len: usize,
    done: Box<dyn FnOnce() + Send>,
}

/// The engine's prefetch thread (started on first use).
#[derive(Default)]
pub struct Prefetcher {
    tx: Mutex<Option<mpsc::Sender<Job>>>,
}

impl std::fmt::Debug for Prefetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Prefetcher")
    }
}

impl Prefetcher {
    /// Read `len` bytes of `fd` from `offset` into the page cache on the
    /// prefetch thread, then call `done` there. Returns false (nothing
    /// will be called) when the thread cannot be started: send anyway.
    pub fn request(
        &self,
        fd: OwnedFd,
        offset: u64,
        len: usize,
        done: Box<dyn FnOnce() + Send>,
    ) -> bool {
        let mut tx = crate::sync::lock(&self.tx);
        if tx.is_none() {
            let (send, recv) = mpsc::channel::<Job>();
            let spawned = std::thread::Builder::new()
                .name("netring-prefetch".into())
                .spawn(move || {
                    let mut buf = vec![0u8; READ_BYTES];
                    while let Ok(job) = recv.recv() {
                        read_range(job.fd.as_fd(), job.offset, job.len, &mut buf);
                        (job.done)();
                    }
                });
            match spawned {
                Ok(_) => *tx = Some(send),
                Err(e) => {
                    log::warn!(
                        "netring: no prefetch thread ({e}): cold files are read on the IO threads"
                    );
                    return false;
                }
            }
        }
        let job = Job {
            fd,
            offset,
            len,
            done,
        };
        tx.as_ref().is_some_and(|tx| tx.send(job).is_ok())
    }
}

/// Read (and drop) `len` bytes of `fd` from `offset`: they are then in the
/// page cache. Stops early at the file's end or an error (the send that
/// follows reports those).
fn read_range(fd: BorrowedFd<'_>, offset: u64, len: usize, buf: &mut [u8]) {
    let mut done = 0;
    while done < len {
        let want = (len - done).min(buf.len());
        match rustix::io::pread(fd, &mut buf[..want], offset + done as u64) {
            Ok(0) => return,
            Ok(n) => done += n,
            Err(Errno::INTR) => {}
            Err(_) => return,
        }
    }
}

/// Whether byte `at` of `fd` can be read without waiting for a disk (in
/// the page cache, or on a filesystem that cannot tell: then assume so).
pub fn cached(fd: BorrowedFd<'_>, at: u64) -> bool {
    let mut byte = [0u8; 1];
    loop {
        match rustix::io::preadv2(
            fd,
            &mut [IoSliceMut::new(&mut byte)],
            at,
            ReadWriteFlags::NOWAIT,
        ) {
            Err(Errno::AGAIN) => return false,
            Err(Errno::INTR) => {}
            _ => return true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    #[test]
    fn a_window_is_read_then_reported() {
        let path = std::env::temp_dir().join(format!("netring-prefetch-{}", std::process::id()));
        std::fs::File::create(&path)
            .and_then(|mut f| f.write_all(&vec![7u8; 3 * READ_BYTES + 5]))
            .expect("temp file");
        let file = std::fs::File::open(&path).expect("open");
        std::fs::remove_file(&path).expect("unlink");
        assert!(cached(file.as_fd(), 10), "just written: cached");
        let p = Prefetcher::default();
        let (tx, rx) = mpsc::channel();
        let flag = Arc::new(AtomicBool::new(false));
        let seen = flag.clone();
        let fd = OwnedFd::from(file.try_clone().expect("dup"));
        assert!(p.request(
            fd,
            100,
            3 * READ_BYTES,
            Box::new(move || {
                seen.store(true, Ordering::SeqCst);
                tx.send(()).expect("report");
            })
        ));
        rx.recv_timeout(std::time::Duration::from_secs(10))
            .expect("called back");
        assert!(flag.load(Ordering::SeqCst));
    }
}
