//! `netring._native.Engine`: a pool of IO threads (Python's `IOPool`, or
//! the private pool of a `Server`), its listeners and timers. Events are
//! delivered by `dispatch.rs`.
//!
//! Arguments arrive checked: the Python layer (`netring/_args.py`) owns the
//! argument checks and their messages, so the methods here only convert
//! (host strings to addresses, seconds to `Duration`s) and do not check the
//! same things again. What stays is the engine's own validation
//! (`EngineConfig::validate`, `Framing::validate`), which Rust users rely
//! on too.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::FromRawFd;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pyo3::prelude::*;
use pyo3::types::PyDict;

use netring_core::framing::Framing;
use netring_core::{
    ConnOptions, EngineConfig, HistogramSnapshot, Keepalive, ListenConfig, HISTOGRAM_BUCKETS,
};

use crate::dispatch::{ListenerEntry, PyHandler, Registry, TimerEntry};
use crate::errors::to_py;

/// A pool of IO threads running the netring engine, or a hosted engine
/// (`Engine.hosted(...)`: no thread; its owner drives the turns it comes
/// with, on the thread that made it).
#[pyclass(frozen, module = "netring._native")]
pub struct Engine {
    engine: netring_core::Engine,
    registry: Arc<Registry>,
}

fn engine_config(
    py: Python<'_>,
    io_threads: usize,
    backend: &str,
    buffer_size: Option<usize>,
    buffers_per_thread: Option<usize>,
    max_buffer_memory: Option<usize>,
    zerocopy_threshold: Option<usize>,
) -> PyResult<EngineConfig> {
    let mut config = EngineConfig {
        io_threads,
        max_buffer_memory,
        zerocopy_threshold,
        packet_alloc: Some(std::sync::Arc::new(crate::dispatch::BytesAlloc)),
        ..Default::default()
    };
    config.backend = backend
        .parse()
        .map_err(|e| to_py(py, netring_core::Error::Config(e)))?;
    if let Some(n) = buffer_size {
        config.buffer_size = n;
    }
    if let Some(n) = buffers_per_thread {
        config.buffers_per_thread = n;
    }
    Ok(config)
}

/// A hosted engine's turns, for the thread that made it (an asyncio loop's):
/// watch `fd()`, call `run_ready()` when it is readable and after
/// `next_delay()` seconds.
#[pyclass(unsendable, module = "netring._native")]
pub struct HostedTurns {
    hosted: netring_core::Hosted,
    handler: Option<crate::dispatch::ParkedHandler>,
    /// `run_ready` is running (a callback inside it called it again).
    running: bool,
}

#[pymethods]
impl HostedTurns {
    /// The descriptor that is readable when the engine has work.
    fn fd(&self) -> i32 {
        self.hosted.fd()
    }

    /// From now on, operations made on this thread between turns (a task's
    /// writes) apply at once; the first after a turn calls `kick()`, which
    /// must schedule the next `run_ready` (e.g. `loop.call_soon`).
    fn attach(&self, kick: Py<PyAny>) {
        self.hosted.attach_here(Box::new(move || {
            Python::attach(|py| {
                if let Err(e) = kick.call0(py) {
                    e.write_unraisable(py, None);
                }
            })
        }));
    }

    /// Run what is ready: completions, commands, callbacks, then submit.
    /// False once the engine has shut down and holds nothing.
    fn run_ready(&mut self, py: Python<'_>) -> bool {
        if self.running {
            return true; // NOTE: re-entered from a callback: the outer turn goes on
        }
        let Some(parked) = self.handler.take() else {
            return false;
        };
        self.running = true;
        let mut handler = PyHandler::resume(py, parked);
        let alive = self.hosted.run_ready(&mut handler);
        self.handler = Some(handler.park_state());
        self.running = false;
        alive
    }

