//! The per-IO-thread dispatcher: delivers engine events to Python.
//!
//! Each IO thread attaches to Python once (`Python::attach`) for its whole
//! life and releases the GIL only around its wait in the kernel
//! (`Handler::park`), so one loop turn costs one GIL hand-off however many
//! events it delivers. Callbacks for one connection run on its IO thread,
//! never concurrently. An exception in a callback (or in the protocol
//! factory) is logged with the peer's address and aborts that connection
//! only; `connection_lost` then receives the exception. An exception in a
//! timer callback is logged; the timer (if repeating) keeps running.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use netring_core::framing::Framing;
use netring_core::{Batch, ConnId, ConnRef, Event, Handler};

use crate::transport::{Addresses, Transport};
use crate::util::lock;

/// A listener's protocol factory, initial framing and open connections.
pub struct ListenerEntry {
    pub factory: Py<PyAny>,
    pub framing: Framing,
    pub open: Arc<AtomicUsize>,
}

/// A timer's callback.
pub struct TimerEntry {
    pub callback: Py<PyAny>,
    pub repeating: bool,
}

/// An outbound connect waiting for its outcome.
pub struct PendingConnect {
    pub factory: Py<PyAny>,
    pub framing: Framing,
    /// A `concurrent.futures.Future` for `(transport, protocol)`.
    pub future: Py<PyAny>,
}

/// What the Python side registered, shared by the engine and its threads.
#[derive(Default)]
pub struct Registry {
    listeners: Mutex<HashMap<usize, ListenerEntry>>,
    timers: Mutex<HashMap<u64, TimerEntry>>,
    connects: Mutex<HashMap<u64, PendingConnect>>,
    endpoints: Mutex<HashMap<u64, crate::udp::PendingEndpoint>>,
}

impl Registry {
    pub fn listeners(&self) -> MutexGuard<'_, HashMap<usize, ListenerEntry>> {
        lock(&self.listeners)
    }

    pub fn timers(&self) -> MutexGuard<'_, HashMap<u64, TimerEntry>> {
        lock(&self.timers)
    }

    pub fn connects(&self) -> MutexGuard<'_, HashMap<u64, PendingConnect>> {
        lock(&self.connects)
    }

    pub fn endpoints(&self) -> MutexGuard<'_, HashMap<u64, crate::udp::PendingEndpoint>> {
        lock(&self.endpoints)
    }
}

/// One connection as the dispatcher sees it.
struct Entry {
    id: ConnId,
    protocol: Py<PyAny>,
    transport: Py<Transport>,
    /// Its data callbacks (usually its class's, shared).
    methods: Rc<Methods>,
    /// The exception that made us abort, passed to `connection_lost`.
    failure: Option<Box<PyErr>>,
    /// The accepting listener's open-connection count (None: outbound).
    open: Option<Arc<AtomicUsize>>,
}

/// One IO thread's connections, indexed by their slot in the engine (the
/// events of a connection always arrive on its own thread). A flat table:
/// an entry costs its own size, with no hashing and no per-entry overhead.
#[derive(Default)]
struct ConnTable {
    slots: Vec<Option<Entry>>,
}

impl ConnTable {
    fn get(&self, id: ConnId) -> Option<&Entry> {
        self.slots
            .get(id.index as usize)?
            .as_ref()
            .filter(|e| e.id == id)
    }

    fn get_mut(&mut self, id: ConnId) -> Option<&mut Entry> {
        self.slots
            .get_mut(id.index as usize)?
            .as_mut()
            .filter(|e| e.id == id)
    }

    fn insert(&mut self, entry: Entry) {
        let i = entry.id.index as usize;
        if self.slots.len() <= i {
            self.slots.resize_with(i + 1, || None);
        }
        self.slots[i] = Some(entry);
    }

    fn remove(&mut self, id: ConnId) -> Option<Entry> {
        let slot = self.slots.get_mut(id.index as usize)?;
        if slot.as_ref().is_some_and(|e| e.id == id) {
            slot.take()
        } else {
            None
        }
    }
}

