//! `netring._native.Transport`: asyncio's transport interface over one
//! engine connection.
//!
//! Thread safety: every method may be called from any Python thread. On the
//! connection's IO thread (inside a callback) operations apply at once; from
//! other threads they go through the owner's mailbox and keep their order.
//! After `connection_lost` every method is a no-op that can never reach
//! another connection (the id's generation no longer matches).

use std::net::SocketAddr;
use std::os::fd::{IntoRawFd, OwnedFd};
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyByteArray, PyBytes, PyList, PyMemoryView, PyTuple};

use netring_core::config::DEFAULT_WRITE_HIGH_WATER_BYTES;
use netring_core::conn::sendq::{SharedBytes, COALESCE_MAX_BYTES};
use netring_core::framing::Framing;
use netring_core::layer::{tls::TlsInfo, LayerInfo};
use netring_core::{ConnRef, Written};

use crate::util::lock;

/// A connection's transport (asyncio `Transport` interface).
#[pyclass(frozen, module = "netring._native")]
pub struct Transport {
    conn: ConnRef,
    /// Addresses, and what TLS negotiated on a TLS connection.
    addrs: Addrs,
    /// `CLOSING`, `EOF_WRITTEN`, `READING_PAUSED`, `IN_BATCH`, `RESP`,
    /// `FAILED`, `PROTOCOL_CHANGED`, `LOST`.
    flags: AtomicU8,
    high_water: AtomicUsize,
    low_water: AtomicUsize,
    /// What is touched rarely, under one lock.
    slow: Mutex<Slow>,
}

/// Closed (or closing): writes are dropped.
const CLOSING: u8 = 1;
/// `write_eof()` was called.
const EOF_WRITTEN: u8 = 1 << 1;
/// `pause_reading()` is in effect.
const READING_PAUSED: u8 = 1 << 2;
/// Inside `packets_received`: the rest of the read is already cut.
const IN_BATCH: u8 = 1 << 3;
/// The framing is RESP: packets reach Python as argument lists.
const RESP: u8 = 1 << 4;
/// A callback run inside a transport method failed (the exception is in
/// `Rare::failure` until `connection_lost` takes it). A flag, as the
/// dispatcher checks it before every callback.
const FAILED: u8 = 1 << 5;
/// `set_protocol()` gave this transport a new protocol: the dispatcher
/// switches to it before its next callback (a flag, checked with `FAILED`
/// in the one load the dispatcher makes before every callback).
const PROTOCOL_CHANGED: u8 = 1 << 6;
/// `connection_lost` has run: `set_protocol` keeps nothing and no socket
/// object is made any more.
const LOST: u8 = 1 << 7;

/// The parts of a transport that are not read per packet.
#[derive(Default)]
struct Slow {
    protocol: Option<Py<PyAny>>,
    /// The framing rule `send_packet` encodes with (the connection's own).
    /// Shared (read without holding the lock), and absent for Raw: most
    /// connections never frame a packet.
    framing: Option<Arc<Framing>>,
    /// Rarer still (boxed: the transport stays small).
    rare: Option<Box<Rare>>,
}

/// What few transports ever hold.
#[derive(Default)]
struct Rare {
    /// An exception `pause_writing()` raised inside `write()`: the
    /// connection is being aborted and `connection_lost` gets it.
    failure: Option<PyErr>,
    /// `get_extra_info("socket")`: made when first asked for, over a
    /// duplicate of the connection's descriptor; closed right after
    /// `connection_lost` (the object stays, closed).
    socket: Option<Py<PyAny>>,
    /// `sendfile()` futures not resolved yet, oldest first, with the byte
    /// counts they resolve to (the engine reports each range's end in order).
    files: std::collections::VecDeque<(Py<PyAny>, u64)>,
}

impl Slow {
    fn rare(&mut self) -> &mut Rare {
        self.rare.get_or_insert_with(Box::default)
    }
}

/// What the engine tells a new connection's transport about it.
pub struct Addresses {
    pub peer: Option<SocketAddr>,
    pub local: Option<SocketAddr>,
    /// Its stream layer's info (TLS), if it has one.
    pub info: Option<Box<LayerInfo>>,
    /// What `get_extra_info("sslcontext")` gives on a TLS connection: the
    /// `ssl.SSLContext` its settings came from, or the netring config.
    pub context: Option<Py<PyAny>>,
}

/// A connection's peer and local addresses: an IPv4 pair inline (the
/// common case, 16 bytes), anything else boxed.
enum Addrs {
    V4 {
        peer: ([u8; 4], u16),
        local: ([u8; 4], u16),
    },
    Other(Box<OtherAddrs>),
}