    /// `run_ready`, then when the engine next has work without its fd
    /// saying so, on the monotonic clock (`time.monotonic()`, which is
    /// asyncio's and uvloop's `loop.time()`): `inf` if nothing is
    /// scheduled; None once the engine has shut down and holds nothing.
    /// One call per loop wake-up instead of two.
    fn turn(&mut self, py: Python<'_>) -> Option<f64> {
        if !self.run_ready(py) {
            return None;
        }
        let Some(deadline) = self.hosted.next_deadline() else {
            return Some(f64::INFINITY);
        };
        let now = Instant::now();
        let delay = deadline.saturating_duration_since(now).as_secs_f64();
        Some(monotonic_seconds() + delay)
    }
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (io_threads, backend="auto", buffer_size=None, buffers_per_thread=None, max_buffer_memory=None, zerocopy_threshold=None))]
    fn new(
        py: Python<'_>,
        io_threads: usize,
        backend: &str,
        buffer_size: Option<usize>,
        buffers_per_thread: Option<usize>,
        max_buffer_memory: Option<usize>,
        zerocopy_threshold: Option<usize>,
    ) -> PyResult<Self> {
        let config = engine_config(
            py,
            io_threads,
            backend,
            buffer_size,
            buffers_per_thread,
            max_buffer_memory,
            zerocopy_threshold,
        )?;
        let registry = Arc::new(Registry::default());
        let r2 = registry.clone();
        let engine = py
            .detach(move || {
                netring_core::Engine::start(config, move |_, io_loop| {
                    Python::attach(|py| {
                        let mut handler = PyHandler::new(py, r2.clone());
                        io_loop.run(&mut handler);
                    })
                })
            })
            .map_err(|e| to_py(py, e))?;
        Ok(Engine { engine, registry })
    }

    /// A hosted engine (one IO thread: the calling one) and its turns.
    #[staticmethod]
    #[pyo3(signature = (backend="auto", buffer_size=None, buffers_per_thread=None, max_buffer_memory=None, zerocopy_threshold=None))]
    fn hosted(
        py: Python<'_>,
        backend: &str,
        buffer_size: Option<usize>,
        buffers_per_thread: Option<usize>,
        max_buffer_memory: Option<usize>,
        zerocopy_threshold: Option<usize>,
    ) -> PyResult<(Engine, HostedTurns)> {
        let config = engine_config(
            py,
            1,
            backend,
            buffer_size,
            buffers_per_thread,
            max_buffer_memory,
            zerocopy_threshold,
        )?;
        let (engine, hosted) =
            netring_core::Engine::start_hosted(config).map_err(|e| to_py(py, e))?;
        let registry = Arc::new(Registry::default());
        let turns = HostedTurns {
            hosted,
            handler: Some(PyHandler::new(py, registry.clone()).park_state()),
            running: false,
        };
        Ok((Engine { engine, registry }, turns))
    }

    /// Bind `host:port` (an IP literal) and serve `factory`'s protocols.
    /// Returns (listener id, host, port).
    #[pyo3(signature = (host, port, backlog, reuse_port, factory, framing=None, idle_timeout=None, keepalive=None, max_write_buffer=None, frame_timeout=None, max_connections=None, max_connections_per_ip=None, close_on_overflow=false, tls=None, max_unready=None, proxy=None, fd=None))]
    #[allow(clippy::too_many_arguments)]
    fn listen(
        &self,
        py: Python<'_>,
        host: &str,
        port: u16,
        backlog: i32,
        reuse_port: bool,
        factory: Py<PyAny>,
        framing: Option<&Bound<'_, PyAny>>,
        idle_timeout: Option<f64>,
        keepalive: Option<(f64, f64, u32)>,
        max_write_buffer: Option<usize>,
        frame_timeout: Option<f64>,
        max_connections: Option<usize>,
        max_connections_per_ip: Option<usize>,
        close_on_overflow: bool,
        tls: Option<Bound<'_, crate::tls::TlsServerConfig>>,
        max_unready: Option<usize>,
        proxy: Option<ProxyOption>,
        fd: Option<i32>,
    ) -> PyResult<(usize, String, u16)> {
        let framing = framing_or_raw(framing)?;
        let overflow = if close_on_overflow {
            netring_core::config::Overflow::Close
        } else {
            netring_core::config::Overflow::Hold
        };
        let mut conn = conn_options(
            framing.clone(),
            idle_timeout,
            keepalive,
            max_write_buffer,
            frame_timeout,
        );
        let tls_context = tls.as_ref().and_then(|t| t.get().context(py));
        conn.layer = tls.map(|t| t.get().layer());
        if let Some((version, trusted, timeout)) = proxy {
            conn.layer = Some(proxy_layer(
                py,
                &version,
                trusted,
                timeout,
                conn.layer.take(),
            )?);
        }
        let cfg = ListenConfig {
            addr: match fd {
                Some(_) => SocketAddr::from(([0, 0, 0, 0], 0)), // unused
                None => ip_addr(py, host, port)?,
            },
            backlog,
            reuse_port,
            conn,
            limits: netring_core::config::ListenLimits {
                max_connections,
                max_connections_per_ip,
                overflow,
                max_unready,
            },
        };
        // NOTE: the GIL is held from here until the factory is registered, so
        // no IO thread can dispatch this listener's first connection before.
        let listened = match fd {
            // SAFETY: the caller hands this descriptor over (Python passes a
            // dup of its socket, or systemd's); from here the engine owns it.
            Some(fd) => self
                .engine
                .listen_socket(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) }, &cfg),
            None => self.engine.listen(&cfg).map(|(id, a)| (id, Some(a))),
        };
        let (id, addr) = listened.map_err(|e| to_py(py, e))?;
        // NOTE: a Unix socket has no IP address: ("", 0); the Python side
        // knows its path.
        let addr = addr.unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
        self.registry.listeners().insert(
            id,
            ListenerEntry {
                factory,
                framing,
                open: Default::default(),
                tls_context,
            },
        );
        let host = if addr.port() == 0 && fd.is_some() {
            String::new()
        } else {
            addr.ip().to_string()
        };
        Ok((id, host, addr.port()))
    }

    /// Stop accepting on `listener` and close its connections gracefully,
    /// aborting what is still open after `grace` seconds. Blocks (GIL
    /// released) until they are all gone or `grace` + 1 s passed; returns
    /// whether they all went. Other listeners on this engine are untouched.
    /// `wait=False` (a hosted engine, whose owner must go on turning): start
    /// the close and return; `listener_connections` tells when they are
    /// gone, then `forget_listener`.
    #[pyo3(signature = (listener, grace, wait=true))]
    fn close_listener(&self, py: Python<'_>, listener: usize, grace: f64, wait: bool) -> bool {
        let grace = seconds(grace);
        let open = self
            .registry
            .listeners()
            .get(&listener)
            .map(|l| l.open.clone());
        self.engine.close_listener(listener, grace);
        if !wait {
            return false;
        }
        let Some(open) = open else { return true };
        let give_up = Instant::now() + grace + Duration::from_secs(1);
        let done = py.detach(|| {
            while open.load(Ordering::Acquire) > 0 {
                if Instant::now() >= give_up || self.engine.is_closed() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            true
        });
        self.registry.listeners().remove(&listener);
        done
    }

    /// Drop a closed listener's entry (after `close_listener(wait=False)`).
    fn forget_listener(&self, listener: usize) {
        self.registry.listeners().remove(&listener);
    }

    /// Call `callback()` on an IO thread after `delay` seconds, then every
    /// `interval` seconds if given. Returns the timer id.
    #[pyo3(signature = (delay, callback, interval=None))]
    fn call_later(&self, delay: f64, callback: Py<PyAny>, interval: Option<f64>) -> u64 {
        let id = self.engine.timer_id();
        // NOTE: registered before the engine hears of it, so the IO thread
        // always finds the callback.
        self.registry.timers().insert(
            id,
            TimerEntry {
                callback,
                repeating: interval.is_some(),
            },
        );
        let at = Instant::now() + seconds(delay);
        // NOTE: not a check (any positive interval is valid): the engine's
        // shortest period, so that a repeating timer never has a zero one.
        let interval = interval.map(|s| seconds(s).max(MIN_TIMER_INTERVAL));
        self.engine.start_timer(id, at, interval);
        id
    }

    /// Connect to `host:port` (an IP literal) on an IO thread; resolve
    /// `future` (a `concurrent.futures.Future`) with `(transport,
    /// protocol)` once connected, or fail it with the `OSError` /
    /// `TimeoutError`. Socket creation or bind errors raise here.
    /// With `path`, `host` and `port` are not used: the connection goes to
    /// that Unix domain socket (a leading NUL: an abstract name).
    #[pyo3(signature = (host, port, factory, future, framing=None, idle_timeout=None, timeout=None, local=None, keepalive=None, max_write_buffer=None, frame_timeout=None, tls=None, path=None))]
    #[allow(clippy::too_many_arguments)]
    fn connect(
        &self,
        py: Python<'_>,
        host: &str,
        port: u16,
        factory: Py<PyAny>,
        future: Py<PyAny>,
        framing: Option<&Bound<'_, PyAny>>,
        idle_timeout: Option<f64>,
        timeout: Option<f64>,
        local: Option<(String, u16)>,
        keepalive: Option<(f64, f64, u32)>,
        max_write_buffer: Option<usize>,
        frame_timeout: Option<f64>,
        tls: Option<Bound<'_, crate::tls::TlsClientLayer>>,
        path: Option<std::path::PathBuf>,
    ) -> PyResult<()> {
        let framing = framing_or_raw(framing)?;
        let addr = match path {
            Some(_) => SocketAddr::from(([0, 0, 0, 0], 0)), // unused
            None => ip_addr(py, host, port)?,
        };
        let local = local.map(|(h, p)| ip_addr(py, &h, p)).transpose()?;
        let token = self.engine.connect_token();
        self.registry.connects().insert(
            token,
            crate::dispatch::PendingConnect {
                factory,
                framing: framing.clone(),
                future,
                tls_context: tls.as_ref().and_then(|t| t.get().context(py)),
            },
        );
        let mut options = conn_options(
            framing,
            idle_timeout,
            keepalive,
            max_write_buffer,
            frame_timeout,
        );
        options.layer = tls.map(|t| t.get().layer());
        let timeout = timeout.map(seconds);
        let started = match &path {
            Some(path) => self.engine.connect_unix(token, path, options, timeout),
            None => self.engine.connect(token, addr, local, options, timeout),
        };
        if let Err(e) = started {
            self.registry.connects().remove(&token);
            return Err(to_py(py, e));
        }
        Ok(())
    }

    /// Open a UDP endpoint bound to `local` (IP literal, port), optionally
    /// connected to `remote`; resolve `future` with `(transport, protocol)`
    /// once it is live on its IO thread. Socket, option and bind errors
    /// raise here. Returns the bound `(host, port)`.
    #[pyo3(signature = (factory, future, local, remote=None, reuse_port=false, broadcast=false, groups=Vec::new(), multicast_loop=None, multicast_ttl=None, max_send_queue=None))]
    #[allow(clippy::too_many_arguments)]
    fn udp_open(
        &self,
        py: Python<'_>,
        factory: Py<PyAny>,
        future: Py<PyAny>,
        local: (String, u16),
        remote: Option<(String, u16)>,
        reuse_port: bool,
        broadcast: bool,
        groups: Vec<(IpAddr, Option<IpAddr>)>,
        multicast_loop: Option<bool>,
        multicast_ttl: Option<u32>,
        max_send_queue: Option<usize>,
    ) -> PyResult<(String, u16)> {
        let mut cfg = netring_core::UdpConfig::new(ip_addr(py, &local.0, local.1)?);
        cfg.remote = remote.map(|(h, p)| ip_addr(py, &h, p)).transpose()?;
        cfg.reuse_port = reuse_port;
        cfg.broadcast = broadcast;
        cfg.multicast_groups = groups;
        cfg.multicast_loop = multicast_loop;
        cfg.multicast_ttl = multicast_ttl;
        if let Some(n) = max_send_queue {
            cfg.max_send_queue = n;
        }
        let token = self.engine.connect_token();
        self.registry.endpoints().insert(
            token,
            crate::udp::PendingEndpoint {
                factory,
                future,
                capacity: netring_core::udp::datagram_capacity(self.engine.buffer_size()),
            },
        );
        match self.engine.udp_open(token, &cfg) {
            Ok(addr) => Ok((addr.ip().to_string(), addr.port())),
            Err(e) => {
                self.registry.endpoints().remove(&token);
                Err(to_py(py, e))
            }
        }
    }

    /// Cancel a timer; returns whether it was still pending.
    fn cancel_timer(&self, id: u64) -> bool {
        let pending = self.registry.timers().remove(&id).is_some();
        self.engine.cancel_timer(id);
        pending
    }

    /// Open connections accepted by `listener`.
    fn listener_connections(&self, listener: usize) -> usize {
        self.registry
            .listeners()
            .get(&listener)
            .map_or(0, |l| l.open.load(Ordering::Acquire))
    }

    /// Stop accepting on a listener: what its accept queue holds is
    /// accepted and served first (not for a listener with connection
    /// limits). With `timeout` (seconds), block (GIL released) until the
    /// socket is closed and those connections' opening was delivered
    /// (`connection_made` ran, or a TLS/PROXY handshake began); returns
    /// whether that happened in time. Without, return at once (True). Not
    /// from a callback on this engine's thread (it would wait for itself
    /// until the timeout).
    #[pyo3(signature = (listener, timeout=None))]
    fn unlisten(&self, py: Python<'_>, listener: usize, timeout: Option<f64>) -> bool {
        let done = self.engine.unlisten(listener);
        let Some(timeout) = timeout else {
            return true;
        };
        let give_up = Instant::now() + seconds(timeout);
        py.detach(|| {
            while !done.load(Ordering::Acquire) {
                if Instant::now() >= give_up || self.engine.is_closed() {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            true
        })
    }

    /// Graceful shutdown within `grace` seconds; blocks (GIL released).
    fn shutdown(&self, py: Python<'_>, grace: f64) {
        // NOTE: `IOPool.close(grace)` has always taken any number, a
        // negative one meaning "at once"; this clamp is that rule, not a
        // second check.
        let grace = seconds(grace.max(0.0));
        py.detach(|| self.engine.shutdown(grace));
        self.registry.listeners().clear();
        self.registry.timers().clear();
        // Attempts still pending when the threads stopped will never resolve.
        let pending: Vec<_> = self.registry.connects().drain().collect();
        for (_, p) in pending {
            let e = pyo3::exceptions::PyConnectionAbortedError::new_err("the pool was closed");
            let _ = p
                .future
                .call_method1(py, "set_exception", (e.into_value(py),));
        }
    }

    /// Why the engine stopped on its own (an IO thread panicked), or None.
    fn failure(&self) -> Option<String> {
        self.engine.failure()
    }

    /// Whether `shutdown` has completed.
    fn is_closed(&self) -> bool {
        self.engine.is_closed()
    }

    /// The backend name: "io_uring" or "epoll".
    #[getter]
    fn backend(&self) -> &'static str {
        self.engine.backend().name()
    }

    /// Why `auto` fell back to epoll, or None.
    #[getter]
    fn fallback_reason(&self) -> Option<&str> {
        self.engine.fallback_reason()
    }

    /// Number of IO threads.
    #[getter]
    fn io_threads(&self) -> usize {
        self.engine.io_threads()
    }

    /// Counters as a dict.
    fn stats<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let s = self.engine.stats();
        let d = PyDict::new(py);
        d.set_item("connections_open", s.open)?;
        d.set_item("connections_accepted", s.accepted)?;
        d.set_item("connections_connected", s.connected)?;
        d.set_item("connections_closed", s.closed)?;
        d.set_item("bytes_in", s.bytes_in)?;
        d.set_item("bytes_out", s.bytes_out)?;
        d.set_item("datagrams_in", s.datagrams_in)?;
        d.set_item("datagrams_out", s.datagrams_out)?;
        d.set_item("datagrams_truncated", s.datagrams_truncated)?;
        d.set_item("datagrams_dropped", s.datagrams_dropped)?;
        d.set_item("handshakes_failed", s.handshakes_failed)?;
        d.set_item("frame_errors_oversize", s.frame_errors_oversize)?;
        d.set_item("frame_errors_malformed", s.frame_errors_malformed)?;
        d.set_item("frame_timeouts", s.frame_timeouts)?;
        d.set_item("write_buffer_aborts", s.write_buffer_aborts)?;
        d.set_item("file_prefetches", s.file_prefetches)?;
        d.set_item("connections_refused", s.refused)?;
        d.set_item("frames_in", s.frames_in)?;
        d.set_item("frames_out", s.frames_out)?;
        d.set_item("zerocopy_sends", s.zerocopy_sends)?;
        d.set_item("zerocopy_copied", s.zerocopy_copied)?;
        d.set_item("zerocopy_abandoned", s.zerocopy_abandoned)?;
        d.set_item("buffer_memory", s.buffer_memory)?;
        let times = self.engine.times();
        d.set_item("turn_seconds", histogram(py, &times.turn)?)?;
        d.set_item("callback_seconds", histogram(py, &times.callbacks)?)?;
        d.set_item("backend", self.engine.backend().name())?;
        d.set_item("io_threads", self.engine.io_threads())?;
        d.set_item("backend_fallback_reason", self.engine.fallback_reason())?;
        Ok(d)
    }
}