/// Protocol classes whose data callbacks are cached per IO thread (a
/// factory that makes a class per connection falls back to per-connection
/// lookups past this many).
const CACHED_CLASSES_MAX: usize = 64;

/// A data callback: a function of the protocol's class, called with the
/// protocol as first argument (no bound-method object per connection), or
/// a callable found on the instance itself.
struct Callback {
    func: Py<PyAny>,
    unbound: bool,
}

/// A protocol's `data_received`, `packet_received` and `packets_received`,
/// looked up when its connection opens.
struct Methods {
    /// The class the functions were found on; holding it keeps its address
    /// (the cache key) from being reused by another class.
    _class: Option<Py<PyAny>>,
    data_received: Option<Callback>,
    packet_received: Option<Callback>,
    /// Set when the protocol takes every packet of one read in one call.
    packets_received: Option<Callback>,
}

impl Callback {
    fn call1<'py>(
        &self,
        py: Python<'py>,
        protocol: &Py<PyAny>,
        arg: Bound<'py, PyAny>,
    ) -> PyResult<Py<PyAny>> {
        if self.unbound {
            self.func.call1(py, (protocol.clone_ref(py), arg))
        } else {
            self.func.call1(py, (arg,))
        }
    }
}

fn callback_names(py: Python<'_>) -> [&Bound<'_, pyo3::types::PyString>; 3] {
    [
        intern!(py, "data_received"),
        intern!(py, "packet_received"),
        intern!(py, "packets_received"),
    ]
}

impl Methods {
    fn from_array(
        class: Option<Py<PyAny>>,
        [data, packet, packets]: [Option<Callback>; 3],
    ) -> Self {
        Methods {
            _class: class,
            data_received: data,
            packet_received: packet,
            packets_received: packets,
        }
    }

    /// The class's plain functions of those names.
    fn of_class(class: &Bound<'_, PyAny>, function_type: &Bound<'_, PyAny>) -> Self {
        let py = class.py();
        let found = callback_names(py).map(|name| {
            class
                .getattr_opt(name)
                .ok()
                .flatten()
                .filter(|f| f.get_type().is(function_type))
                .map(|f| Callback {
                    func: f.unbind(),
                    unbound: true,
                })
        });
        Methods::from_array(Some(class.clone().unbind()), found)
    }

    /// Whether `protocol` sees exactly these functions (its instance does
    /// not shadow or add any of them).
    fn fit(&self, protocol: &Bound<'_, PyAny>) -> bool {
        let py = protocol.py();
        let own = [
            &self.data_received,
            &self.packet_received,
            &self.packets_received,
        ];
        callback_names(py)
            .into_iter()
            .zip(own)
            .all(|(name, cached)| {
                let attr = protocol.getattr_opt(name).ok().flatten();
                match (attr, cached) {
                    (None, None) => true,
                    (Some(attr), Some(cb)) => {
                        let func = attr.getattr_opt(intern!(py, "__func__")).ok().flatten();
                        let this = attr.getattr_opt(intern!(py, "__self__")).ok().flatten();
                        func.is_some_and(|f| f.is(&cb.func)) && this.is_some_and(|s| s.is(protocol))
                    }
                    _ => false,
                }
            })
    }

    /// The instance's own attributes (bound methods or other callables).
    fn of_instance(protocol: &Bound<'_, PyAny>) -> Self {
        let py = protocol.py();
        let found = callback_names(py).map(|name| {
            protocol.getattr_opt(name).ok().flatten().map(|f| Callback {
                func: f.unbind(),
                unbound: false,
            })
        });
        Methods::from_array(None, found)
    }
}