/// IPv6 or missing addresses, or a TLS or PROXY-protocol connection's
/// (rare enough to box).
struct OtherAddrs {
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
    tls: Option<TlsInfo>,
    /// `get_extra_info("sslcontext")` (TLS connections only).
    context: Option<Py<PyAny>>,
    /// The proxy that spoke for `peer`, and the address the client
    /// connected to (its PROXY header's).
    proxy: Option<(Option<SocketAddr>, Option<SocketAddr>)>,
}

impl Addrs {
    fn new(a: Addresses) -> Self {
        let (tls, proxy) = match a.info {
            Some(i) => (i.tls, i.proxy_peer.map(|p| (Some(p), i.proxy_destination))),
            None => (None, None),
        };
        match (a.peer, a.local, tls, proxy) {
            (Some(SocketAddr::V4(p)), Some(SocketAddr::V4(l)), None, None) => Addrs::V4 {
                peer: (p.ip().octets(), p.port()),
                local: (l.ip().octets(), l.port()),
            },
            (peer, local, tls, proxy) => Addrs::Other(Box::new(OtherAddrs {
                peer,
                local,
                context: if tls.is_some() { a.context } else { None },
                tls,
                proxy,
            })),
        }
    }

    /// The proxy's address and the client's destination (PROXY protocol).
    fn proxy(&self) -> Option<(Option<SocketAddr>, Option<SocketAddr>)> {
        match self {
            Addrs::V4 { .. } => None,
            Addrs::Other(b) => b.proxy,
        }
    }

    fn peer(&self) -> Option<SocketAddr> {
        match self {
            Addrs::V4 { peer, .. } => Some(v4(*peer)),
            Addrs::Other(b) => b.peer,
        }
    }

    fn local(&self) -> Option<SocketAddr> {
        match self {
            Addrs::V4 { local, .. } => Some(v4(*local)),
            Addrs::Other(b) => b.local,
        }
    }

    fn tls(&self) -> Option<(&TlsInfo, Option<&Py<PyAny>>)> {
        match self {
            Addrs::V4 { .. } => None,
            Addrs::Other(b) => b.tls.as_ref().map(|t| (t, b.context.as_ref())),
        }
    }
}

fn v4((ip, port): ([u8; 4], u16)) -> SocketAddr {
    SocketAddr::from((ip, port))
}

impl Transport {
    pub fn new(conn: ConnRef, addrs: Addresses, framing: Framing) -> Self {
        let resp = if matches!(framing, Framing::Resp(_)) {
            RESP
        } else {
            0
        };
        Transport {
            conn,
            addrs: Addrs::new(addrs),
            flags: AtomicU8::new(resp),
            high_water: AtomicUsize::new(DEFAULT_WRITE_HIGH_WATER_BYTES),
            low_water: AtomicUsize::new(DEFAULT_WRITE_HIGH_WATER_BYTES / 4),
            slow: Mutex::new(Slow {
                framing: shared_rule(framing),
                ..Slow::default()
            }),
        }
    }

    fn flag(&self, bit: u8) -> bool {
        self.flags.load(Ordering::Acquire) & bit != 0
    }

    /// Set (`on`) or clear `bit`; returns whether it was set before.
    fn set_flag(&self, bit: u8, on: bool) -> bool {
        let old = if on {
            self.flags.fetch_or(bit, Ordering::AcqRel)
        } else {
            self.flags.fetch_and(!bit, Ordering::AcqRel)
        };
        old & bit != 0
    }

