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

use pyo3::buffer::PyUntypedBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
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
    /// `get_extra_info("sslcontext")` of its TLS connections.
    pub tls_context: Option<Py<PyAny>>,
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
    /// `get_extra_info("sslcontext")` once connected with TLS.
    pub tls_context: Option<Py<PyAny>>,
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

/// A protocol's `data_received`, `packet_received` and `packets_received`
/// (and an asyncio `BufferedProtocol`'s `get_buffer` / `buffer_updated`),
/// looked up when its connection opens, or when `set_protocol()` gives it.
struct Methods {
    /// The class the functions were found on; holding it keeps its address
    /// (the cache key) from being reused by another class.
    _class: Option<Py<PyAny>>,
    /// What each of `callback_names` was found to be on the class (what
    /// `fit` compares an instance's attributes with).
    found: [Option<Py<PyAny>>; 5],
    /// Whether an instance's `get_buffer` / `buffer_updated` could change
    /// how it is fed (not when its class's own `data_received` decides):
    /// `fit` looks them up only then, so a plain protocol's connections
    /// cost no more lookups than before.
    fit_buffer: bool,
    /// Unset for a buffered protocol (`buffered`).
    data_received: Option<Callback>,
    packet_received: Option<Callback>,
    /// Set when the protocol takes every packet of one read in one call.
    packets_received: Option<Callback>,
    /// Set when received chunks are copied into the protocol's own buffer.
    buffered: Option<Buffered>,
}

/// An asyncio `BufferedProtocol`'s pair: raw chunks are copied into the
/// buffer `get_buffer(sizehint)` returns, then `buffer_updated(nbytes)`.
struct Buffered {
    get_buffer: Callback,
    buffer_updated: Callback,
}

/// `asyncio.BufferedProtocol`: its subclasses are fed through their buffer
/// whatever else they define, as asyncio feeds them.
static BUFFERED_PROTOCOL: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
/// `netring.Protocol.data_received` (which does nothing): a protocol that
/// only inherits it and has a buffer is fed through its buffer.
static PLACEHOLDER_DATA: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

impl Buffered {
    /// Copy what fits of `data` into the protocol's buffer and report it;
    /// returns how many bytes were taken (at least one), or the failure and
    /// the callback it is blamed on. A buffer that is empty, read-only or
    /// not contiguous fails the connection, as in asyncio.
    fn feed(
        &self,
        py: Python<'_>,
        protocol: &Py<PyAny>,
        data: &[u8],
    ) -> Result<usize, (&'static str, PyErr)> {
        let hint = data.len().into_pyobject(py).unwrap_or_else(|e| match e {});
        let buf = self
            .get_buffer
            .call1(py, protocol, hint.into_any())
            .map_err(|e| ("get_buffer", e))?;
        let n = copy_into(buf.bind(py), data).map_err(|e| ("get_buffer", e))?;
        drop(buf); // (its export is released: buffer_updated may resize it)
        let n_obj = n.into_pyobject(py).unwrap_or_else(|e| match e {});
        self.buffer_updated
            .call1(py, protocol, n_obj.into_any())
            .map_err(|e| ("buffer_updated", e))?;
        Ok(n)
    }
}