/// A histogram as Prometheus reads one: `{"buckets": [(upper bound in
/// seconds, cumulative count), ...], "count": n, "sum": seconds}`, the
/// last bucket's bound `inf`.
fn histogram<'py>(py: Python<'py>, h: &HistogramSnapshot) -> PyResult<Bound<'py, PyDict>> {
    let mut cumulative = 0u64;
    let buckets = h
        .counts
        .iter()
        .enumerate()
        .map(|(i, n)| {
            cumulative += n;
            let bound = if i < HISTOGRAM_BUCKETS {
                HistogramSnapshot::upper_bound(i)
            } else {
                f64::INFINITY
            };
            (bound, cumulative)
        })
        .collect::<Vec<_>>();
    let d = PyDict::new(py);
    d.set_item("buckets", buckets)?;
    d.set_item("count", cumulative)?;
    d.set_item("sum", h.sum_ns as f64 * 1e-9)?;
    Ok(d)
}

/// The shortest period of a repeating timer.
const MIN_TIMER_INTERVAL: Duration = Duration::from_micros(1);

/// Seconds from Python as a `Duration`. Python checked them
/// (`_args.check_seconds`: finite, non-negative, at most `MAX_SECONDS`), so
/// the conversion cannot fail.
fn seconds(s: f64) -> Duration {
    Duration::from_secs_f64(s)
}