    /// The rare state. Lock order: the GIL (if needed) first, then this;
    /// never run Python code while holding it.
    fn slow(&self) -> MutexGuard<'_, Slow> {
        lock(&self.slow)
    }

    /// The rule `send_packet` frames by (shared: no lock held while framing).
    fn framing(&self) -> Option<Arc<Framing>> {
        self.slow().framing.clone()
    }

    /// The connection is gone: every later call is a no-op
    /// (`connection_lost` follows, then `finish_lost`).
    pub fn mark_lost(&self) {
        self.set_flag(CLOSING, true);
        let old = self.slow().protocol.take();
        drop(old); // outside the lock: dropping may run Python code
    }

    /// Whether packets are RESP commands (delivered as argument lists).
    pub fn is_resp(&self) -> bool {
        self.flag(RESP)
    }

    /// Mark the span of a `packets_received` call.
    pub fn set_in_batch(&self, on: bool) {
        self.set_flag(IN_BATCH, on);
    }

    /// A callback failed: drop further writes; the abort follows.
    pub fn mark_lost_soon(&self) {
        self.set_flag(CLOSING, true);
    }

    /// The exception a callback run inside a transport method raised, if
    /// any (taken once, for `connection_lost`).
    pub fn take_failure(&self) -> Option<PyErr> {
        self.slow().rare.as_mut().and_then(|r| r.failure.take())
    }

    /// Whether such a callback failed (no more callbacks are delivered).
    pub fn has_failed(&self) -> bool {
        self.flag(FAILED)
    }

    /// Whether `close()`/`abort()` was called or the connection is lost.
    pub fn closing(&self) -> bool {
        self.flag(CLOSING)
    }

    /// Whether the dispatcher must look before its next callback: a
    /// callback failed inside a transport method, or `set_protocol()` gave
    /// a new protocol. One load, as `has_failed` was.
    pub fn needs_check(&self) -> bool {
        self.flags.load(Ordering::Acquire) & (FAILED | PROTOCOL_CHANGED) != 0
    }

    /// The protocol `set_protocol()` gave since the last call, if any (the
    /// dispatcher's next callbacks go to it).
    pub fn take_new_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        if !self.set_flag(PROTOCOL_CHANGED, false) {
            return None;
        }
        self.slow().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    /// `connection_lost` has run: let go of a protocol it may have set, and
    /// close the socket object's descriptor, if one was made (asyncio closes
    /// its socket then too). The object stays (closed: its methods raise
    /// `OSError`, `fileno()` is -1).
    pub fn finish_lost(&self, py: Python<'_>) {
        self.set_flag(LOST, true);
        let files = self
            .slow()
            .rare
            .as_mut()
            .map(|r| std::mem::take(&mut r.files));
        for (future, _) in files.into_iter().flatten() {
            let error = pyo3::exceptions::PyConnectionError::new_err(
                "the connection closed before the file was sent",
            );
            settle_future(py, &future, Err(error));
        }
        let (protocol, socket) = {
            let mut slow = self.slow();
            let socket = slow
                .rare
                .as_ref()
                .and_then(|r| r.socket.as_ref().map(|s| s.clone_ref(py)));
            (slow.protocol.take(), socket)
        };
        drop(protocol); // outside the lock: dropping may run Python code
        if let Some(socket) = socket {
            if let Err(e) = socket.call_method0(py, pyo3::intern!(py, "_release")) {
                e.write_unraisable(py, Some(socket.bind(py)));
            }
        }
    }

    /// The engine sent the oldest file range queued by `sendfile()`.
    pub fn file_sent(&self, py: Python<'_>) {
        let done = self.slow().rare.as_mut().and_then(|r| r.files.pop_front());
        if let Some((future, count)) = done {
            settle_future(py, &future, Ok(count));
        }
    }

    /// `get_extra_info("socket")`: the connection's socket object, made the
    /// first time it is asked for (see `netring._trsock`); `None` if it was
    /// never made and cannot be now: asked for off the connection's own
    /// thread (an IO thread, or the loop's inside asyncio), after the
    /// engine let go of the connection, or after `connection_lost`.
    fn socket<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyAny>>> {
        let made = |slow: &Slow| {
            slow.rare
                .as_ref()
                .and_then(|r| r.socket.as_ref().map(|s| s.bind(py).clone()))
        };
        if let Some(socket) = made(&self.slow()) {
            return Ok(Some(socket));
        }
        if self.flag(LOST) {
            return Ok(None);
        }
        // NOTE: duplicated on the owner thread, during a dispatch or between
        // a hosted engine's turns, where the engine's descriptor cannot be
        // closed meanwhile: the duplicate is this connection's socket.
        let Some(fd) = self.conn.dup_fd() else {
            return Ok(None);
        };
        let socket = transport_socket(py, fd?)?;
        let mut slow = self.slow();
        if let Some(first) = made(&slow) {
            drop(slow);
            let _ = socket.call_method0(pyo3::intern!(py, "_release"));
            return Ok(Some(first));
        }
        slow.rare().socket = Some(socket.clone().unbind());
        Ok(Some(socket))
    }

    /// The engine handle.
    pub fn conn_ref(&self) -> &ConnRef {
        &self.conn
    }

    /// `close()` on behalf of the dispatcher (eof_received returned false).
    pub fn close_now(&self) {
        self.close();
    }

    pub fn set_protocol_ref(&self, protocol: Py<PyAny>) {
        let old = self.slow().protocol.replace(protocol);
        drop(old); // outside the lock: dropping may run Python code
    }

    /// The peer address, as asyncio formats it.
    pub fn peer(&self) -> Option<SocketAddr> {
        self.addrs.peer()
    }

    fn write_bytes(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        if let Some(held) = HeldBytes::large(data) {
            return self.write_held(held);
        }
        if let Ok(b) = data.cast::<PyBytes>() {
            self.write_slice(b.as_bytes())
        } else if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
            let buf = pyo3::buffer::PyBuffer::<u8>::get(data)?;
            self.write_slice(&buf.to_vec(data.py())?)
        } else {
            Err(PyTypeError::new_err(format!(
                "data argument must be a bytes-like object, not '{}'",
                data.get_type().name()?
            )))
        }
    }

    fn write_slice(&self, data: &[u8]) -> PyResult<()> {
        if self.may_write()? {
            let written = self.conn.write_inline(data);
            self.after_write(written);
        }
        Ok(())
    }

    /// A large `bytes` queued by reference: the kernel reads it in place.
    fn write_held(&self, data: HeldBytes) -> PyResult<()> {
        if self.may_write()? {
            let written = self.conn.write_shared_inline(Box::new(data));
            self.after_write(written);
        }
        Ok(())
    }

    fn may_write(&self) -> PyResult<bool> {
        if self.flag(EOF_WRITTEN) {
            return Err(PyRuntimeError::new_err(
                "Cannot call write() after write_eof()",
            ));
        }
        Ok(!self.flag(CLOSING)) // as asyncio: writes after close() are dropped
    }

    /// Whether a packet may be queued now: false after close (dropped, as
    /// asyncio drops writes), an error after write_eof.
    fn may_send(&self, what: &str) -> PyResult<bool> {
        if self.flag(EOF_WRITTEN) {
            return Err(PyRuntimeError::new_err(format!(
                "Cannot call {what}() after write_eof()"
            )));
        }
        Ok(!self.flag(CLOSING))
    }

    /// Queue one packet framed by `framing` (the engine's one framing
    /// write, as for a batch).
    fn frame_one(&self, framing: &Framing, data: &[u8]) -> PyResult<Written> {
        match self.conn.write_packets_inline(framing, &[data]) {
            (written, None) => Ok(written),
            (_, Some(e)) => Err(PyValueError::new_err(e.to_string())),
        }
    }

    /// The write crossed the high-water mark on the owner thread: call the
    /// protocol's `pause_writing()` now, inside `write()`, as asyncio does,
    /// so a producer loop sees it before its next write.
    fn after_write(&self, written: Written) {
        if written != Written::CrossedHigh {
            return;
        }
        let protocol = Python::attach(|py| self.slow().protocol.as_ref().map(|p| p.clone_ref(py)));
        if let Some(protocol) = protocol {
            Python::attach(|py| {
                if let Err(e) = protocol.call_method0(py, pyo3::intern!(py, "pause_writing")) {
                    // Not raised from write() (as asyncio); treated as any
                    // callback's failure: logged once, this connection
                    // aborted, connection_lost gets the exception.
                    self.callback_failed(py, "pause_writing", e);
                }
            });
        }
    }

    fn callback_failed(&self, py: Python<'_>, what: &str, err: PyErr) {
        {
            let mut slow = self.slow();
            let rare = slow.rare();
            if rare.failure.is_some() {
                return;
            }
            rare.failure = Some(err.clone_ref(py));
            self.set_flag(FAILED, true);
        }
        self.set_flag(CLOSING, true);
        let peer = self
            .addrs
            .peer()
            .map_or_else(|| "?".to_string(), |p| p.to_string());
        let message = format!("netring: exception in {what} for {peer}; closing the connection");
        let logged = py
            .import("logging")
            .and_then(|m| m.call_method1("getLogger", ("netring",)))
            .and_then(|logger| {
                let kwargs = pyo3::types::PyDict::new(py);
                kwargs.set_item("exc_info", err.value(py))?;
                logger.call_method("error", ("%s", message), Some(&kwargs))
            });
        if logged.is_err() {
            err.print(py);
        }
        self.conn.abort_quietly();
    }
}

