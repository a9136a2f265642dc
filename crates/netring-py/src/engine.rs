//! `netring._native.Engine` and the per-IO-thread dispatcher.
//!
//! Each IO thread attaches to Python once (`Python::attach`) for its whole
//! life and releases the GIL only around its wait in the kernel
//! (`Handler::park`), so one loop turn costs one GIL hand-off however many
//! events it delivers. Callbacks for one connection run on its IO thread,
//! never concurrently. An exception in a callback (or in the protocol
//! factory) is logged with the peer's address and aborts that connection
//! only; `connection_lost` then receives the exception.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use netring_core::framing::Framing;
use netring_core::{Batch, ConnId, ConnRef, EngineConfig, Event, Handler, ListenConfig};

use crate::errors::to_py;
use crate::transport::Transport;

/// Per listener: the protocol factory and the initial framing.
type Factories = Arc<Mutex<HashMap<usize, (Py<PyAny>, Framing)>>>;

/// A pool of IO threads running the netring engine.
#[pyclass(frozen, module = "netring._native")]
pub struct Engine {
    engine: netring_core::Engine,
    factories: Factories,
}

#[pymethods]
impl Engine {
    #[new]
    #[pyo3(signature = (io_threads, backend="auto", buffer_size=None, buffers_per_thread=None))]
    fn new(
        py: Python<'_>,
        io_threads: usize,
        backend: &str,
        buffer_size: Option<usize>,
        buffers_per_thread: Option<usize>,
    ) -> PyResult<Self> {
        let mut config = EngineConfig {
            io_threads,
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
        let factories: Factories = Arc::new(Mutex::new(HashMap::new()));
        let f2 = factories.clone();
        let engine = py
            .detach(move || {
                netring_core::Engine::start(config, move |_, io_loop| {
                    Python::attach(|py| {
                        let mut handler = PyHandler::new(py, f2.clone());
                        io_loop.run(&mut handler);
                    })
                })
            })
            .map_err(|e| to_py(py, e))?;
        Ok(Engine { engine, factories })
    }

    /// Bind `host:port` (an IP literal) and serve `factory`'s protocols.
    /// Returns (listener id, host, port).
    #[pyo3(signature = (host, port, backlog, reuse_port, factory, framing=None))]
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
    ) -> PyResult<(usize, String, u16)> {
        let framing = match framing {
            Some(f) if !f.is_none() => crate::framing::from_py(f)?,
            _ => Framing::Raw,
        };
        let ip: IpAddr = host.parse().map_err(|_| {
            crate::errors::netring_error(
                py,
                "ConfigurationError",
                format!("host: not an IP address: {host:?}"),
            )
        })?;
        let cfg = ListenConfig {
            addr: SocketAddr::new(ip, port),
            backlog,
            reuse_port,
            framing: framing.clone(),
        };
        // NOTE: the GIL is held from here until the factory is registered, so
        // no IO thread can dispatch this listener's first connection before.
        let (id, addr) = self.engine.listen(&cfg).map_err(|e| to_py(py, e))?;
        self.factories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, (factory, framing));
        Ok((id, addr.ip().to_string(), addr.port()))
    }

    /// Stop accepting on a listener.
    fn unlisten(&self, listener: usize) {
        self.engine.unlisten(listener);
    }

    /// Graceful shutdown within `grace` seconds; blocks (GIL released).
    fn shutdown(&self, py: Python<'_>, grace: f64) {
        let grace = Duration::from_secs_f64(grace.max(0.0));
        py.detach(|| self.engine.shutdown(grace));
        self.factories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clear();
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
        d.set_item("connections_closed", s.closed)?;
        d.set_item("bytes_in", s.bytes_in)?;
        d.set_item("bytes_out", s.bytes_out)?;
        d.set_item("backend", self.engine.backend().name())?;
        d.set_item("io_threads", self.engine.io_threads())?;
        d.set_item("backend_fallback_reason", self.engine.fallback_reason())?;
        Ok(d)
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

/// One connection as the dispatcher sees it.
struct Entry {
    protocol: Py<PyAny>,
    transport: Py<Transport>,
    data_received: Option<Py<PyAny>>,
    packet_received: Option<Py<PyAny>>,
    /// Set when the protocol takes every packet of one read in one call.
    packets_received: Option<Py<PyAny>>,
    /// The exception that made us abort, passed to `connection_lost`.
    failure: Option<PyErr>,
}

/// Delivers one IO thread's events to Python.
struct PyHandler<'py> {
    py: Python<'py>,
    factories: Factories,
    conns: HashMap<ConnId, Entry>,
    logger: Option<Py<PyAny>>,
}

impl<'py> PyHandler<'py> {
    fn new(py: Python<'py>, factories: Factories) -> Self {
        let logger = py
            .import("logging")
            .and_then(|m| m.call_method1("getLogger", ("netring",)))
            .map(Bound::unbind)
            .ok();
        PyHandler {
            py,
            factories,
            conns: HashMap::new(),
            logger,
        }
    }

    fn log_error(&self, what: &str, peer: Option<SocketAddr>, err: &PyErr) {
        let py = self.py;
        let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
        let logged = self.logger.as_ref().map(|l| {
            let kwargs = PyDict::new(py);
            kwargs.set_item("exc_info", err.value(py))?;
            l.bind(py).call_method(
                "error",
                (
                    "netring: exception in %s for %s; closing the connection",
                    what,
                    peer.clone(),
                ),
                Some(&kwargs),
            )
        });
        if !matches!(logged, Some(Ok(_))) {
            err.print(py);
        }
    }

