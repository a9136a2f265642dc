//! UDP in Python: `netring._native.DatagramTransport` (asyncio's
//! `DatagramTransport` interface over an engine endpoint) and the delivery
//! of endpoint events to `asyncio.DatagramProtocol`-shaped protocols.
//!
//! Isolation: an exception in `datagram_received` / `error_received` is
//! logged with the sender's address and the endpoint keeps serving (one bad
//! datagram from one peer must not stop a server every peer shares); an
//! exception in `connection_made` aborts the endpoint and fails the
//! caller's future.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView, PyTuple};

use netring_core::config::DEFAULT_WRITE_HIGH_WATER_BYTES;
use netring_core::{ConnId, EndpointRef, Written};

use crate::dispatch::PyHandler;
use crate::transport::address;
use crate::util::lock;

/// A UDP endpoint's transport (asyncio `DatagramTransport` interface).
///
/// Thread safety as `Transport`: any thread; on the endpoint's IO thread
/// operations apply at once, elsewhere through its mailbox, in order.
#[pyclass(frozen, module = "netring._native")]
pub struct DatagramTransport {
    ep: EndpointRef,
    local: Option<SocketAddr>,
    peer: Option<SocketAddr>,
    closing: AtomicBool,
    reading_paused: AtomicBool,
    high_water: AtomicUsize,
    low_water: AtomicUsize,
    protocol: std::sync::Mutex<Option<Py<PyAny>>>,
    /// Senders' addresses as Python tuples, and back: an echo passes the
    /// tuple it was given straight to `sendto`, so neither side formats or
    /// parses an address string per datagram.
    addrs: std::sync::Mutex<AddrCache>,
}

/// Most sender addresses remembered per endpoint; past it the cache starts
/// over (memory stays bounded whatever the senders).
const ADDR_CACHE_ENTRIES: usize = 1024;

#[derive(Default)]
struct AddrCache {
    objects: std::collections::HashMap<SocketAddr, Py<PyAny>>,
    /// Tuple object identity → address. Valid while `objects` holds the
    /// tuple (the two maps are cleared together).
    parsed: std::collections::HashMap<usize, SocketAddr>,
}

impl DatagramTransport {
    pub fn new(ep: EndpointRef, local: Option<SocketAddr>, peer: Option<SocketAddr>) -> Self {
        DatagramTransport {
            ep,
            local,
            peer,
            closing: AtomicBool::new(false),
            reading_paused: AtomicBool::new(false),
            high_water: AtomicUsize::new(DEFAULT_WRITE_HIGH_WATER_BYTES),
            low_water: AtomicUsize::new(DEFAULT_WRITE_HIGH_WATER_BYTES / 4),
            protocol: std::sync::Mutex::new(None),
            addrs: Default::default(),
        }
    }

    /// `addr` as a Python `(host, port)` tuple, cached.
    fn addr_object(&self, py: Python<'_>, addr: SocketAddr) -> Py<PyAny> {
        let mut cache = lock(&self.addrs);
        if let Some(obj) = cache.objects.get(&addr) {
            return obj.clone_ref(py);
        }
        let obj = match address(py, Some(addr)) {
            Ok(Some(t)) => t.into_any().unbind(),
            _ => return py.None(),
        };
        if cache.objects.len() >= ADDR_CACHE_ENTRIES {
            cache.objects.clear();
            cache.parsed.clear();
        }
        cache.parsed.insert(obj.as_ptr() as usize, addr);
        cache.objects.insert(addr, obj.clone_ref(py));
        obj
    }

    /// `addr` parsed, from the cache when it is a tuple we handed out.
    fn parse_cached(&self, addr: &Bound<'_, PyAny>) -> PyResult<SocketAddr> {
        let key = addr.as_ptr() as usize;
        if let Some(a) = lock(&self.addrs).parsed.get(&key) {
            return Ok(*a);
        }
        parse_addr(addr)
    }

    fn protocol(&self) -> Option<Py<PyAny>> {
        Python::attach(|py| lock(&self.protocol).as_ref().map(|p| p.clone_ref(py)))
    }
}