/// A `netring._trsock.TransportSocket` over `fd` (a duplicate of a
/// connection's descriptor), which takes it over.
fn transport_socket(py: Python<'_>, fd: OwnedFd) -> PyResult<Bound<'_, PyAny>> {
    static MAKE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    let make = MAKE.import(py, "netring._trsock", "_make")?;
    let sock = socket2::SockRef::from(&fd);
    let family = i32::from(sock.domain()?);
    let kind = i32::from(sock.r#type()?);
    let proto = sock.protocol()?.map_or(0, i32::from);
    // NOTE: Python's socket owns the descriptor from here, even if making
    // it fails (it closes what it took); with the family, type and protocol
    // given, nothing before that can fail, so it is never closed twice.
    make.call1((fd.into_raw_fd(), family, kind, proto))
}

/// Run `f` over the bytes of a bytes-like object (no copy for bytes).
fn with_bytes<R>(obj: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(b) = obj.cast::<PyBytes>() {
        Ok(f(b.as_bytes()))
    } else if obj.is_instance_of::<PyByteArray>() || obj.is_instance_of::<PyMemoryView>() {
        let owned = pyo3::buffer::PyBuffer::<u8>::get(obj)?.to_vec(obj.py())?;
        Ok(f(&owned))
    } else {
        Err(PyTypeError::new_err(format!(
            "payload must be a bytes-like object, not '{}'",
            obj.get_type().name()?
        )))
    }
}

/// A large `bytes` (or a C-contiguous memoryview of one) handed to the
/// engine by reference (`SendQueue::push_shared`): the kernel reads the
/// bytes at `ptr` in place, and the reference is released when the engine
/// drops this, after the last byte was sent (on an IO thread without the
/// GIL, pyo3 defers that decref to the next time a thread attaches).
#[derive(Debug)]
struct HeldBytes {
    _owner: Py<PyBytes>,
    ptr: *const u8,
    len: usize,
}

// SAFETY: `ptr..ptr+len` lies inside the `bytes` object `_owner` keeps
// alive; a `bytes` object's storage never moves or changes, so reading it
// from any thread without the GIL is sound; `Py<PyBytes>` itself is Send.
unsafe impl Send for HeldBytes {}

impl SharedBytes for HeldBytes {
    fn as_bytes(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: the range is inside a live, immutable
        // `bytes` object.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

impl HeldBytes {
    /// `obj` by reference when it is worth it: a `bytes` larger than what
    /// the engine coalesces, or a contiguous memoryview of such a `bytes`
    /// (a slice of one, as a partial sender makes). `None`: copy it.
    fn large(obj: &Bound<'_, PyAny>) -> Option<HeldBytes> {
        if let Ok(b) = obj.cast::<PyBytes>() {
            let data = b.as_bytes();
            return (data.len() > COALESCE_MAX_BYTES).then(|| HeldBytes {
                _owner: b.clone().unbind(),
                ptr: data.as_ptr(),
                len: data.len(),
            });
        }
        let view = obj.cast::<PyMemoryView>().ok()?;
        let owner = view.getattr(pyo3::intern!(obj.py(), "obj")).ok()?;
        let owner = owner.cast_into::<PyBytes>().ok()?;
        let buf = pyo3::buffer::PyBuffer::<u8>::get(obj).ok()?;
        let (ptr, len) = (buf.buf_ptr() as *const u8, buf.len_bytes());
        let inside = owner.as_bytes().as_ptr_range();
        // A strided view is not one run of bytes: copy it.
        let contiguous = buf.is_c_contiguous() && inside.contains(&ptr) && len > COALESCE_MAX_BYTES;
        (contiguous && ptr.wrapping_add(len) <= inside.end).then(|| HeldBytes {
            _owner: owner.unbind(),
            ptr,
            len,
        })
    }
}

/// The descriptor (a duplicate), offset and count `sendfile(file, offset,
/// count)` means, checked as asyncio checks them: a regular file, a
/// non-negative offset, a positive count or `None` (to the end).
fn file_range(
    file: &Bound<'_, PyAny>,
    offset: i64,
    count: Option<i64>,
) -> PyResult<(OwnedFd, u64, u64)> {
    let raw: i32 = match file.extract::<i32>() {
        Ok(fd) => fd,
        Err(_) => file
            .call_method0(pyo3::intern!(file.py(), "fileno"))
            .map_err(|_| {
                PyTypeError::new_err("file must be a file object with fileno() or a descriptor")
            })?
            .extract()?,
    };
    let Ok(offset) = u64::try_from(offset) else {
        return Err(PyValueError::new_err(format!(
            "offset must be a non-negative integer (got {offset})"
        )));
    };
    if let Some(c) = count.filter(|&c| c <= 0) {
        return Err(PyValueError::new_err(format!(
            "count must be a positive integer (got {c})"
        )));
    }
    if raw < 0 {
        return Err(PyValueError::new_err(format!("invalid descriptor {raw}")));
    }
    // SAFETY: borrowed only for the duration of these calls; the caller's
    // object owns the descriptor and outlives them.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(raw) };
    let stat = rustix::fs::fstat(borrowed).map_err(|e| PyErr::from(std::io::Error::from(e)))?;
    if rustix::fs::FileType::from_raw_mode(stat.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(PyValueError::new_err("sendfile() needs a regular file"));
    }
    let size = u64::try_from(stat.st_size).unwrap_or(0);
    let count = match count {
        Some(c) => c as u64,
        None => size.saturating_sub(offset),
    };
    let dup = rustix::io::fcntl_dupfd_cloexec(borrowed, 0)
        .map_err(|e| PyErr::from(std::io::Error::from(e)))?;
    Ok((dup, offset, count))
}

/// Resolve a `concurrent.futures.Future` (unless it was cancelled); a
/// failure of its callbacks is reported as unraisable, never to the caller.
fn settle_future(py: Python<'_>, future: &Py<PyAny>, outcome: PyResult<u64>) {
    let future = future.bind(py);
    if future
        .call_method0(pyo3::intern!(py, "done"))
        .and_then(|d| d.is_truthy())
        .unwrap_or(true)
    {
        return;
    }
    let result = match outcome {
        Ok(n) => future.call_method1(pyo3::intern!(py, "set_result"), (n,)),
        Err(e) => future.call_method1(pyo3::intern!(py, "set_exception"), (e.into_value(py),)),
    };
    if let Err(e) = result {
        e.write_unraisable(py, Some(future));
    }
}

/// A held `bytes` payload, read in place.
struct Payload<'py>(Bound<'py, PyBytes>);

impl AsRef<[u8]> for Payload<'_> {
    fn as_ref(&self) -> &[u8] {
        self.0.as_bytes()
    }
}

/// The items of a list or tuple of `bytes` (what `packets_received` gets and
/// most protocols answer with), each held; `None` for any other sequence or
/// item type (the general path handles those).
fn bytes_items<'py>(packets: &Bound<'py, PyAny>) -> Option<Vec<Payload<'py>>> {
    fn collect<'py>(
        items: impl ExactSizeIterator<Item = Bound<'py, PyAny>>,
    ) -> Option<Vec<Payload<'py>>> {
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            out.push(Payload(item.cast_into::<PyBytes>().ok()?));
        }
        Some(out)
    }
    if let Ok(list) = packets.cast_exact::<PyList>() {
        collect(list.iter())
    } else if let Ok(tuple) = packets.cast_exact::<PyTuple>() {
        collect(tuple.iter())
    } else {
        None
    }
}

