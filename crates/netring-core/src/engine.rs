//! An engine: a pool of IO threads, their mailboxes, listeners and counters.
//!
//! [`Engine::start`] spawns the threads; each creates its own driver (ring or
//! epoll set) on itself and reports readiness, so a backend that cannot run
//! fails `start` instead of failing later. [`Engine::listen`] binds a socket
//! here (so errors surface to the caller) and hands it to one IO thread,
//! which accepts and spreads connections round-robin over all threads.
//! [`ConnRef`] is the handle the user keeps for one connection.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Backend, ConnOptions, EngineConfig, ListenConfig};
use crate::error::Error;
use crate::io_thread::{Hosted, IoLoop};
use crate::mailbox::Cmd;
use crate::shared::Shared;
use crate::stats::{StatsSnapshot, TimesSnapshot};

thread_local! {
    /// The engine whose IO thread this is (0 on other threads).
    static IO_THREAD_OF: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// A running pool of IO threads.
pub struct Engine {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    config: EngineConfig,
    /// A hosted engine ([`Engine::start_hosted`]) not shut down yet.
    hosted: std::sync::atomic::AtomicBool,
}

/// What the thread factory receives: the loop to run, on the new thread.
pub type ThreadMain = Box<dyn FnOnce(IoLoop) + Send>;

impl Engine {
    /// Start `config.io_threads` IO threads. `run_thread(index, io_loop)` is
    /// called on each new thread and must call `io_loop.run(&mut handler)`;
    /// this is where the Python bindings attach the thread to Python.
    pub fn start<F>(config: EngineConfig, run_thread: F) -> Result<Engine, Error>
    where
        F: Fn(u16, IoLoop) + Send + Sync + 'static,
    {
        config.validate()?;
        crate::housekeeping::tune_allocator();
        let selected = crate::driver::choose(config.backend)?;
        let backend = selected.backend;
        let mut shared = Shared::new(
            backend,
            selected.fallback_reason,
            config.io_threads,
            config.max_buffer_memory,
        )?;
        shared.packet_alloc = config.packet_alloc.clone();
        shared.zerocopy_threshold = config.zerocopy_threshold;
        let shared = Arc::new(shared);
        let run_thread = Arc::new(run_thread);
        let (ready_tx, ready_rx) = mpsc::channel::<Result<(), String>>();
        let mut threads = Vec::new();
        for index in 0..config.io_threads {
            let index = index as u16;
            let io_loop = IoLoop::new(shared.clone(), index, config.clone(), ready_tx.clone());
            let run_thread = run_thread.clone();
            let engine_id = shared.id;
            let spawned = std::thread::Builder::new()
                .name(format!("netring-io-{index}"))
                .spawn(move || {
                    IO_THREAD_OF.with(|c| c.set(engine_id));
                    let shared = io_loop.shared().clone();
                    // NOTE: a panic here is a bug in the engine or the
                    // handler's Rust side; the thread's connections are gone
                    // with it. Say so (with the thread's index) and shut the
                    // rest down, instead of leaving a pool with a dead thread
                    // that other threads still hand connections to.
                    let run = std::panic::AssertUnwindSafe(|| run_thread(index, io_loop));
                    if let Err(panic) = std::panic::catch_unwind(run) {
                        let why = panic
                            .downcast_ref::<&str>()
                            .map(|s| s.to_string())
                            .or_else(|| panic.downcast_ref::<String>().cloned())
                            .unwrap_or_else(|| "(no message)".into());
                        log::error!(
                            "netring: IO thread {index} panicked: {why}; shutting the engine down"
                        );
                        shared.fail(index, format!("IO thread {index} panicked: {why}"));
                    }
                });
            match spawned {
                Ok(handle) => threads.push(handle),
                Err(e) => {
                    Self::stop_threads(&shared, threads, Instant::now());
                    return Err(Error::Io(e));
                }
            }
        }
        drop(ready_tx);
        let mut failure = None;
        for _ in 0..config.io_threads {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(why)) => failure = Some(why),
                Err(_) => failure = Some("an IO thread exited during start-up".to_string()),
            }
        }
        if let Some(why) = failure {
            Self::stop_threads(&shared, threads, Instant::now());
            return Err(Error::BackendUnavailable(why));
        }
        Ok(Engine {
            shared,
            threads: Mutex::new(threads),
            config,
            hosted: false.into(),
        })
    }

    /// An engine whose one IO thread is the caller's: no thread is
    /// started; the returned [`Hosted`] (made here, on the calling thread,
    /// which must be the one that drives it) runs its turns when its owner
    /// says so (an asyncio loop watching [`Hosted::fd`]). `io_threads` must
    /// be 1. [`Engine::shutdown`] starts the shutdown and returns; the owner
    /// drives [`Hosted::run_ready`] until it returns false.
    pub fn start_hosted(config: EngineConfig) -> Result<(Engine, Hosted), Error> {
        if config.io_threads != 1 {
            return Err(Error::Config(crate::error::ConfigError::new(
                "io_threads",
                format!("a hosted engine has exactly one, not {}", config.io_threads),
            )));
        }
        config.validate()?;
        crate::housekeeping::tune_allocator();
        let selected = crate::driver::choose(config.backend)?;
        let mut shared = Shared::new(
            selected.backend,
            selected.fallback_reason,
            1,
            config.max_buffer_memory,
        )?;
        shared.packet_alloc = config.packet_alloc.clone();
        shared.zerocopy_threshold = config.zerocopy_threshold;
        let shared = Arc::new(shared);
        let hosted = Hosted::new(shared.clone(), &config).map_err(Error::BackendUnavailable)?;
        let engine = Engine {
            shared,
            threads: Mutex::new(Vec::new()),
            config,
            hosted: true.into(),
        };
        Ok((engine, hosted))
    }

    fn stop_threads(shared: &Arc<Shared>, threads: Vec<JoinHandle<()>>, deadline: Instant) {
        for mb in &shared.mailboxes {
            mb.push(Cmd::Shutdown { deadline });
        }
        if IO_THREAD_OF.with(|c| c.get()) == shared.id {
            // NOTE: called from a callback on one of our own IO threads, which
            // cannot join itself: the threads stop on their own (this one
            // after its callback returns) and a reaper joins them.
            let shared = shared.clone();
            let _ = std::thread::Builder::new()
                .name("netring-reaper".into())
                .spawn(move || Self::join_all(&shared, threads));
            return;
        }
        Self::join_all(shared, threads);
    }

    fn join_all(shared: &Shared, threads: Vec<JoinHandle<()>>) {
        for t in threads {
            let _ = t.join();
        }
        for mb in &shared.mailboxes {
            mb.close();
        }
    }

    /// Bytes per receive buffer.
    pub fn buffer_size(&self) -> usize {
        self.config.buffer_size
    }

    /// The backend the threads run on.
    pub fn backend(&self) -> Backend {
        self.shared.backend
    }

    /// Why `auto` did not pick io_uring, if it fell back.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.shared.fallback_reason.as_deref()
    }

    /// Number of IO threads.
    pub fn io_threads(&self) -> usize {
        self.config.io_threads
    }

    /// Bind and listen; connections start arriving as `Opened` events with
    /// the returned listener id. Returns (listener id, bound address).
    pub fn listen(&self, cfg: &ListenConfig) -> Result<(usize, SocketAddr), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let socket = Socket::new(
            Domain::for_address(cfg.addr),
            Type::STREAM,
            Some(Protocol::TCP),
        )?;
        socket.set_reuse_address(true)?;
        if cfg.reuse_port {
            socket.set_reuse_port(true)?;
        }
        if cfg.addr.is_ipv6() {
            // NOTE: `::` is dual-stack (IPv4 clients arrive as ::ffff:a.b.c.d,
            // as asyncio reports them); a specific IPv6 address is IPv6 only.
            socket.set_only_v6(!cfg.addr.ip().is_unspecified())?;
        }
        socket.bind(&cfg.addr.into())?;
        socket.listen(cfg.backlog)?;
        let (listener, local) = self.serve_socket(socket, cfg, false)?;
        let local = local.ok_or_else(|| Error::Io(std::io::Error::other("no IP address")))?;
        Ok((listener, local))
    }

    /// Serve connections from `socket`, an already-bound stream socket —
    /// TCP or a Unix domain socket — made elsewhere (systemd socket
    /// activation, a supervisor, `Server(sock=)`, `Server(path=)`); it is
    /// put in listening state with `cfg.backlog` if it is not yet.
    /// `cfg.addr` and `cfg.reuse_port` are not used. The engine owns the
    /// descriptor from here (it closes it with the listener). Returns the
    /// listener id and its IP address (`None` for a Unix socket).
    pub fn listen_socket(
        &self,
        socket: std::os::fd::OwnedFd,
        cfg: &ListenConfig,
    ) -> Result<(usize, Option<SocketAddr>), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let socket = Socket::from(socket);
        if socket.r#type()? != Type::STREAM {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "not a stream (TCP) socket",
            )));
        }
        if !socket.is_listener()? {
            socket.listen(cfg.backlog)?;
        }
        // NOTE: perhaps shared with other processes (a supervisor's or
        // systemd's socket): accepted one connection at a time, so that
        // every process sharing it gets its turn.
        self.serve_socket(socket, cfg, true)
    }

    fn serve_socket(
        &self,
        socket: Socket,
        cfg: &ListenConfig,
        shared: bool,
    ) -> Result<(usize, Option<SocketAddr>), Error> {
        socket.set_nonblocking(true)?;
        let local = socket.local_addr()?.as_socket();
        cfg.conn.framing.validate()?;
        let listener = self.shared.next_listener.fetch_add(1, Ordering::Relaxed);
        let owner = listener % self.shared.mailboxes.len();
        let limits = &cfg.limits;
        let counts = (limits.max_connections.is_some()
            || limits.max_connections_per_ip.is_some()
            || limits.max_unready.is_some())
        .then(|| {
            Arc::new(crate::limits::ListenerCounts::new(
                limits.clone(),
                owner as u16,
            ))
        });
        self.shared.mailboxes[owner].push(Cmd::Listen {
            listener,
            socket: socket.into(),
            options: Arc::new(cfg.conn.clone()),
            counts,
            shared,
        });
        Ok((listener, local))
    }

    /// A fresh token for [`Engine::connect`] (allocate it first so the
    /// caller can register what the token means before the IO thread
    /// reports on it).
    pub fn connect_token(&self) -> u64 {
        self.shared.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Open an outbound TCP connection to `addr` (optionally from
    /// `local_addr`) on one of the IO threads, asynchronously. Its outcome
    /// arrives as `Event::Connected { token, .. }` (then it behaves exactly
    /// as an accepted connection, with `options`) or
    /// `Event::ConnectFailed { token, error }`; `timeout` gives up with
    /// `ETIMEDOUT`. Errors creating or binding the socket return here.
    pub fn connect(
        &self,
        token: u64,
        addr: SocketAddr,
        local_addr: Option<SocketAddr>,
        options: ConnOptions,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        options.framing.validate()?;
        let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
        socket.set_nonblocking(true)?;
        if let Some(local) = local_addr {
            socket.set_reuse_address(true)?;
            socket.bind(&local.into())?;
        }
        self.start_connect(token, socket, addr.into(), options, timeout);
        Ok(())
    }

    /// As [`Engine::connect`], to the Unix domain stream socket at `path`
    /// (a filesystem path, or an abstract name: a path starting with a NUL
    /// byte).
    pub fn connect_unix(
        &self,
        token: u64,
        path: &std::path::Path,
        options: ConnOptions,
        timeout: Option<Duration>,
    ) -> Result<(), Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        options.framing.validate()?;
        let addr = unix_addr(path)?;
        let socket = Socket::new(Domain::UNIX, Type::STREAM, None)?;
        socket.set_nonblocking(true)?;
        self.start_connect(token, socket, addr, options, timeout);
        Ok(())
    }

    fn start_connect(
        &self,
        token: u64,
        socket: Socket,
        addr: socket2::SockAddr,
        options: ConnOptions,
        timeout: Option<Duration>,
    ) {
        let target = self.shared.next_target() % self.shared.mailboxes.len();
        self.shared.mailboxes[target].push(Cmd::Connect {
            token,
            socket: socket.into(),
            addr,
            options: Arc::new(options),
            deadline: timeout.map(|t| Instant::now() + t),
        });
    }

    /// Open a UDP endpoint: the socket is created, configured and bound
    /// here (errors return here), then handed to one IO thread, which
    /// reports `Event::EndpointOpened { token, .. }` (or, if the engine is
    /// shutting down, `Event::ConnectFailed { token, .. }`). Returns the
    /// bound address.
    pub fn udp_open(&self, token: u64, cfg: &crate::udp::UdpConfig) -> Result<SocketAddr, Error> {
        if self.is_closed() {
            return Err(Error::Closed);
        }
        let socket = Socket::new(
            Domain::for_address(cfg.local),
            Type::DGRAM.nonblocking().cloexec(),
            Some(Protocol::UDP),
        )?;
        if cfg.reuse_port {
            socket.set_reuse_address(true)?;
            socket.set_reuse_port(true)?;
        }
        if cfg.broadcast {
            socket.set_broadcast(true)?;
        }
        if cfg.local.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        socket.bind(&cfg.local.into())?;
        for (group, iface) in &cfg.multicast_groups {
            match (group, iface) {
                (std::net::IpAddr::V4(g), None) => {
                    socket.join_multicast_v4(g, &std::net::Ipv4Addr::UNSPECIFIED)?
                }
                (std::net::IpAddr::V4(g), Some(std::net::IpAddr::V4(i))) => {
                    socket.join_multicast_v4(g, i)?
                }
                (std::net::IpAddr::V6(g), None) => socket.join_multicast_v6(g, 0)?,
                _ => return Err(Error::Io(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "multicast: give an IPv4 interface address for an IPv4 group, none for IPv6",
                ))),
            }
        }
        if let Some(on) = cfg.multicast_loop {
            if cfg.local.is_ipv6() {
                socket.set_multicast_loop_v6(on)?;
            } else {
                socket.set_multicast_loop_v4(on)?;
            }
        }
        if let Some(ttl) = cfg.multicast_ttl {
            if cfg.local.is_ipv6() {
                socket.set_multicast_hops_v6(ttl)?;
            } else {
                socket.set_multicast_ttl_v4(ttl)?;
            }
        }
        if let Some(remote) = cfg.remote {
            socket.connect(&remote.into())?;
        }
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| Error::Io(std::io::Error::other("endpoint has no IP address")))?;
        let target = self.shared.next_target() % self.shared.mailboxes.len();
        self.shared.mailboxes[target].push(Cmd::UdpOpen {
            token,
            socket: socket.into(),
            max_send_queue: cfg.max_send_queue,
        });
        Ok(local)
    }

    /// A fresh timer id for [`Engine::start_timer`].
    pub fn timer_id(&self) -> u64 {
        self.shared.next_token.fetch_add(1, Ordering::Relaxed)
    }

    /// Run timer `id` on one IO thread: first at `at`, then every
    /// `interval` if given. Its `Event::Timer { id }` is delivered there.
    pub fn start_timer(&self, id: u64, at: Instant, interval: Option<Duration>) {
        self.shared.mailboxes[(id as usize) % self.shared.mailboxes.len()].push(Cmd::AddTimer {
            id,
            at,
            interval,
        });
    }

    /// Cancel a timer (no-op if it already fired).
    pub fn cancel_timer(&self, id: u64) {
        self.shared.mailboxes[(id as usize) % self.shared.mailboxes.len()]
            .push(Cmd::CancelTimer { id });
    }

    /// Stop accepting on `listener` and close its connections gracefully,
    /// aborting those still open after `grace`. Connections of other
    /// listeners on this engine are not touched. Does not wait.
    pub fn close_listener(&self, listener: usize, grace: Duration) {
        let deadline = Instant::now() + grace;
        for mb in &self.shared.mailboxes {
            mb.push(Cmd::CloseListener { listener, deadline });
        }
    }

    /// Stop accepting on `listener`: the connections already in its accept
    /// queue are accepted and served (on the listener's thread; not for a
    /// listener with connection limits), then its socket closes (open
    /// connections stay). On a socket other processes accept from too
    /// (systemd's, shared by worker processes) nothing queued is left
    /// without a wake-up: see `core/listen.rs`. A later `close_listener` or
    /// shutdown opens nothing more.
    ///
    /// Returns a flag set once the socket is closed and the dispatch that
    /// delivers the opening of what it accepted last is over (`Opened`, or
    /// the start of a layer's handshake); it stays unset if the engine shuts
    /// down first.
    pub fn unlisten(&self, listener: usize) -> Arc<std::sync::atomic::AtomicBool> {
        let owner = listener % self.shared.mailboxes.len();
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        self.shared.mailboxes[owner].push(Cmd::Unlisten {
            listener,
            done: done.clone(),
        });
        done
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.shared.stats.snapshot();
        s.buffer_memory = self.shared.memory.used() as u64;
        s
    }

    /// The IO threads' turn and callback time histograms, summed.
    pub fn times(&self) -> TimesSnapshot {
        TimesSnapshot::of(&self.shared.times)
    }

    /// Stop accepting, close every connection gracefully (flushing what was
    /// written), abort what is left after `grace`, wait for every completion
    /// and join the threads. Idempotent. Called from a callback on one of
    /// this engine's IO threads, it starts the shutdown and returns at once.
    pub fn shutdown(&self, grace: Duration) {
        if self.hosted.swap(false, Ordering::AcqRel) {
            // NOTE: the owner's turns carry it out (and close nothing here:
            // the mailbox doorbell must ring once more).
            self.shared.mailboxes[0].push(Cmd::Shutdown {
                deadline: Instant::now() + grace,
            });
            return;
        }
        let threads = std::mem::take(&mut *crate::sync::lock(&self.threads));
        if threads.is_empty() {
            return;
        }
        Self::stop_threads(&self.shared, threads, Instant::now() + grace);
    }

    /// Why the engine stopped on its own (an IO thread panicked), if it
    /// did: the other threads are shutting down; `shutdown` still joins them.
    pub fn failure(&self) -> Option<String> {
        crate::sync::lock(&self.shared.failure).clone()
    }

    /// Whether `shutdown` has run.
    pub fn is_closed(&self) -> bool {
        !self.hosted.load(Ordering::Acquire) && crate::sync::lock(&self.threads).is_empty()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

/// The address of the Unix socket at `path`; a path that starts with a NUL
/// byte is an abstract name (Linux), as socket2 reads it.
fn unix_addr(path: &std::path::Path) -> Result<socket2::SockAddr, Error> {
    Ok(socket2::SockAddr::unix(path)?)
}