/// `(host, port)` (IP literal) → a socket address, with a precise error.
fn parse_addr(addr: &Bound<'_, PyAny>) -> PyResult<SocketAddr> {
    let tuple = addr.cast::<PyTuple>().map_err(|_| {
        PyTypeError::new_err(format!(
            "addr: must be a (host, port) tuple, not {}",
            addr.get_type().name().map_or("?".into(), |n| n.to_string())
        ))
    })?;
    if tuple.len() < 2 {
        return Err(PyValueError::new_err("addr: must be a (host, port) tuple"));
    }
    let host: String = tuple.get_item(0)?.extract()?;
    let port: u16 = tuple
        .get_item(1)?
        .extract()
        .map_err(|_| PyValueError::new_err("addr: port must be an int in 0..=65535"))?;
    let ip: std::net::IpAddr = host.parse().map_err(|_| {
        PyValueError::new_err(format!(
            "addr: {host:?} is not an IP address (resolve names before sendto)"
        ))
    })?;
    Ok(SocketAddr::new(ip, port))
}

#[pymethods]
impl DatagramTransport {
    /// Send `data` as one datagram to `addr` (`(host, port)`, an IP
    /// address), or to the endpoint's `remote_addr` when `addr` is None.
    /// Never blocks: datagrams queue in order; past `max_send_queue` bytes
    /// queued they are dropped and counted (`datagrams_dropped` in stats).
    #[pyo3(signature = (data, addr=None))]
    fn sendto(&self, data: &Bound<'_, PyAny>, addr: Option<&Bound<'_, PyAny>>) -> PyResult<()> {
        let to = match addr {
            None if self.peer.is_none() => {
                return Err(PyValueError::new_err(
                    "addr: required, the endpoint has no remote_addr",
                ))
            }
            None => None,
            Some(a) if a.is_none() && self.peer.is_none() => {
                return Err(PyValueError::new_err(
                    "addr: required, the endpoint has no remote_addr",
                ))
            }
            Some(a) if a.is_none() => None,
            Some(a) => {
                let to = self.parse_cached(a)?;
                if let Some(peer) = self.peer {
                    if to != peer {
                        return Err(PyValueError::new_err(format!(
                            "addr: must be None or {peer} (the endpoint's remote_addr)"
                        )));
                    }
                    None
                } else {
                    Some(to)
                }
            }
        };
        if self.closing.load(Ordering::Acquire) {
            return Ok(());
        }
        let written = if let Ok(b) = data.cast::<PyBytes>() {
            self.ep.send_to(b.as_bytes(), to)
        } else if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
            let buf = pyo3::buffer::PyBuffer::<u8>::get(data)?;
            self.ep.send_to(&buf.to_vec(data.py())?, to)
        } else {
            return Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not '{}'",
                data.get_type().name()?
            )));
        };
        if written == Written::CrossedHigh {
            if let Some(p) = self.protocol() {
                Python::attach(|py| {
                    if let Err(e) = p.call_method0(py, intern!(py, "pause_writing")) {
                        e.print(py);
                    }
                });
            }
        }
        Ok(())
    }

    /// Send what is queued, then close; `connection_lost(None)` follows.
    fn close(&self) {
        if !self.closing.swap(true, Ordering::AcqRel) {
            self.ep.close();
        }
    }

    /// Drop what is queued and close now; `connection_lost(None)` follows.
    fn abort(&self) {
        self.closing.store(true, Ordering::Release);
        self.ep.abort();
    }

    /// True once `close()`/`abort()` was called or the endpoint is gone.
    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::Acquire)
    }

    /// Stop calling `datagram_received` until `resume_reading()`
    /// (datagrams wait in the kernel's socket buffer; past it, the kernel
    /// drops them).
    fn pause_reading(&self) {
        if !self.reading_paused.swap(true, Ordering::AcqRel) {
            self.ep.set_reading_paused(true);
        }
    }

    /// Resume `datagram_received` calls.
    fn resume_reading(&self) {
        if self.reading_paused.swap(false, Ordering::AcqRel) {
            self.ep.set_reading_paused(false);
        }
    }

    /// False while reading is paused or after close.
    fn is_reading(&self) -> bool {
        !self.reading_paused.load(Ordering::Acquire) && !self.closing.load(Ordering::Acquire)
    }

    /// Bytes queued and not yet taken by the kernel.
    fn get_write_buffer_size(&self) -> usize {
        self.ep.write_buffer_size()
    }

    /// (low, high) water marks.
    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (
            self.low_water.load(Ordering::Relaxed),
            self.high_water.load(Ordering::Relaxed),
        )
    }

    /// Water marks for `pause_writing()` / `resume_writing()` (asyncio's
    /// defaults: high 64 KiB or 4 × low, low = high / 4).
    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(&self, high: Option<i64>, low: Option<i64>) -> PyResult<()> {
        let high = match (high, low) {
            (Some(h), _) => h,
            (None, Some(l)) => 4 * l,
            (None, None) => DEFAULT_WRITE_HIGH_WATER_BYTES as i64,
        };
        let low = low.unwrap_or(high / 4);
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        self.high_water.store(high as usize, Ordering::Relaxed);
        self.low_water.store(low as usize, Ordering::Relaxed);
        self.ep.set_write_limits(high as usize, low as usize);
        Ok(())
    }

    /// `sockname`, `peername` (the remote_addr, if any), or `default`.
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        let addr = match name {
            "peername" => self.peer,
            "sockname" => self.local,
            _ => return Ok(default),
        };
        Ok(address(py, addr)?.map(Bound::into_any).or(default))
    }

    /// The protocol this transport feeds.
    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let _ = py;
        self.protocol()
    }

    fn __repr__(&self) -> String {
        let local = self.local.map_or("?".to_string(), |p| p.to_string());
        let state = if self.closing.load(Ordering::Acquire) {
            "closing"
        } else {
            "open"
        };
        format!("<netring.DatagramTransport {local} {state}>")
    }
}