pub(crate) fn address<'py>(
    py: Python<'py>,
    addr: Option<SocketAddr>,
) -> PyResult<Option<Bound<'py, PyTuple>>> {
    Ok(match addr {
        None => None,
        Some(SocketAddr::V4(a)) => Some(PyTuple::new(
            py,
            [
                a.ip().to_string().into_pyobject(py)?.into_any(),
                a.port().into_pyobject(py)?.into_any(),
            ],
        )?),
        Some(SocketAddr::V6(a)) => Some(PyTuple::new(
            py,
            [
                a.ip().to_string().into_pyobject(py)?.into_any(),
                a.port().into_pyobject(py)?.into_any(),
                a.flowinfo().into_pyobject(py)?.into_any(),
                a.scope_id().into_pyobject(py)?.into_any(),
            ],
        )?),
    })
}

#[pymethods]
impl Transport {
    /// Queue `data` (bytes, bytearray or memoryview) for sending, in order.
    fn write(&self, data: &Bound<'_, PyAny>) -> PyResult<()> {
        self.write_bytes(data)
    }

    /// Queue every item of `list_of_data`, in order.
    fn writelines(&self, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        for item in list_of_data.try_iter()? {
            self.write_bytes(&item?)?;
        }
        Ok(())
    }

    /// Frame `payload` by the connection's framing and queue it: a length
    /// header before it (LengthPrefixed), the delimiter after it
    /// (Delimited), or as is (Raw, Exactly).
    fn send_packet(&self, payload: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.may_send("send_packet")? {
            return Ok(());
        }
        let framing = self.framing();
        let written = match HeldBytes::large(payload) {
            Some(held) => match self
                .conn
                .write_packet_shared_inline(rule(&framing), Box::new(held))
            {
                (written, None) => written,
                (_, Some(e)) => return Err(PyValueError::new_err(e.to_string())),
            },
            None => with_bytes(payload, |data| self.frame_one(rule(&framing), data))??,
        };
        self.after_write(written);
        Ok(())
    }

