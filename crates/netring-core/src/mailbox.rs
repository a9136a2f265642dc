//! Commands from other threads to one IO thread: a queue plus an eventfd.
//!
//! The owner keeps a read of the eventfd armed in its ring (or registered in
//! its epoll set). A producer pushes, then writes the eventfd only if no
//! wake-up is pending (`notified`), so a burst of commands costs one wake-up.
//! The owner clears `notified` *before* taking the queue: a command pushed
//! after the take sees the flag clear and signals again, so none is missed.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::ConnOptions;
use crate::conn::ConnId;
use crate::framing::Framing;

/// Something another thread asks an IO thread to do.
#[derive(Debug)]
pub enum Cmd {
    /// Start accepting on a listening socket owned from now on by this thread.
    Listen {
        listener: usize,
        socket: OwnedFd,
        options: Arc<ConnOptions>,
        /// Connection limits, counted across IO threads.
        counts: Option<Arc<crate::limits::ListenerCounts>>,
        /// A socket from outside (perhaps shared with other processes).
        shared: bool,
    },
    /// Stop accepting on a listener and close it (what its queue holds is
    /// accepted first); `done` is set once it is closed and what it last
    /// accepted was delivered.
    Unlisten {
        listener: usize,
        done: Arc<std::sync::atomic::AtomicBool>,
    },
    /// Unlisten and close the listener's connections (abort at `deadline`).
    CloseListener { listener: usize, deadline: Instant },
    /// Connect `socket` to `addr`; report as `Connected`/`ConnectFailed`
    /// with `token`; give up at `deadline`.
    Connect {
        token: u64,
        socket: OwnedFd,
        addr: socket2::SockAddr,
        options: Arc<ConnOptions>,
        deadline: Option<Instant>,
    },
    /// Take ownership of an accepted connection.
    Adopt {
        listener: usize,
        fd: OwnedFd,
        options: Arc<ConnOptions>,
        /// The listener counts it was admitted under.
        counted: crate::limits::Counted,
    },
    /// Nothing to do but run a loop turn (a listener at its limit has room).
    Wake,
    /// Queue bytes on a connection.
    Write { conn: ConnId, data: Vec<u8> },
    /// The file window a connection waited for is in the page cache.
    FileCached { conn: ConnId },
    /// Queue a file range on a connection (see `ConnRef::send_file`).
    SendFile {
        conn: ConnId,
        fd: OwnedFd,
        offset: u64,
        len: u64,
    },
    /// Queue bytes on a connection by reference (see `SendQueue::push_shared`).
    WriteShared {
        conn: ConnId,
        data: Box<dyn crate::conn::sendq::SharedBytes>,
    },
    /// Flush, then close.
    Close { conn: ConnId },
    /// Drop the queue and reset.
    Abort { conn: ConnId },
    /// Flush, then shut down the sending side.
    WriteEof { conn: ConnId },
    /// Stop or restart delivering data.
    SetReading { conn: ConnId, paused: bool },
    /// Change the framing rule from the next byte.
    SetFraming { conn: ConnId, framing: Framing },
    /// Report the connection idle after `timeout` with nothing received.
    SetIdleTimeout {
        conn: ConnId,
        timeout: Option<Duration>,
    },
    /// Start a user timer: first at `at`, then every `interval`.
    AddTimer {
        id: u64,
        at: Instant,
        interval: Option<Duration>,
    },
    /// Cancel a user timer.
    CancelTimer { id: u64 },
    /// Change the write-queue water marks.
    SetWriteLimits {
        conn: ConnId,
        high: usize,
        low: usize,
    },
    /// Stop accepting, close every connection gracefully, abort what is left
    /// at `deadline`, then exit the thread.
    Shutdown { deadline: Instant },
    /// Take ownership of a bound UDP socket; report `EndpointOpened { token }`.
    UdpOpen {
        token: u64,
        socket: OwnedFd,
        max_send_queue: usize,
    },
    /// Queue one datagram (`addr` None: the connected peer).
    UdpSend {
        ep: ConnId,
        data: Vec<u8>,
        addr: Option<SocketAddr>,
    },
    /// Flush queued datagrams, then close the endpoint.
    UdpClose { ep: ConnId },
    /// Drop queued datagrams and close the endpoint.
    UdpAbort { ep: ConnId },
    /// Stop or restart receiving datagrams.
    UdpSetReading { ep: ConnId, paused: bool },
    /// Change the send queue's water marks.
    UdpSetWriteLimits { ep: ConnId, high: usize, low: usize },
}

/// A command queue with an eventfd doorbell.
pub struct Mailbox {
    inner: Mutex<Inner>,
    notified: AtomicBool,
}

struct Inner {
    queue: Vec<Cmd>,
    /// None once the owner has exited: later commands are dropped.
    eventfd: Option<OwnedFd>,
}

impl Mailbox {
    /// A new, empty mailbox.
    pub fn new() -> io::Result<Self> {
        let eventfd = rustix::event::eventfd(
            0,
            rustix::event::EventfdFlags::CLOEXEC | rustix::event::EventfdFlags::NONBLOCK,
        )?;
        Ok(Mailbox {
            inner: Mutex::new(Inner {
                queue: Vec::new(),
                eventfd: Some(eventfd),
            }),
            notified: AtomicBool::new(false),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// The descriptor the owner keeps a read armed on (-1 once closed).
    pub fn fd(&self) -> RawFd {
        self.lock().eventfd.as_ref().map_or(-1, |fd| fd.as_raw_fd())
    }

    /// Queue a command and wake the owner if needed. After [`Mailbox::close`]
    /// the command is dropped (its descriptors, if any, close).
    pub fn push(&self, cmd: Cmd) {
        let mut inner = self.lock();
        let Some(fd) = inner.eventfd.as_ref() else {
            return;
        };
        // NOTE: the write happens under the lock so that `close` cannot
        // close the eventfd (and let its number be reused) in between.
        if !self.notified.swap(true, Ordering::AcqRel) {
            // A full eventfd counter (EAGAIN) still leaves it readable, which
            // is all a wake-up needs; the error is deliberately ignored.
            let _ = rustix::io::write(fd.as_fd(), &1u64.to_ne_bytes());
        }
        inner.queue.push(cmd);
    }

    /// Take every queued command (owner only). `into` is swapped in so its
    /// allocation is reused.
    pub fn take(&self, into: &mut Vec<Cmd>) {
        self.notified.store(false, Ordering::Release);
        std::mem::swap(&mut self.lock().queue, into);
    }

    /// Give back the space a burst grew in the queue, if it is empty (the
    /// owner's trim: `take` swaps allocations, so a large one can sit here
    /// while the owner idles). Returns the bytes freed.
    pub fn shrink(&self) -> usize {
        crate::housekeeping::shrink_vec(&mut self.lock().queue)
    }

    /// The owner has exited: drop queued commands and close the eventfd.
    pub fn close(&self) {
        let mut inner = self.lock();
        inner.eventfd = None;
        inner.queue.clear();
    }
}
