//! An engine: a pool of IO threads, their mailboxes, listeners and counters.
//!
//! [`Engine::start`] spawns the threads; each creates its own driver (ring or
//! epoll set) on itself and reports readiness, so a backend that cannot run
//! fails `start` instead of failing later. [`Engine::listen`] binds a socket
//! here (so errors surface to the caller) and hands it to one IO thread,
//! which accepts and spreads connections round-robin over all threads.
//! [`ConnRef`] is the handle the user keeps for one connection.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

use crate::config::{Backend, ConnOptions, EngineConfig, ListenConfig};
use crate::conn::{ConnId, ConnShared};
use crate::core::Written;
use crate::error::Error;
use crate::event::with_active;
use crate::framing::{EncodeError, Framing};
use crate::io_thread::IoLoop;
use crate::mailbox::{Cmd, Mailbox};
use crate::stats::{Stats, StatsSnapshot};

static NEXT_ENGINE_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// The engine whose IO thread this is (0 on other threads).
    static IO_THREAD_OF: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// State shared by an engine's threads and its handles.
pub struct Shared {
    pub(crate) id: u64,
    pub(crate) backend: Backend,
    pub(crate) fallback_reason: Option<String>,
    pub(crate) mailboxes: Vec<Mailbox>,
    pub(crate) stats: Stats,
    round_robin: AtomicUsize,
    next_listener: AtomicUsize,
    next_timer: AtomicU64,
    /// Bytes buffered for connections (see `EngineConfig::max_buffer_memory`).
    pub(crate) memory: crate::memory::Memory,
}

impl Shared {
    pub(crate) fn next_target(&self) -> usize {
        self.round_robin.fetch_add(1, Ordering::Relaxed)
    }
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// A running pool of IO threads.
pub struct Engine {
    shared: Arc<Shared>,
    threads: Mutex<Vec<JoinHandle<()>>>,
    config: EngineConfig,
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
        let selected = crate::driver::choose(config.backend)?;
        let backend = selected.backend;
        let mailboxes = (0..config.io_threads)
            .map(|_| Mailbox::new())
            .collect::<Result<Vec<_>, _>>()?;
        let shared = Arc::new(Shared {
            id: NEXT_ENGINE_ID.fetch_add(1, Ordering::Relaxed),
            backend,
            fallback_reason: selected.fallback_reason,
            mailboxes,
            stats: Stats::default(),
            round_robin: AtomicUsize::new(0),
            next_listener: AtomicUsize::new(0),
            next_timer: AtomicU64::new(1),
            memory: crate::memory::Memory::new(config.max_buffer_memory),
        });
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
                    run_thread(index, io_loop)
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
        })
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
        if self
            .threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
        {
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
            socket.set_only_v6(true)?;
        }
        socket.bind(&cfg.addr.into())?;
        socket.listen(cfg.backlog)?;
        socket.set_nonblocking(true)?;
        let local = socket
            .local_addr()?
            .as_socket()
            .ok_or_else(|| Error::Io(std::io::Error::other("listener has no IP address")))?;
        cfg.conn.framing.validate()?;
        let listener = self.shared.next_listener.fetch_add(1, Ordering::Relaxed);
        let owner = listener % self.shared.mailboxes.len();
        let limits = &cfg.limits;
        let counts = (limits.max_connections.is_some() || limits.max_connections_per_ip.is_some())
            .then(|| {
                Arc::new(crate::limits::ListenerCounts::new(
                    limits.clone(),
                    owner as u16,
                ))
            });
        self.shared.mailboxes[owner].push(Cmd::Listen {
            listener,
            socket: socket.into(),
            local,
            options: Arc::new(cfg.conn.clone()),
            counts,
        });
        Ok((listener, local))
    }

    /// A fresh token for [`Engine::connect`] (allocate it first so the
    /// caller can register what the token means before the IO thread
    /// reports on it).
    pub fn connect_token(&self) -> u64 {
        self.shared.next_timer.fetch_add(1, Ordering::Relaxed)
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
        let target = self.shared.next_target() % self.shared.mailboxes.len();
        self.shared.mailboxes[target].push(Cmd::Connect {
            token,
            socket: socket.into(),
            addr,
            options: Arc::new(options),
            deadline: timeout.map(|t| Instant::now() + t),
        });
        Ok(())
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
        self.shared.next_timer.fetch_add(1, Ordering::Relaxed)
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

    /// Stop accepting on `listener` (its socket closes; open connections stay).
    pub fn unlisten(&self, listener: usize) {
        let owner = listener % self.shared.mailboxes.len();
        self.shared.mailboxes[owner].push(Cmd::Unlisten { listener });
    }

    /// Counters.
    pub fn stats(&self) -> StatsSnapshot {
        let mut s = self.shared.stats.snapshot();
        s.buffer_memory = self.shared.memory.used() as u64;
        s
    }

    /// Stop accepting, close every connection gracefully (flushing what was
    /// written), abort what is left after `grace`, wait for every completion
    /// and join the threads. Idempotent. Called from a callback on one of
    /// this engine's IO threads, it starts the shutdown and returns at once.
    pub fn shutdown(&self, grace: Duration) {
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|e| e.into_inner()));
        if threads.is_empty() {
            return;
        }
        Self::stop_threads(&self.shared, threads, Instant::now() + grace);
    }

    /// Whether `shutdown` has run.
    pub fn is_closed(&self) -> bool {
        self.threads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_empty()
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.shutdown(Duration::ZERO);
    }
}