/// A connection's options from the (checked) Python arguments.
fn conn_options(
    framing: Framing,
    idle_timeout: Option<f64>,
    keepalive: Option<(f64, f64, u32)>,
    max_write_buffer: Option<usize>,
    frame_timeout: Option<f64>,
) -> ConnOptions {
    let mut options = ConnOptions {
        framing,
        idle_timeout: idle_timeout.map(seconds),
        keepalive: keepalive.map(keepalive_from),
        frame_timeout: frame_timeout.map(seconds),
        ..Default::default()
    };
    if let Some(n) = max_write_buffer {
        options.max_write_buffer = n;
    }
    options
}

/// A framing spec from Python, or Raw for None.
fn framing_or_raw(framing: Option<&Bound<'_, PyAny>>) -> PyResult<Framing> {
    match framing {
        Some(f) if !f.is_none() => crate::framing::from_py(f),
        _ => Ok(Framing::Raw),
    }
}

/// `host` must be an IP literal (names are resolved in Python, off the IO
/// threads).
fn ip_addr(py: Python<'_>, host: &str, port: u16) -> PyResult<SocketAddr> {
    let ip: IpAddr = host.parse().map_err(|_| {
        crate::errors::netring_error(
            py,
            "ConfigurationError",
            format!("host: not an IP address: {host:?}"),
        )
    })?;
    Ok(SocketAddr::new(ip, port))
}