    /// A callback raised: log it and abort its connection.
    fn fail(&mut self, conn: ConnId, what: &str, err: PyErr) {
        let py = self.py;
        let Some(entry) = self.conns.get_mut(&conn) else {
            return;
        };
        let transport = entry.transport.clone_ref(py);
        let transport = transport.get();
        if entry.failure.is_none() {
            entry.failure = Some(err.clone_ref(py));
            transport.mark_lost_soon();
        }
        self.log_error(what, transport.peer(), &err);
        transport.conn_ref().abort_quietly();
    }

    fn opened(
        &mut self,
        conn: ConnRef,
        listener: usize,
        peer: Option<SocketAddr>,
        local: Option<SocketAddr>,
    ) {
        let py = self.py;
        let id = conn.id();
        let entry = self
            .factories
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&listener)
            .map(|(f, framing)| (f.clone_ref(py), framing.clone()));
        let Some((factory, framing)) = entry else {
            conn.abort();
            return;
        };
        let transport = Transport::new(conn.clone(), peer, local, framing);
        let protocol = match factory.call0(py) {
            Ok(p) => p,
            Err(e) => {
                self.log_error("protocol factory", peer, &e);
                conn.abort_quietly();
                return;
            }
        };
        let transport = match Py::new(py, transport) {
            Ok(t) => t,
            Err(e) => {
                self.log_error("transport creation", peer, &e);
                conn.abort_quietly();
                return;
            }
        };
        transport.get().set_protocol_ref(protocol.clone_ref(py));
        let data_received = protocol.getattr(py, intern!(py, "data_received")).ok();
        let packet_received = protocol.getattr(py, intern!(py, "packet_received")).ok();
        let packets_received = protocol.getattr(py, intern!(py, "packets_received")).ok();
        self.conns.insert(
            id,
            Entry {
                protocol: protocol.clone_ref(py),
                transport: transport.clone_ref(py),
                data_received,
                packet_received,
                packets_received,
                failure: None,
            },
        );
        if let Err(e) = protocol.call_method1(py, intern!(py, "connection_made"), (transport,)) {
            self.fail(id, "connection_made", e);
        }
    }

    /// Deliver a packet, or with `packets_received`, every whole packet of
    /// the same read in one list.
    fn packets(&mut self, batch: &mut Batch<'_>, conn: ConnId, first: &[u8]) {
        let py = self.py;
        let batched = self
            .conns
            .get(&conn)
            .and_then(|e| e.packets_received.as_ref().map(|m| m.clone_ref(py)));
        if let Some(method) = batched {
            let list = PyList::empty(py);
            let mut next = Some(first);
            while let Some(data) = next {
                if list.append(PyBytes::new(py, data)).is_err() {
                    break;
                }
                next = batch.next_packet_of(conn);
            }
            self.call(conn, "packets_received", |_| method.call1(py, (list,)));
            return;
        }
        let bytes = PyBytes::new(py, first);
        self.call(conn, "packet_received", |e| match &e.packet_received {
            Some(m) => m.call1(py, (bytes,)),
            None => e
                .protocol
                .call_method1(py, intern!(py, "packet_received"), (bytes,)),
        });
    }

    fn call(
        &mut self,
        conn: ConnId,
        name: &str,
        f: impl FnOnce(&Entry) -> PyResult<Py<PyAny>>,
    ) -> Option<Py<PyAny>> {
        let entry = self.conns.get(&conn)?;
        if entry.failure.is_some() {
            return None;
        }
        match f(entry) {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(conn, name, e);
                None
            }
        }
    }
}

impl Handler for PyHandler<'_> {
    fn dispatch(&mut self, batch: &mut Batch<'_>) {
        let py = self.py;
        while let Some(ev) = batch.next() {
            match ev {
                Event::Opened {
                    conn,
                    listener,
                    peer,
                    local,
                } => self.opened(conn, listener, peer, local),
                Event::Data { conn, data } => {
                    let bytes = PyBytes::new(py, data);
                    self.call(conn, "data_received", |e| match &e.data_received {
                        Some(m) => m.call1(py, (bytes,)),
                        None => e
                            .protocol
                            .call_method1(py, intern!(py, "data_received"), (bytes,)),
                    });
                }
                Event::Packet { conn, data } => self.packets(batch, conn, data),
                Event::Eof { conn } => {
                    let keep = self.call(conn, "eof_received", |e| {
                        e.protocol.call_method0(py, intern!(py, "eof_received"))
                    });
                    if let Some(keep) = keep {
                        match keep.is_truthy(py) {
                            Ok(true) => {}
                            Ok(false) => {
                                if let Some(e) = self.conns.get(&conn) {
                                    e.transport.get().close_now();
                                }
                            }
                            Err(err) => self.fail(conn, "eof_received", err),
                        }
                    }
                }
                Event::PauseWriting { conn } => {
                    self.call(conn, "pause_writing", |e| {
                        e.protocol.call_method0(py, intern!(py, "pause_writing"))
                    });
                }
                Event::ResumeWriting { conn } => {
                    self.call(conn, "resume_writing", |e| {
                        e.protocol.call_method0(py, intern!(py, "resume_writing"))
                    });
                }
                Event::Closed { conn, error } => {
                    let Some(entry) = self.conns.remove(&conn) else {
                        continue;
                    };
                    let transport = entry.transport.get();
                    transport.mark_lost();
                    let exc: Option<PyErr> = entry
                        .failure
                        .or_else(|| error.map(|e| crate::errors::conn_error(py, e)));
                    let arg = exc.map(|e| e.into_value(py).into_any());
                    if let Err(e) =
                        entry
                            .protocol
                            .call_method1(py, intern!(py, "connection_lost"), (arg,))
                    {
                        self.log_error("connection_lost", transport.peer(), &e);
                    }
                }
            }
        }
    }

    fn park<R: Send>(&mut self, wait: impl FnOnce() -> R + Send) -> R {
        self.py.detach(wait)
    }
}