/// Copy the start of `data` into the writable buffer `target` exports;
/// returns how many bytes (the smaller length). The export is released
/// before returning.
fn copy_into(target: &Bound<'_, PyAny>, data: &[u8]) -> PyResult<usize> {
    let py = target.py();
    let writable = || {
        let kind = target
            .get_type()
            .name()
            .map_or_else(|_| "?".to_string(), |n| n.to_string());
        PyTypeError::new_err(format!(
            "get_buffer() must return a writable, contiguous buffer (a bytearray or a \
             memoryview of one), not {kind}"
        ))
    };
    let buf = PyUntypedBuffer::get(target).map_err(|_| writable())?;
    if buf.readonly() || !buf.is_c_contiguous() {
        return Err(writable());
    }
    let len = buf.len_bytes();
    if len == 0 {
        return Err(PyRuntimeError::new_err(
            "get_buffer() returned an empty buffer",
        ));
    }
    let n = len.min(data.len());
    // SAFETY: the export is writable, C-contiguous and `len >= n` bytes
    // long; it is held (the exporter cannot free or resize that memory)
    // until released below, and no Python code runs in between. `data` is
    // the engine's receive buffer, which Python code never sees.
    unsafe {
        std::ptr::copy_nonoverlapping(data.as_ptr(), buf.buf_ptr().cast::<u8>(), n);
    }
    buf.release(py);
    Ok(n)
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

fn callback_names(py: Python<'_>) -> [&Bound<'_, pyo3::types::PyString>; 5] {
    [
        intern!(py, "data_received"),
        intern!(py, "packet_received"),
        intern!(py, "packets_received"),
        intern!(py, "get_buffer"),
        intern!(py, "buffer_updated"),
    ]
}

/// Whether `f` (a function, or a bound method) is `netring.Protocol`'s
/// placeholder `data_received`.
fn is_placeholder(py: Python<'_>, f: &Py<PyAny>) -> bool {
    let placeholder = PLACEHOLDER_DATA.get_or_try_init(py, || {
        py.import("netring.protocol")?
            .getattr("Protocol")?
            .getattr("data_received")
            .map(Bound::unbind)
    });
    let Ok(placeholder) = placeholder else {
        return false;
    };
    let (f, placeholder) = (f.bind(py), placeholder.bind(py));
    f.is(placeholder)
        || f.getattr_opt(intern!(py, "__func__"))
            .ok()
            .flatten()
            .is_some_and(|inner| inner.is(placeholder))
}

impl Methods {
    /// `buffered_protocol`: the protocol is an `asyncio.BufferedProtocol`.
    fn from_array(
        py: Python<'_>,
        class: Option<Py<PyAny>>,
        [data, packet, packets, get_buffer, buffer_updated]: [Option<Callback>; 5],
        buffered_protocol: bool,
    ) -> Self {
        let found = [&data, &packet, &packets, &get_buffer, &buffer_updated]
            .map(|cb| cb.as_ref().map(|cb| cb.func.clone_ref(py)));
        let fit_buffer =
            buffered_protocol || data.as_ref().is_none_or(|d| is_placeholder(py, &d.func));
        // A protocol with a buffer is fed through it unless it has a
        // data_received of its own (asyncio: unless it is no
        // BufferedProtocol).
        let (data, buffered) = match (get_buffer, buffer_updated) {
            (Some(get_buffer), Some(buffer_updated)) if fit_buffer => {
                let pair = Buffered {
                    get_buffer,
                    buffer_updated,
                };
                (None, Some(pair))
            }
            _ => (data, None),
        };
        Methods {
            _class: class,
            found,
            fit_buffer,
            data_received: data,
            packet_received: packet,
            packets_received: packets,
            buffered,
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
        let buffered_protocol = BUFFERED_PROTOCOL
            .import(py, "asyncio", "BufferedProtocol")
            .ok()
            .and_then(|bp| {
                class
                    .cast::<pyo3::types::PyType>()
                    .ok()?
                    .is_subclass(bp)
                    .ok()
            })
            .unwrap_or(false);
        Methods::from_array(py, Some(class.clone().unbind()), found, buffered_protocol)
    }

    /// Whether `protocol` sees exactly these functions (its instance does
    /// not shadow or add any of them).
    fn fit(&self, protocol: &Bound<'_, PyAny>) -> bool {
        let py = protocol.py();
        let names = if self.fit_buffer { 5 } else { 3 };
        callback_names(py)
            .into_iter()
            .zip(&self.found)
            .take(names)
            .all(|(name, cached)| {
                let attr = protocol.getattr_opt(name).ok().flatten();
                match (attr, cached) {
                    (None, None) => true,
                    (Some(attr), Some(cached)) => {
                        let func = attr.getattr_opt(intern!(py, "__func__")).ok().flatten();
                        let this = attr.getattr_opt(intern!(py, "__self__")).ok().flatten();
                        func.is_some_and(|f| f.is(cached)) && this.is_some_and(|s| s.is(protocol))
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
        let buffered_protocol = BUFFERED_PROTOCOL
            .import(py, "asyncio", "BufferedProtocol")
            .ok()
            .and_then(|bp| protocol.is_instance(bp).ok())
            .unwrap_or(false);
        Methods::from_array(py, None, found, buffered_protocol)
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
    fn opened(&mut self, conn: ConnRef, listener: usize, mut addrs: Addresses) {
        let py = self.py;
        let entry = self.registry.listeners().get(&listener).map(|l| {
            if addrs.info.is_some() {
                addrs.context = l.tls_context.as_ref().map(|c| c.clone_ref(py));
            }
            (l.factory.clone_ref(py), l.framing.clone(), l.open.clone())
        });
        let Some((factory, framing, open)) = entry else {
            conn.abort();
            return;
        };
        // NOTE: a factory error was logged and the connection aborted inside.
        let _ = self.start_protocol(conn, addrs, &factory, framing, Some(open));
    }

    /// An outbound connection is up: make its protocol and resolve the
    /// caller's future with `(transport, protocol)`.
    fn connected(&mut self, conn: ConnRef, token: u64, mut addrs: Addresses) {
        let py = self.py;
        let Some(mut pending) = self.registry.connects().remove(&token) else {
            conn.abort();
            return;
        };
        addrs.context = pending.tls_context.take();
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
        let Some(mut entry) = self.conns.get(conn) else {
            return;
        };
        if entry.transport.get().needs_check() {
            self.switch_protocol(conn); // set_protocol() gave a new one
            let Some(switched) = self.conns.get(conn) else {
                return;
            };
            entry = switched;
        }
        let resp = entry.transport.get().is_resp();
        let packet = |batch: &mut Batch<'b>, data: &[u8]| -> Bound<'_, PyAny> {
            if resp {
                resp_command(py, data)
            } else {
                packet_bytes(py, batch, data)
            }
        };
        let methods = entry.methods.clone();
        if let Some(method) = &methods.packets_received {
            let mut run = recycle(std::mem::take(&mut self.run));
            run.push(first);
            batch.packets_of(conn, &mut run);
            let list = PyList::new(py, run.iter().map(|data| packet(batch, data)));
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
        let bytes = packet(batch, first);
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

    /// Run `f` (a callback named `name`) on `conn`'s entry unless a
    /// callback of it failed; its exception fails the connection.
    fn call(
        &mut self,
        conn: ConnId,
        name: &str,
        f: impl FnOnce(&Entry) -> PyResult<Py<PyAny>>,
    ) -> Option<Py<PyAny>> {
        let entry = self.conns.get(conn)?;
        if entry.failure.is_some() {
            return None;
        }
        if entry.transport.get().needs_check() {
            return self.call_checked(conn, |e| f(e).map_err(|err| (name, err)));
        }
        match f(entry) {
            Ok(r) => Some(r),
            Err(e) => {
                self.fail(conn, name, e);
                None
            }
        }
    }

    /// `call` for `f`s that name the callback that failed themselves.
    fn call_named<'n>(
        &mut self,
        conn: ConnId,
        f: impl FnOnce(&Entry) -> Result<Py<PyAny>, (&'n str, PyErr)>,
    ) -> Option<Py<PyAny>> {
        let entry = self.conns.get(conn)?;
        if entry.failure.is_some() {
            return None;
        }
        if entry.transport.get().needs_check() {
            return self.call_checked(conn, f);
        }
        match f(entry) {
            Ok(r) => Some(r),
            Err((name, e)) => {
                self.fail(conn, name, e);
                None
            }
        }
    }

    /// A call's rare path: a callback failed inside a transport method (no
    /// more callbacks), or `set_protocol()` gave a new protocol (switch).
    #[cold]
    #[inline(never)]
    fn call_checked<'n>(
        &mut self,
        conn: ConnId,
        f: impl FnOnce(&Entry) -> Result<Py<PyAny>, (&'n str, PyErr)>,
    ) -> Option<Py<PyAny>> {
        if self.conns.get(conn)?.transport.get().has_failed() {
            return None;
        }
        self.switch_protocol(conn);
        let entry = self.conns.get(conn)?;
        match f(entry) {
            Ok(r) => Some(r),
            Err((name, e)) => {
                self.fail(conn, name, e);
                None
            }
        }
    }

    /// Later callbacks of `conn` go to the protocol `set_protocol()` gave,
    /// through its class's methods.
    fn switch_protocol(&mut self, conn: ConnId) {
        let py = self.py;
        let Some(entry) = self.conns.get(conn) else {
            return;
        };
        let Some(protocol) = entry.transport.get().take_new_protocol(py) else {
            return;
        };
        let methods = self.methods_for(protocol.bind(py));
        if let Some(entry) = self.conns.get_mut(conn) {
            let old = std::mem::replace(&mut entry.protocol, protocol);
            entry.methods = methods;
            drop(old);
        }
    }

    /// A raw chunk off the fast path: a callback failed, a new protocol
    /// to switch to, or no `data_received` function of the class's. A
    /// buffered protocol's buffer takes what fits and the rest goes back to
    /// the engine, which delivers it again next, as the connection is then
    /// (paused: held; a new protocol or framing: theirs; closing: dropped).
    #[inline(never)]
    fn data_otherwise<'b>(&mut self, batch: &mut Batch<'b>, conn: ConnId, data: &'b [u8]) {
        let py = self.py;
        let mut rest: &[u8] = &[];
        self.call_named(conn, |e| {
            match (&e.methods.data_received, &e.methods.buffered) {
                (Some(m), _) => m
                    .call1(py, &e.protocol, PyBytes::new(py, data).into_any())
                    .map_err(|err| ("data_received", err)),
                (None, Some(b)) => b.feed(py, &e.protocol, data).map(|n| {
                    rest = &data[n..];
                    py.None()
                }),
                (None, None) => e
                    .protocol
                    .call_method1(py, intern!(py, "data_received"), (PyBytes::new(py, data),))
                    .map_err(|err| ("data_received", err)),
            }
        });
        if !rest.is_empty() && !batch.unread(conn, rest) {
            self.feed_rest(conn, rest);
        }
    }

    /// Feed the rest of a raw chunk that could not be given back to the
    /// engine (bytes re-framed after a rule change) to a buffered protocol
    /// here, until it is used up or the connection closes.
    #[cold]
    fn feed_rest(&mut self, conn: ConnId, mut rest: &[u8]) {
        let py = self.py;
        while !rest.is_empty() {
            let mut used = None;
            self.call_named(conn, |e| {
                if e.transport.get().closing() {
                    return Ok(py.None());
                }
                match (&e.methods.data_received, &e.methods.buffered) {
                    (None, Some(b)) => b.feed(py, &e.protocol, rest).map(|n| {
                        used = Some(n);
                        py.None()
                    }),
                    (Some(m), _) => m
                        .call1(py, &e.protocol, PyBytes::new(py, rest).into_any())
                        .map_err(|err| ("data_received", err)),
                    (None, None) => e
                        .protocol
                        .call_method1(py, intern!(py, "data_received"), (PyBytes::new(py, rest),))
                        .map_err(|err| ("data_received", err)),
                }
            });
            let Some(n) = used else {
                return;
            };
            rest = &rest[n..];
        }
    }
}

impl Handler for PyHandler<'_> {
    fn dispatch(&mut self, batch: &mut Batch<'_>) {
        let py = self.py;
        let mut joined = Vec::new();
        while let Some(ev) = batch.next() {
            match ev {
                Event::Opened {
                    conn,
                    listener,
                    peer,
                    local,
                    info,
                } => self.opened(
                    conn,
                    listener,
                    Addresses {
                        peer,
                        local,
                        info,
                        context: None,
                    },
                ),
                Event::Data { conn, data } => {
                    // The fast path: a class's data_received, nothing to check.
                    let Some(e) = self.conns.get(conn) else {
                        continue;
                    };
                    if let (None, false, Some(m)) = (
                        &e.failure,
                        e.transport.get().needs_check(),
                        &e.methods.data_received,
                    ) {
                        // A stream's reads that arrived together (a large
                        // message over several receive buffers) become one
                        // `bytes` and one call, as asyncio's 256 KiB reads.
                        joined.clear();
                        let room = JOIN_MAX_BYTES.saturating_sub(data.len());
                        let more = batch.more_data(conn, &mut joined, room);
                        let bytes = if more == 0 {
                            PyBytes::new(py, data)
                        } else {
                            join_bytes(py, data, &joined, more)
                        };
                        if let Err(err) = m.call1(py, &e.protocol, bytes.into_any()) {
                            self.fail(conn, "data_received", err);
                        }
                        continue;
                    }
                    self.data_otherwise(batch, conn, data);
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
                Event::FileSent { conn } => {
                    if let Some(e) = self.conns.get(conn) {
                        e.transport.get().file_sent(py);
                    }
                }
                Event::Connected {
                    conn,
                    token,
                    peer,
                    local,
                    info,
                } => self.connected(
                    conn,
                    token,
                    Addresses {
                        peer,
                        local,
                        info,
                        context: None,
                    },
                ),
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
                    let Some(mut entry) = self.conns.remove(conn) else {
                        continue;
                    };
                    if let Some(open) = &entry.open {
                        open.fetch_sub(1, Ordering::AcqRel);
                    }
                    let transport = entry.transport.get();
                    if let Some(protocol) = transport.take_new_protocol(py) {
                        entry.protocol = protocol; // set_protocol() gave it
                    }
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
                    transport.finish_lost(py);
                }
            }
        }
    }

    fn park<R: Send>(&mut self, wait: impl FnOnce() -> R + Send) -> R {
        self.py.detach(wait)
    }
}

/// The `bytes` a packet is delivered as: the one it was built in when the
/// engine reassembled it in one of ours (`BytesAlloc`: copied once), else a
/// copy of it.
fn packet_bytes<'py>(py: Python<'py>, batch: &mut Batch<'_>, data: &[u8]) -> Bound<'py, PyAny> {
    if data.len() >= netring_core::framing::BUILD_MIN_BYTES {
        if let Some(built) = batch.take_built(data) {
            if let Ok(buf) = built.into_any().downcast::<BytesBuf>() {
                return buf.obj.into_bound(py).into_any();
            }
        }
    }
    PyBytes::new(py, data).into_any()
}

/// The engine's `PacketAlloc`: large packets of a known size are
/// reassembled straight into a new `bytes` of that size (called on the IO
/// thread while it holds the GIL, in the middle of a dispatch).
#[derive(Debug)]
pub struct BytesAlloc;

impl netring_core::framing::PacketAlloc for BytesAlloc {
    fn alloc(&self, len: usize) -> Option<Box<dyn netring_core::framing::PacketBuf>> {
        Python::attach(|py| {
            // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new,
            // uninitialised `bytes` of n bytes, or NULL with MemoryError set
            // (cleared here: the engine then reassembles as usual). Nobody
            // else sees it until every byte is written (`BytesBuf`).
            unsafe {
                let obj = pyo3::ffi::PyBytes_FromStringAndSize(
                    std::ptr::null(),
                    len as pyo3::ffi::Py_ssize_t,
                );
                if obj.is_null() {
                    drop(PyErr::take(py));
                    return None;
                }
                let ptr = pyo3::ffi::PyBytes_AsString(obj) as *mut u8;
                let obj = Bound::from_owned_ptr(py, obj)
                    .cast_into_unchecked::<PyBytes>()
                    .unbind();
                Some(Box::new(BytesBuf { obj, ptr, len })
                    as Box<dyn netring_core::framing::PacketBuf>)
            }
        })
    }
}

/// A `bytes` being filled by the engine's decoder (see `BytesAlloc`).
#[derive(Debug)]
struct BytesBuf {
    obj: Py<PyBytes>,
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the object is not shared with anyone until the decoder hands it
// back complete (`packet_bytes`); until then only the IO thread that owns
// the connection writes through `ptr`, inside the object's storage, which
// never moves while `obj` holds the only reference.
unsafe impl Send for BytesBuf {}

impl netring_core::framing::PacketBuf for BytesBuf {
    fn bytes(&self) -> &[u8] {
        // SAFETY: see the `Send` impl.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: see the `Send` impl; `&mut self` is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }
}

/// The most bytes one `data_received` call gets from reads joined together
/// (asyncio's and uvloop's read size).
const JOIN_MAX_BYTES: usize = 256 * 1024;

/// One `bytes` of `first` followed by `rest` (`more` bytes in all), each
/// copied once into it.
fn join_bytes<'py>(
    py: Python<'py>,
    first: &[u8],
    rest: &[&[u8]],
    more: usize,
) -> Bound<'py, PyBytes> {
    let len = first.len() + more;
    // NOTE: `PyBytes::new_with` zero-fills first; every byte is written here.
    // SAFETY: PyBytes_FromStringAndSize(NULL, n) returns a new, uninitialised
    // `bytes` of n bytes (or NULL with an exception set, turned into a panic
    // as pyo3's own constructors do on allocation failure); it is not shared
    // yet, so filling it through PyBytes_AsString before anyone sees it is
    // the documented way to build one.
    unsafe {
        let obj =
            pyo3::ffi::PyBytes_FromStringAndSize(std::ptr::null(), len as pyo3::ffi::Py_ssize_t);
        let obj = Bound::from_owned_ptr(py, obj).cast_into_unchecked::<PyBytes>();
        let mut at = pyo3::ffi::PyBytes_AsString(obj.as_ptr()) as *mut u8;
        for part in std::iter::once(first).chain(rest.iter().copied()) {
            std::ptr::copy_nonoverlapping(part.as_ptr(), at, part.len());
            at = at.add(part.len());
        }
        obj
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