/// The user's handle on one connection; usable from any thread.
///
/// On the connection's own IO thread, during a dispatch, operations apply
/// at once; from anywhere else they travel through the owner's mailbox, in
/// order. Once the connection is gone every operation is a no-op: the id's
/// generation no longer matches, even if the slot or descriptor is reused.
#[derive(Clone, Debug)]
pub struct ConnRef {
    id: ConnId,
    engine: Arc<Shared>,
    shared: Arc<ConnShared>,
}

impl ConnRef {
    pub(crate) fn new(id: ConnId, engine: Arc<Shared>, shared: Arc<ConnShared>) -> Self {
        ConnRef { id, engine, shared }
    }

    /// The connection's id.
    pub fn id(&self) -> ConnId {
        self.id
    }

    fn local<R>(&self, f: impl FnOnce(&mut crate::core::ThreadCore) -> R) -> Option<R> {
        with_active(self.engine.id, self.id.thread, f)
    }

    fn remote(&self, cmd: Cmd) {
        self.engine.mailboxes[usize::from(self.id.thread)].push(cmd);
    }

    /// [`ConnRef::local`] for stream commands (write, close, write_eof):
    /// `None` while earlier ones from other threads are still in the
    /// mailbox, so that this one queues behind them and order holds.
    fn local_stream<R>(&self, f: impl FnOnce(&mut crate::core::ThreadCore) -> R) -> Option<R> {
        if self.shared.has_pending() {
            return None;
        }
        self.local(f)
    }

    /// Send a stream command through the mailbox, counted as pending.
    fn remote_stream(&self, cmd: Cmd) {
        self.shared.pending_add();
        self.remote(cmd);
    }

    /// Hand bytes to the owner thread through the mailbox (counted against
    /// the engine's buffer memory until it takes them).
    fn remote_write(&self, data: Vec<u8>) {
        self.shared.mailbox_add(data.len());
        self.remote_stream(Cmd::Write {
            conn: self.id,
            data,
        });
    }

    /// Queue bytes. On the owner thread returns false if the connection is
    /// closing or gone; from other threads the check happens later.
    pub fn write(&self, data: &[u8]) -> bool {
        if let Some(ok) = self.local_stream(|c| c.write(self.id, data)) {
            return ok;
        }
        self.remote_write(data.to_vec());
        true
    }

    /// Queue the concatenation of `parts` like [`ConnRef::write_inline`].
    pub fn write_parts_inline(&self, parts: &[&[u8]]) -> Written {
        let len = parts.iter().map(|p| p.len()).sum();
        let local = self.local_stream(|c| {
            c.write_notify(self.id, len, |q, cache| q.push_parts(parts, cache), false)
        });
        if let Some(w) = local {
            return w;
        }
        let data = parts.concat();
        self.remote_write(data);
        Written::Queued
    }