/// An endpoint waiting for its `EndpointOpened`.
pub struct PendingEndpoint {
    pub factory: Py<PyAny>,
    /// A `concurrent.futures.Future` for `(transport, protocol)`.
    pub future: Py<PyAny>,
    /// Receive-buffer size (for the truncation report).
    pub capacity: usize,
}

/// One endpoint as the dispatcher sees it.
pub struct EndpointEntry {
    protocol: Py<PyAny>,
    transport: Py<DatagramTransport>,
    datagram_received: Option<Py<PyAny>>,
    capacity: usize,
}

impl PyHandler<'_> {
    pub(crate) fn endpoint_opened(
        &mut self,
        ep: EndpointRef,
        token: u64,
        local: Option<SocketAddr>,
        peer: Option<SocketAddr>,
    ) {
        let py = self.py;
        let Some(pending) = self.registry.endpoints().remove(&token) else {
            ep.abort();
            return;
        };
        let future = pending.future.bind(py);
        let id = ep.id();
        let made = pending.factory.call0(py).and_then(|protocol| {
            let transport = Py::new(py, DatagramTransport::new(ep.clone(), local, peer))?;
            *lock(&transport.get().protocol) = Some(protocol.clone_ref(py));
            let datagram_received = protocol.getattr(py, intern!(py, "datagram_received")).ok();
            self.endpoints.insert(
                id,
                EndpointEntry {
                    protocol: protocol.clone_ref(py),
                    transport: transport.clone_ref(py),
                    datagram_received,
                    capacity: pending.capacity,
                },
            );
            protocol.call_method1(
                py,
                intern!(py, "connection_made"),
                (transport.clone_ref(py),),
            )?;
            Ok((transport, protocol))
        });
        match made {
            Ok(pair) => {
                if future
                    .call_method1(intern!(py, "set_result"), (pair,))
                    .is_err()
                {
                    ep.abort(); // the caller cancelled the future meanwhile
                }
            }
            Err(e) => {
                let where_ = local.map_or("?".to_string(), |a| a.to_string());
                self.log_exception(
                    &format!(
                        "netring: exception starting the UDP endpoint on {where_}; closing it"
                    ),
                    &e,
                );
                if let Some(entry) = self.endpoints.get(&id) {
                    entry.transport.get().closing.store(true, Ordering::Release);
                }
                ep.abort();
                let _ = future.call_method1(intern!(py, "set_exception"), (e.into_value(py),));
            }
        }
    }

    /// The Python form of a sender's address (cached per endpoint).
    fn addr_object(&mut self, id: ConnId, addr: Option<SocketAddr>) -> Py<PyAny> {
        let py = self.py;
        match (addr, self.endpoints.get(&id)) {
            (Some(addr), Some(entry)) => entry.transport.get().addr_object(py, addr),
            _ => py.None(),
        }
    }

    pub(crate) fn datagram(&mut self, id: ConnId, data: &[u8], addr: Option<SocketAddr>) {
        let py = self.py;
        if !self.endpoints.contains_key(&id) {
            return;
        }
        let addr_obj = self.addr_object(id, addr);
        let entry = &self.endpoints[&id];
        let bytes = PyBytes::new(py, data);
        let r = match &entry.datagram_received {
            Some(m) => m.call1(py, (bytes, addr_obj)),
            None => {
                entry
                    .protocol
                    .call_method1(py, intern!(py, "datagram_received"), (bytes, addr_obj))
            }
        };
        if let Err(e) = r {
            self.endpoint_callback_failed("datagram_received", addr, &e);
        }
    }

    pub(crate) fn datagram_truncated(&mut self, id: ConnId, addr: Option<SocketAddr>, size: usize) {
        let py = self.py;
        let Some(entry) = self.endpoints.get(&id) else {
            return;
        };
        let capacity = entry.capacity;
        let from = addr.map_or("?".to_string(), |a| a.to_string());
        let exc = crate::errors::netring_error(
            py,
            "DatagramTruncatedError",
            format!(
                "a datagram of {size} bytes from {from} is larger than {capacity} bytes \
                 (buffer_size minus {} bytes); it was dropped, not cut",
                netring_core::udp::DATAGRAM_HEADROOM
            ),
        );
        let value = exc.into_value(py);
        let addr_obj = self.addr_object(id, addr);
        let _ = value.setattr(py, "size", size);
        let _ = value.setattr(py, "limit", capacity);
        let _ = value.setattr(py, "addr", addr_obj);
        self.error_received(id, addr, value.into_any());
    }

    pub(crate) fn datagram_error(&mut self, id: ConnId, error: std::io::Error) {
        let py = self.py;
        let value = PyErr::from(error).into_value(py).into_any();
        self.error_received(id, None, value);
    }

    fn error_received(&mut self, id: ConnId, addr: Option<SocketAddr>, exc: Py<PyAny>) {
        let py = self.py;
        let Some(entry) = self.endpoints.get(&id) else {
            return;
        };
        let r = entry
            .protocol
            .call_method1(py, intern!(py, "error_received"), (exc,));
        if let Err(e) = r {
            self.endpoint_callback_failed("error_received", addr, &e);
        }
    }

    pub(crate) fn endpoint_writing(&mut self, id: ConnId, pause: bool) {
        let py = self.py;
        let Some(entry) = self.endpoints.get(&id) else {
            return;
        };
        let name = if pause {
            intern!(py, "pause_writing")
        } else {
            intern!(py, "resume_writing")
        };
        if let Err(e) = entry.protocol.call_method0(py, name) {
            self.endpoint_callback_failed(&name.to_string(), None, &e);
        }
    }

    pub(crate) fn endpoint_closed(&mut self, id: ConnId, error: Option<std::io::Error>) {
        let py = self.py;
        let Some(entry) = self.endpoints.remove(&id) else {
            return;
        };
        let transport = entry.transport.get();
        transport.closing.store(true, Ordering::Release);
        *lock(&transport.protocol) = None;
        let arg = error.map(|e| PyErr::from(e).into_value(py).into_any());
        if let Err(e) = entry
            .protocol
            .call_method1(py, intern!(py, "connection_lost"), (arg,))
        {
            self.endpoint_callback_failed("connection_lost", None, &e);
        }
    }

    /// A UDP callback raised: logged; the endpoint keeps serving.
    fn endpoint_callback_failed(&self, what: &str, addr: Option<SocketAddr>, err: &PyErr) {
        let from = addr.map_or_else(String::new, |a| format!(" (datagram from {a})"));
        self.log_exception(
            &format!("netring: exception in {what}{from}; the endpoint goes on"),
            err,
        );
    }
}