    /// ``send_packet`` for every item of `packets`, in order, in one call
    /// (fewer Python→native calls for a protocol answering a batch).
    fn send_packets(&self, packets: &Bound<'_, PyAny>) -> PyResult<()> {
        if !self.may_send("send_packets")? {
            return Ok(());
        }
        let framing = self.framing();
        if let Some(items) = bytes_items(packets) {
            // One engine write for the whole batch; `items` holds every
            // payload alive, whatever Python code (a log handler) runs.
            let (written, error) = self.conn.write_packets_inline(rule(&framing), &items);
            self.after_write(written);
            return match error {
                Some(e) => Err(PyValueError::new_err(e.to_string())),
                None => Ok(()),
            };
        }
        // NOTE: iterating may run Python code (a generator), which may hand
        // the GIL to a thread that wants this transport's lock: never hold
        // it here.
        let mut crossed = false;
        let result = packets.try_iter().and_then(|items| {
            for item in items {
                let written = with_bytes(&item?, |data| self.frame_one(rule(&framing), data))??;
                crossed |= written == Written::CrossedHigh;
            }
            Ok(())
        });
        if crossed {
            self.after_write(Written::CrossedHigh);
        }
        result
    }

    /// Cut the incoming stream by `framing` (a `netring.framing` spec) from
    /// the next byte on; bytes received and not yet delivered are re-framed.
    /// `send_packet` frames by it too.
    fn set_framing(&self, framing: &Bound<'_, PyAny>) -> PyResult<()> {
        if self.flag(IN_BATCH) {
            // NOTE: the packets handed to packets_received were all cut under
            // the old rule; switching now would silently mis-frame them.
            return Err(PyRuntimeError::new_err(
                "set_framing() inside packets_received(): the read was already cut into \
                 packets; use packet_received() in protocols that switch framing",
            ));
        }
        let framing = crate::framing::from_py(framing)?;
        self.set_flag(RESP, matches!(framing, Framing::Resp(_)));
        self.slow().framing = shared_rule(framing.clone());
        self.conn.set_framing(framing);
        Ok(())
    }