    /// Queue `packets`, each framed by `framing` (its length header before
    /// it, its delimiter after it, or as is: see [`Framing::encode`]), as
    /// one write, like [`ConnRef::write_parts_inline`]. A packet whose
    /// length does not fit the header is not queued, nor is any after it;
    /// its error comes back beside what the write of those before it did.
    pub fn write_packets_inline<P: AsRef<[u8]>>(
        &self,
        framing: &Framing,
        packets: &[P],
    ) -> (Written, Option<EncodeError>) {
        let delimiter: &[u8] = match framing {
            Framing::Delimited { delimiter, .. } => delimiter,
            _ => &[],
        };
        let mut header = [0u8; 8];
        let mut len = 0;
        let mut error = None;
        let mut fit = packets.len();
        for (i, p) in packets.iter().enumerate() {
            let p = p.as_ref();
            match framing.encode_header_into(p.len(), &mut header) {
                Ok(h) => len += h + p.len() + delimiter.len(),
                Err(e) => {
                    error = Some(e);
                    fit = i;
                    break;
                }
            }
        }
        let packets = &packets[..fit];
        if packets.is_empty() {
            return (Written::Queued, error);
        }
        let local = self.local_stream(|c| {
            c.write_notify(
                self.id,
                len,
                |q, cache| {
                    for p in packets {
                        let p = p.as_ref();
                        let h = framing
                            .encode_header_into(p.len(), &mut header)
                            .unwrap_or(0);
                        q.push_parts(&[&header[..h], p, delimiter], cache);
                    }
                },
                false,
            )
        });
        if let Some(w) = local {
            return (w, error);
        }
        let mut data = Vec::with_capacity(len);
        for p in packets {
            // Cannot fail: every length was checked above.
            let _ = framing.encode(p.as_ref(), &mut data);
        }
        self.remote_write(data);
        (Written::Queued, error)
    }

    /// Queue bytes, asyncio style: on the owner thread inside a dispatch,
    /// a write that crosses the high-water mark returns
    /// [`Written::CrossedHigh`] and the caller calls `pause_writing` at
    /// once (no event follows); from other threads the owner delivers a
    /// `PauseWriting` event as usual.
    pub fn write_inline(&self, data: &[u8]) -> Written {
        self.write_parts_inline(&[data])
    }

    /// Queue the concatenation of `parts` as one write (e.g. a length
    /// header and its payload), without joining them first on the owner.
    pub fn write_parts(&self, parts: &[&[u8]]) -> bool {
        if let Some(ok) = self.local_stream(|c| c.write_parts(self.id, parts)) {
            return ok;
        }
        let data = parts.concat();
        self.remote_write(data);
        true
    }

    /// Cut the stream by `framing` from the next byte on; bytes already
    /// received and not yet delivered are re-framed.
    pub fn set_framing(&self, framing: Framing) {
        let framing2 = framing.clone();
        if self
            .local(move |c| c.set_framing(self.id, framing2))
            .is_none()
        {
            self.remote(Cmd::SetFraming {
                conn: self.id,
                framing,
            });
        }
    }

    /// Report the connection idle (`Event::IdleTimeout`) after `timeout`
    /// with nothing received; `None` turns it off.
    pub fn set_idle_timeout(&self, timeout: Option<Duration>) {
        if self
            .local(|c| c.set_idle_timeout(self.id, timeout))
            .is_none()
        {
            self.remote(Cmd::SetIdleTimeout {
                conn: self.id,
                timeout,
            });
        }
    }

    /// Flush, then close.
    pub fn close(&self) {
        if self.local_stream(|c| c.close(self.id)).is_none() {
            self.remote_stream(Cmd::Close { conn: self.id });
        }
    }

    /// Drop the write queue and reset the connection.
    pub fn abort(&self) {
        if self.local(|c| c.abort(self.id)).is_none() {
            self.remote(Cmd::Abort { conn: self.id });
        }
    }

    /// Drop the write queue and close without a reset (a handler failed).
    pub fn abort_quietly(&self) {
        if self.local(|c| c.abort_quietly(self.id)).is_none() {
            self.remote(Cmd::Abort { conn: self.id });
        }
    }

    /// Flush, then shut down the sending side.
    pub fn write_eof(&self) {
        if self.local_stream(|c| c.write_eof(self.id)).is_none() {
            self.remote_stream(Cmd::WriteEof { conn: self.id });
        }
    }