/// `(idle_s, interval_s, count)` from Python (`_args.check_keepalive`:
/// whole seconds from 1, a count from 1 to 127).
fn keepalive_from((idle, interval, count): (f64, f64, u32)) -> Keepalive {
    Keepalive {
        idle: seconds(idle),
        interval: seconds(interval),
        count,
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        // NOTE: dropped by Python's garbage collector with the GIL held, while
        // the IO threads may need the GIL to deliver their last callbacks:
        // release it while they drain, or the join would deadlock.
        if !self.engine.is_closed() {
            Python::attach(|py| py.detach(|| self.engine.shutdown(Duration::ZERO)));
        }
    }
}

/// `listen`'s `proxy`: (version, trusted networks as (address, prefix),
/// header timeout in seconds).
type ProxyOption = (String, Vec<(String, u8)>, Option<f64>);

/// The PROXY-protocol layer of a listener (with TLS behind it, if any).
fn proxy_layer(
    py: Python<'_>,
    version: &str,
    trusted: Vec<(String, u8)>,
    timeout: Option<f64>,
    inner: Option<netring_core::layer::Layer>,
) -> PyResult<netring_core::layer::Layer> {
    use netring_core::layer::proxy::{Network, ProxyProtocol, ProxyVersion};
    let version = match version {
        "v1" => ProxyVersion::V1,
        "v2" => ProxyVersion::V2,
        _ => ProxyVersion::Any,
    };
    let trusted = trusted
        .into_iter()
        .map(|(addr, prefix)| {
            addr.parse::<IpAddr>()
                .map(|addr| Network { addr, prefix })
                .map_err(|_| {
                    crate::errors::netring_error(
                        py,
                        "ConfigurationError",
                        format!("trusted_proxies: {addr:?} is not an IP address"),
                    )
                })
        })
        .collect::<PyResult<Vec<_>>>()?;
    let mut factory = ProxyProtocol::new(version, trusted, timeout.map(Duration::from_secs_f64));
    if let Some(inner) = inner {
        factory = factory.with_inner(inner);
    }
    Ok(netring_core::layer::Layer(Arc::new(factory)))
}

/// `time.monotonic()` (CLOCK_MONOTONIC, as `Instant`), in seconds.
fn monotonic_seconds() -> f64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