    /// Call the protocol's `timeout_received()` after `seconds` with nothing
    /// received (again every `seconds` while it stays idle and open);
    /// `None` turns it off. The default `timeout_received` closes.
    #[pyo3(signature = (seconds))]
    fn set_idle_timeout(&self, seconds: Option<f64>) -> PyResult<()> {
        let timeout = match seconds {
            None => None,
            Some(s) if s > 0.0 && s.is_finite() => Some(std::time::Duration::from_secs_f64(s)),
            Some(s) => {
                return Err(PyValueError::new_err(format!(
                    "seconds: must be a positive number or None, not {s}"
                )))
            }
        };
        self.conn.set_idle_timeout(timeout);
        Ok(())
    }

    /// Flush what is queued, then shut down the sending side (FIN).
    fn write_eof(&self) {
        if self.flag(CLOSING) || self.set_flag(EOF_WRITTEN, true) {
            return;
        }
        self.conn.write_eof();
    }

    /// Always true: TCP supports half-close.
    fn can_write_eof(&self) -> bool {
        true
    }

    /// Flush what is queued, then close (FIN). `connection_lost(None)` follows.
    fn close(&self) {
        if !self.set_flag(CLOSING, true) {
            self.conn.close();
        }
    }

    /// Drop the queue and reset the connection (RST). `connection_lost(None)` follows.
    fn abort(&self) {
        self.set_flag(CLOSING, true);
        self.conn.abort();
    }

    /// True once `close()`/`abort()` was called or the connection is lost.
    fn is_closing(&self) -> bool {
        self.flag(CLOSING)
    }