    /// Pause (true) or resume (false) delivery of received data. Ordered
    /// with writes and earlier pauses from other threads, like a write.
    pub fn set_reading_paused(&self, paused: bool) {
        if self
            .local_stream(|c| c.set_reading(self.id, paused))
            .is_none()
        {
            self.remote_stream(Cmd::SetReading {
                conn: self.id,
                paused,
            });
        }
    }

    /// Set the write-queue water marks.
    pub fn set_write_limits(&self, high: usize, low: usize) {
        if self
            .local(|c| c.set_write_limits(self.id, high, low))
            .is_none()
        {
            self.remote(Cmd::SetWriteLimits {
                conn: self.id,
                high,
                low,
            });
        }
    }

    /// Bytes written and not yet taken by the kernel.
    pub fn write_buffer_size(&self) -> usize {
        self.shared.write_buffer_size()
    }
}

/// The user's handle on one UDP endpoint; usable from any thread, with
/// [`ConnRef`]'s rules (at once on the owner thread during a dispatch,
/// through the mailbox in order elsewhere, a no-op once the endpoint is
/// gone).
#[derive(Clone, Debug)]
pub struct EndpointRef {
    id: ConnId,
    engine: Arc<Shared>,
    shared: Arc<ConnShared>,
}

impl EndpointRef {
    pub(crate) fn new(id: ConnId, engine: Arc<Shared>, shared: Arc<ConnShared>) -> Self {
        EndpointRef { id, engine, shared }
    }

    /// The endpoint's id (in the endpoint namespace).
    pub fn id(&self) -> ConnId {
        self.id
    }

    fn local<R>(&self, f: impl FnOnce(&mut crate::core::ThreadCore) -> R) -> Option<R> {
        if self.shared.has_pending() {
            return None; // queue behind sends still in the mailbox
        }
        with_active(self.engine.id, self.id.thread, f)
    }

    fn remote(&self, cmd: Cmd, counted: bool) {
        if counted {
            self.shared.pending_add();
        }
        self.engine.mailboxes[usize::from(self.id.thread)].push(cmd);
    }

    /// Queue one datagram to `addr` (None: the connected peer). On the
    /// owner thread, [`Written::CrossedHigh`] asks the caller to call
    /// `pause_writing` now; [`Written::Dropped`]: closing, gone, or the send
    /// queue is at its cap (counted in stats).
    pub fn send_to(&self, data: &[u8], addr: Option<SocketAddr>) -> Written {
        if let Some(w) = self.local(|c| c.udp_send_vec(self.id, data.to_vec(), addr, false)) {
            return w;
        }
        self.shared.mailbox_add(data.len());
        self.remote(
            Cmd::UdpSend {
                ep: self.id,
                data: data.to_vec(),
                addr,
            },
            true,
        );
        Written::Queued
    }

    /// Send what is queued, then close.
    pub fn close(&self) {
        if self.local(|c| c.udp_close(self.id)).is_none() {
            self.remote(Cmd::UdpClose { ep: self.id }, true);
        }
    }

    /// Drop what is queued and close now.
    pub fn abort(&self) {
        if with_active(self.engine.id, self.id.thread, |c| c.udp_abort(self.id)).is_none() {
            self.remote(Cmd::UdpAbort { ep: self.id }, false);
        }
    }

    /// Pause (true) or resume (false) receiving.
    pub fn set_reading_paused(&self, paused: bool) {
        if with_active(self.engine.id, self.id.thread, |c| {
            c.udp_set_reading(self.id, paused)
        })
        .is_none()
        {
            self.remote(
                Cmd::UdpSetReading {
                    ep: self.id,
                    paused,
                },
                false,
            );
        }
    }

    /// Set the send queue's water marks.
    pub fn set_write_limits(&self, high: usize, low: usize) {
        if with_active(self.engine.id, self.id.thread, |c| {
            c.udp_set_write_limits(self.id, high, low)
        })
        .is_none()
        {
            self.remote(
                Cmd::UdpSetWriteLimits {
                    ep: self.id,
                    high,
                    low,
                },
                false,
            );
        }
    }

    /// Bytes queued and not yet taken by the kernel.
    pub fn write_buffer_size(&self) -> usize {
        self.shared.write_buffer_size()
    }
}