/// A RESP command as Python sees it: `list[bytes]` (an array's arguments)
/// or `bytes` (an inline line without its line ending).
fn resp_command<'py>(py: Python<'py>, data: &[u8]) -> Bound<'py, PyAny> {
    use netring_core::framing::resp::{args, Command};
    match args(data) {
        Command::Inline(line) => PyBytes::new(py, line).into_any(),
        Command::Args(parts) => {
            let items = parts.into_iter().map(|a| PyBytes::new(py, a));
            PyList::new(py, items).map_or_else(|_| py.None().into_bound(py), Bound::into_any)
        }
    }
}

/// Delivers one IO thread's events to Python.
pub struct PyHandler<'py> {
    pub(crate) py: Python<'py>,
    pub(crate) registry: Arc<Registry>,
    conns: ConnTable,
    /// Data callbacks per protocol class (keyed by the class's address).
    classes: HashMap<usize, Rc<Methods>>,
    /// `types.FunctionType`: what a plain method is on its class.
    function_type: Option<Py<PyAny>>,
    /// UDP endpoints (`udp.rs`); ids in their own namespace.
    pub(crate) endpoints: HashMap<ConnId, crate::udp::EndpointEntry>,
    logger: Option<Py<PyAny>>,
    /// The slices of one read's packets (`packets_received`): empty between
    /// reads, its allocation reused.
    run: Vec<&'static [u8]>,
}

/// A handler between the turns of a hosted engine: everything but the GIL
/// token, kept by its owner (`HostedTurns`) and resumed for each turn.
pub struct ParkedHandler {
    registry: Arc<Registry>,
    conns: ConnTable,
    classes: HashMap<usize, Rc<Methods>>,
    function_type: Option<Py<PyAny>>,
    endpoints: HashMap<ConnId, crate::udp::EndpointEntry>,
    logger: Option<Py<PyAny>>,
    run: Vec<&'static [u8]>,
}

impl<'py> PyHandler<'py> {
    /// Keep this handler's state for a later turn.
    pub fn park_state(self) -> ParkedHandler {
        ParkedHandler {
            registry: self.registry,
            conns: self.conns,
            classes: self.classes,
            function_type: self.function_type,
            endpoints: self.endpoints,
            logger: self.logger,
            run: self.run,
        }
    }

    /// The handler `parked` was, with the GIL held again.
    pub fn resume(py: Python<'py>, parked: ParkedHandler) -> Self {
        PyHandler {
            py,
            registry: parked.registry,
            conns: parked.conns,
            classes: parked.classes,
            function_type: parked.function_type,
            endpoints: parked.endpoints,
            logger: parked.logger,
            run: parked.run,
        }
    }
}