    /// `peername`, `sockname`; behind a PROXY header also `proxy_peername`
    /// (the proxy) and `proxy_destination`; on a TLS connection also `cipher`,
    /// `ssl_version`, `alpn_protocol`, `server_hostname`, `peercert`,
    /// `peercert_der`, `session_reused`; else `default`.
    #[pyo3(signature = (name, default=None))]
    fn get_extra_info<'py>(
        &self,
        py: Python<'py>,
        name: &str,
        default: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Option<Bound<'py, PyAny>>> {
        if name == "socket" {
            // A socket-like object (asyncio's TransportSocket) for options.
            return Ok(self.socket(py)?.or(default));
        }
        let addr = match name {
            "peername" => self.addrs.peer(),
            "sockname" => self.addrs.local(),
            "proxy_peername" => self.addrs.proxy().and_then(|p| p.0),
            "proxy_destination" => self.addrs.proxy().and_then(|p| p.1),
            _ => {
                return match self.addrs.tls() {
                    Some((tls, context)) => crate::tls::extra_info(py, tls, context, name, default),
                    None => Ok(default),
                }
            }
        };
        Ok(address(py, addr)?.map(Bound::into_any).or(default))
    }

    /// Stop calling `data_received` until `resume_reading()`.
    fn pause_reading(&self) {
        if !self.set_flag(READING_PAUSED, true) {
            self.conn.set_reading_paused(true);
        }
    }

    /// Resume `data_received` calls; data held meanwhile comes first.
    fn resume_reading(&self) {
        if self.set_flag(READING_PAUSED, false) {
            self.conn.set_reading_paused(false);
        }
    }

    /// False while reading is paused or after close.
    fn is_reading(&self) -> bool {
        self.flags.load(Ordering::Acquire) & (READING_PAUSED | CLOSING) == 0
    }

    /// Send `count` bytes of `file` (a regular file opened for reading, or
    /// its descriptor) from `offset` (``None``: to its end), in order with
    /// the writes before and after, through the kernel (`sendfile(2)`; over
    /// TLS read in windows and encrypted in the engine). Returns a
    /// `concurrent.futures.Future` of the bytes sent, resolved once they all
    /// are; it fails with `ConnectionError` if the connection closes first.
    /// The engine sends from its own duplicate of the descriptor: the file
    /// may be closed at once, and its position is not used nor moved.
    #[pyo3(signature = (file, offset = 0, count = None))]
    fn sendfile<'py>(
        &self,
        py: Python<'py>,
        file: &Bound<'py, PyAny>,
        offset: i64,
        count: Option<i64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        if self.flag(EOF_WRITTEN) {
            return Err(PyRuntimeError::new_err(
                "Cannot call sendfile() after write_eof()",
            ));
        }
        if self.flag(CLOSING) {
            return Err(PyRuntimeError::new_err("sendfile() on a closing transport"));
        }
        let (fd, offset, count) = file_range(file, offset, count)?;
        let future = py
            .import(pyo3::intern!(py, "concurrent.futures"))?
            .getattr(pyo3::intern!(py, "Future"))?
            .call0()?;
        if count == 0 {
            future.call_method1(pyo3::intern!(py, "set_result"), (0,))?;
            return Ok(future);
        }
        self.slow()
            .rare()
            .files
            .push_back((future.clone().unbind(), count));
        let written = self.conn.send_file(fd, offset, count);
        if written == Written::Dropped {
            // Closed meanwhile (from another thread): its future fails now.
            let lost = self.slow().rare.as_mut().and_then(|r| r.files.pop_back());
            drop(lost);
            return Err(PyRuntimeError::new_err("sendfile() on a closing transport"));
        }
        self.after_write(written);
        Ok(future)
    }

    /// Bytes written and not yet taken by the kernel.
    fn get_write_buffer_size(&self) -> usize {
        self.conn.write_buffer_size()
    }

    /// (low, high) water marks.
    fn get_write_buffer_limits(&self) -> (usize, usize) {
        (
            self.low_water.load(Ordering::Relaxed),
            self.high_water.load(Ordering::Relaxed),
        )
    }

    /// Set the water marks for `pause_writing()` / `resume_writing()`, with
    /// asyncio's defaults: high 64 KiB (or 4 × low), low = high / 4.
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
        self.conn.set_write_limits(high as usize, low as usize);
        Ok(())
    }

    /// The protocol this transport feeds.
    fn get_protocol(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.slow().protocol.as_ref().map(|p| p.clone_ref(py))
    }

    /// Feed `protocol` from now on, as asyncio's `set_protocol`: every
    /// later callback (received data, `eof_received`, `pause_writing`,
    /// `connection_lost`...) goes to it, through its own class's methods (a
    /// `BufferedProtocol`'s buffer from the next bytes on). Nothing is
    /// called on it now (asyncio code calls its `connection_made` itself).
    fn set_protocol(&self, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        if protocol.is_none() {
            return Err(PyTypeError::new_err("protocol is required"));
        }
        let old = {
            let mut slow = self.slow();
            if self.flag(LOST) {
                return Ok(()); // connection_lost went to the protocol it had
            }
            let old = slow.protocol.replace(protocol.unbind());
            self.set_flag(PROTOCOL_CHANGED, true);
            old
        };
        drop(old); // outside the lock: dropping may run Python code
        Ok(())
    }

    fn __repr__(&self) -> String {
        let peer = self.addrs.peer().map_or("?".to_string(), |p| p.to_string());
        let state = if self.flag(CLOSING) {
            "closing"
        } else {
            "open"
        };
        format!("<netring.Transport peer={peer} {state}>")
    }
}

/// How a transport keeps its framing rule: nothing for Raw.
fn shared_rule(framing: Framing) -> Option<Arc<Framing>> {
    (framing != Framing::Raw).then(|| Arc::new(framing))
}

/// The rule a transport keeps.
fn rule(kept: &Option<Arc<Framing>>) -> &Framing {
    kept.as_deref().unwrap_or(&netring_core::framing::RAW)
}