/// An empty vector's allocation, reused for slices of another lifetime (the
/// standard library collects a `map` over a vector's own iterator in place).
fn recycle<'a>(mut v: Vec<&[u8]>) -> Vec<&'a [u8]> {
    v.clear();
    v.into_iter()
        .map(|_| -> &'a [u8] { unreachable!() })
        .collect()
}

impl<'py> PyHandler<'py> {
    pub fn new(py: Python<'py>, registry: Arc<Registry>) -> Self {
        let logger = py
            .import("logging")
            .and_then(|m| m.call_method1("getLogger", ("netring",)))
            .map(Bound::unbind)
            .ok();
        PyHandler {
            py,
            registry,
            conns: ConnTable::default(),
            classes: HashMap::new(),
            function_type: py
                .import("types")
                .and_then(|m| m.getattr("FunctionType"))
                .map(Bound::unbind)
                .ok(),
            endpoints: HashMap::new(),
            run: Vec::new(),
            logger,
        }
    }

    /// Log a connection's callback failure (its connection is closed).
    fn log_error(&self, what: &str, peer: Option<SocketAddr>, err: &PyErr) {
        let peer = peer.map_or_else(|| "?".to_string(), |p| p.to_string());
        let message = format!("netring: exception in {what} for {peer}; closing the connection");
        self.log_exception(&message, err);
    }

    /// Log `message` with `err`'s traceback on the `netring` logger.
    pub(crate) fn log_exception(&self, message: &str, err: &PyErr) {
        let py = self.py;
        let logged = self.logger.as_ref().map(|l| {
            let kwargs = PyDict::new(py);
            kwargs.set_item("exc_info", err.value(py))?;
            l.bind(py)
                .call_method("error", ("%s", message), Some(&kwargs))
        });
        if !matches!(logged, Some(Ok(_))) {
            err.print(py);
        }
    }

    /// A callback raised: log it and abort its connection.
    fn fail(&mut self, conn: ConnId, what: &str, err: PyErr) {
        let py = self.py;
        let Some(entry) = self.conns.get_mut(conn) else {
            return;
        };
        let transport = entry.transport.clone_ref(py);
        let transport = transport.get();
        if entry.failure.is_none() {
            entry.failure = Some(Box::new(err.clone_ref(py)));
            transport.mark_lost_soon();
        }
        self.log_error(what, transport.peer(), &err);
        transport.conn_ref().abort_quietly();
    }

    /// An accepted connection: make its protocol from the listener's factory.
    fn opened(&mut self, conn: ConnRef, listener: usize, addrs: Addresses) {
        let py = self.py;
        let entry = self
            .registry
            .listeners()
            .get(&listener)
            .map(|l| (l.factory.clone_ref(py), l.framing.clone(), l.open.clone()));
        let Some((factory, framing, open)) = entry else {
            conn.abort();
            return;
        };
        // NOTE: a factory error was logged and the connection aborted inside.
        let _ = self.start_protocol(conn, addrs, &factory, framing, Some(open));
    }

    /// An outbound connection is up: make its protocol and resolve the
    /// caller's future with `(transport, protocol)`.
    fn connected(&mut self, conn: ConnRef, token: u64, addrs: Addresses) {
        let py = self.py;
        let Some(pending) = self.registry.connects().remove(&token) else {
            conn.abort();
            return;
        };
        let id = conn.id();
        let started =
            self.start_protocol(conn.clone(), addrs, &pending.factory, pending.framing, None);
        let future = pending.future.bind(py);
        match started {
            Ok(pair) => {
                if self.conns.get(id).is_some() {
                    if future
                        .call_method1(intern!(py, "set_result"), (pair,))
                        .is_err()
                    {
                        // The caller cancelled the future meanwhile.
                        conn.abort();
                    }
                } else {
                    let e = pyo3::exceptions::PyConnectionAbortedError::new_err(
                        "connection_made failed; the connection was closed",
                    );
                    let _ = future.call_method1(intern!(py, "set_exception"), (e.into_value(py),));
                }
            }
            Err(e) => {
                let _ = future.call_method1(intern!(py, "set_exception"), (e.into_value(py),));
            }
        }
    }

    /// An outbound connect failed: fail the caller's future.
    fn connect_failed(&mut self, token: u64, error: std::io::Error) {
        let py = self.py;
        let future = self.registry.connects().remove(&token).map(|p| p.future);
        let future = future.or_else(|| self.registry.endpoints().remove(&token).map(|p| p.future));
        if let Some(future) = future {
            let exc = crate::errors::io_error(py, error).into_value(py);
            let _ = future.call_method1(py, intern!(py, "set_exception"), (exc,));
        }
    }

    /// Create the protocol and transport of a new connection and call
    /// `connection_made`. `open` counts it for its listener (accepted
    /// connections). Returns `(transport, protocol)`, or the factory's error
    /// (the connection is then aborted).
    fn start_protocol(
        &mut self,
        conn: ConnRef,
        addrs: Addresses,
        factory: &Py<PyAny>,
        framing: Framing,
        open: Option<Arc<AtomicUsize>>,
    ) -> PyResult<(Py<Transport>, Py<PyAny>)> {
        let py = self.py;
        let id = conn.id();
        let peer = addrs.peer;
        let protocol = factory.call0(py).and_then(|p| {
            Py::new(py, Transport::new(conn.clone(), addrs, framing)).map(|t| (t, p))
        });
        let (transport, protocol) = match protocol {
            Ok(pair) => pair,
            Err(e) => {
                self.log_error("protocol factory", peer, &e);
                conn.abort_quietly();
                return Err(e);
            }
        };
        if let Some(open) = &open {
            // Counted until its Closed event (the entry below decrements).
            open.fetch_add(1, Ordering::AcqRel);
        }
        transport.get().set_protocol_ref(protocol.clone_ref(py));
        let methods = self.methods_for(protocol.bind(py));
        self.conns.insert(Entry {
            id,
            protocol: protocol.clone_ref(py),
            transport: transport.clone_ref(py),
            methods,
            failure: None,
            open,
        });
        let made = protocol.call_method1(
            py,
            intern!(py, "connection_made"),
            (transport.clone_ref(py),),
        );
        if let Err(e) = made {
            self.fail(id, "connection_made", e);
        }
        Ok((transport, protocol))
    }

    /// The data callbacks of a new connection's protocol: its class's,
    /// cached, unless the instance has its own.
    fn methods_for(&mut self, protocol: &Bound<'_, PyAny>) -> Rc<Methods> {
        let class = protocol.get_type().into_any();
        let key = class.as_ptr() as usize;
        let cached = match (self.classes.get(&key), &self.function_type) {
            (Some(m), _) => Some(m.clone()),
            (None, Some(function_type)) => {
                let m = Rc::new(Methods::of_class(&class, function_type.bind(self.py)));
                if self.classes.len() < CACHED_CLASSES_MAX {
                    self.classes.insert(key, m.clone());
                }
                Some(m)
            }
            (None, None) => None,
        };
        match cached {
            Some(m) if m.fit(protocol) => m,
            _ => Rc::new(Methods::of_instance(protocol)),
        }
    }

    /// Deliver a packet, or with `packets_received`, every whole packet of
    /// the same read in one list.
    fn packets<'b>(&mut self, batch: &mut Batch<'b>, conn: ConnId, first: &'b [u8]) {
        let py = self.py;
        let Some(entry) = self.conns.get(conn) else {
            return;
        };
        let resp = entry.transport.get().is_resp();
        let packet = |data: &[u8]| -> Bound<'_, PyAny> {
            if resp {
                resp_command(py, data)
            } else {
                PyBytes::new(py, data).into_any()
            }
        };
        let methods = entry.methods.clone();
        if let Some(method) = &methods.packets_received {
            let mut run = recycle(std::mem::take(&mut self.run));
            run.push(first);
            batch.packets_of(conn, &mut run);
            let list = PyList::new(py, run.iter().map(|data| packet(data)));
            self.run = recycle(run);
            let Ok(list) = list else {
                return;
            };
            self.call(conn, "packets_received", |e| {
                let transport = e.transport.get();
                transport.set_in_batch(true);
                let r = method.call1(py, &e.protocol, list.into_any());
                transport.set_in_batch(false);
                r
            });
            return;
        }
        let bytes = packet(first);
        self.call(conn, "packet_received", |e| {
            match &e.methods.packet_received {
                Some(m) => m.call1(py, &e.protocol, bytes),
                None => e
                    .protocol
                    .call_method1(py, intern!(py, "packet_received"), (bytes,)),
            }
        });
    }

    /// Run a timer's callback; one-shot timers are forgotten first.
    fn timer(&mut self, id: u64) {
        let py = self.py;
        let callback = {
            let mut timers = self.registry.timers();
            match timers.get(&id) {
                Some(t) if t.repeating => Some(t.callback.clone_ref(py)),
                Some(_) => timers.remove(&id).map(|t| t.callback),
                None => None,
            }
        };
        if let Some(callback) = callback {
            if let Err(e) = callback.call0(py) {
                self.log_exception("netring: exception in a timer callback", &e);
            }
        }
    }

    fn call(
        &mut self,
        conn: ConnId,
        name: &str,
        f: impl FnOnce(&Entry) -> PyResult<Py<PyAny>>,
    ) -> Option<Py<PyAny>> {
        let entry = self.conns.get(conn)?;
        if entry.failure.is_some() || entry.transport.get().has_failed() {
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
                    info,
                } => self.opened(conn, listener, Addresses { peer, local, info }),
                Event::Data { conn, data } => {
                    let bytes = PyBytes::new(py, data);
                    self.call(conn, "data_received", |e| match &e.methods.data_received {
                        Some(m) => m.call1(py, &e.protocol, bytes.into_any()),
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
                                if let Some(e) = self.conns.get(conn) {
                                    e.transport.get().close_now();
                                }
                            }
                            Err(err) => self.fail(conn, "eof_received", err),
                        }
                    }
                }
                Event::Timer { id } => self.timer(id),
                Event::Connected {
                    conn,
                    token,
                    peer,
                    local,
                    info,
                } => self.connected(conn, token, Addresses { peer, local, info }),
                Event::ConnectFailed { token, error } => self.connect_failed(token, error),
                Event::IdleTimeout { conn } => {
                    let handled = self.call(conn, "timeout_received", |e| {
                        let p = e.protocol.bind(py);
                        if p.hasattr(intern!(py, "timeout_received"))? {
                            p.call_method0(intern!(py, "timeout_received"))
                                .map(Bound::unbind)
                        } else {
                            // asyncio protocols know no idle timeouts: close.
                            e.transport.get().close_now();
                            Ok(py.None())
                        }
                    });
                    drop(handled);
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
                Event::FrameError { conn, error } => {
                    // A protocol may answer bad input before the close (e.g.
                    // Redis's "-ERR Protocol error: ..."): framing_error(exc).
                    self.call(conn, "framing_error", |e| {
                        let p = e.protocol.bind(py);
                        if p.hasattr(intern!(py, "framing_error"))? {
                            let exc = crate::errors::conn_error(
                                py,
                                netring_core::conn::ConnError::Frame(error),
                            );
                            p.call_method1(intern!(py, "framing_error"), (exc.into_value(py),))
                                .map(Bound::unbind)
                        } else {
                            Ok(py.None())
                        }
                    });
                }
                Event::EndpointOpened {
                    endpoint,
                    token,
                    local,
                    peer,
                } => self.endpoint_opened(endpoint, token, local, peer),
                Event::Datagram {
                    endpoint,
                    data,
                    addr,
                } => self.datagram(endpoint, data, addr),
                Event::DatagramTruncated {
                    endpoint,
                    addr,
                    size,
                } => self.datagram_truncated(endpoint, addr, size),
                Event::DatagramError { endpoint, error } => self.datagram_error(endpoint, error),
                Event::EndpointPauseWriting { endpoint } => self.endpoint_writing(endpoint, true),
                Event::EndpointResumeWriting { endpoint } => self.endpoint_writing(endpoint, false),
                Event::EndpointClosed { endpoint, error } => self.endpoint_closed(endpoint, error),
                Event::Closed { conn, error } => {
                    let Some(entry) = self.conns.remove(conn) else {
                        continue;
                    };
                    if let Some(open) = &entry.open {
                        open.fetch_sub(1, Ordering::AcqRel);
                    }
                    let transport = entry.transport.get();
                    transport.mark_lost();
                    let exc: Option<PyErr> = entry
                        .failure
                        .map(|e| *e)
                        .or_else(|| transport.take_failure())
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
#[cfg(test)]
mod size_tests {
    /// Per-connection bookkeeping on the Python side: rare state (a
    /// callback's exception, a framing rule) is boxed so that idle
    /// connections stay small; `make bench-limits` shows the total.
    #[test]
    fn per_connection_state_stays_small() {
        let entry = std::mem::size_of::<super::Entry>();
        let transport = std::mem::size_of::<crate::transport::Transport>();
        assert!(entry <= 64, "Entry grew to {entry} bytes");
        assert!(transport <= 104, "Transport grew to {transport} bytes");
    }
}
