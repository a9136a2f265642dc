"""``netring.IOPool``: the IO threads as an object, shared by many servers.

Any number of ``Server``s share one pool (``Server(..., pool=pool)``); a
``Server`` without one makes its own. The pool also runs timers:
``call_later``, ``call_at`` and ``call_every`` run their callback on one of
its IO threads (keep callbacks short, as any IO-thread callback), on the
monotonic clock, with a heap of deadlines per IO thread — thousands of
timers cost no thread each. With ``workers=a_worker_pool`` the IO thread
only hands the callback to that ``WorkerPool`` at the deadline, for
callbacks that block.

Threading contract: every method may be called from any thread, including
from callbacks running on the pool's IO threads.
"""

from __future__ import annotations

import concurrent.futures
import ipaddress
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from . import _native
from ._args import (
    BACKENDS,
    check_addr,
    check_framing,
    check_groups,
    check_int,
    check_keepalive,
    check_pool_options,
    check_seconds,
    is_ip,
)
from .errors import ConfigurationError
from .tls import TLSClientConfig

if TYPE_CHECKING:
    from .workers import WorkerPool

__all__ = ["BACKENDS", "IOPool", "TimerHandle", "default_io_threads"]

#: Seconds ``close()`` waits for queued writes to drain before aborting.
DEFAULT_GRACE_SECONDS = 5.0

_live: weakref.WeakSet[IOPool] = weakref.WeakSet()


def default_io_threads() -> int:
    """IO threads when none are asked for: 1 on a GIL build of CPython, one
    per CPU on a free-threaded build.

    With the GIL, a second IO thread adds no parallelism for Python
    callbacks and the threads hand the GIL back and forth: on the 2-CPU
    benchmark machine, 2 IO threads raised p99 latency from ~0.5 ms to
    ~4 ms at equal throughput (see docs/io-threads.md). Pass ``io_threads=``
    to choose otherwise.
    """
    import sys

    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return 1 if gil else (os.cpu_count() or 1)


class TimerHandle:
    """A scheduled callback; ``cancel()`` stops it (idempotent)."""

    def __init__(self, pool: IOPool, timer_id: int, when: float) -> None:
        self._pool = pool
        self._id = timer_id
        self._when = when
        self._cancelled = False

    def cancel(self) -> None:
        """Stop the timer; a callback already running finishes."""
        if not self._cancelled:
            self._cancelled = True
            self._pool._engine.cancel_timer(self._id)

    def cancelled(self) -> bool:
        """Whether ``cancel()`` was called."""
        return self._cancelled

    def when(self) -> float:
        """When it first fires, on ``time.monotonic()``'s clock."""
        return self._when

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "pending"
        return f"<netring.TimerHandle id={self._id} when={self._when:.3f} {state}>"


class IOPool:
    """A pool of IO threads shared by servers, and its timers.

    Args:
        io_threads: IO threads (default: ``default_io_threads()``).
        backend: "auto" (default, or $NETRING_BACKEND), "io_uring" or "epoll".
        buffer_size: bytes per receive buffer (default 16 KiB).
        buffers_per_thread: receive buffers per IO thread (power of two,
            default 512).
        max_buffer_memory: cap in bytes on what the engine buffers for
            connections beyond its receive buffers (queued writes, partial
            packets, input held while paused); default: no cap. At the cap,
            connections holding such bytes stop reading until the total
            falls to 3/4 of it; connections holding none go on being
            served. Use ``frame_timeout`` too, so that a partial packet
            cannot hold its bytes forever. Now: ``stats()["buffer_memory"]``
            (counted only when a cap is set).
        zerocopy_threshold: sends of at least this many bytes go zero-copy
            (io_uring ``SEND_ZC``, epoll ``MSG_ZEROCOPY``: the kernel reads the queued buffers —
            a large ``bytes`` written is queued by reference — in place
            and reports when it is done; they are held until then).
            Default: off. A connection whose zero-copy send the kernel
            copied after all (loopback, a device without scatter-gather)
            sends normally from then on. ``stats()["zerocopy_sends"]`` /
            ``["zerocopy_copied"]`` count them. On epoll, a connection
            that ends with notifications owed keeps its socket open until
            they are in (reset after 30 s).

    The threads start at construction; ``close()`` (or leaving a ``with``
    block) stops them.
    """

    def __init__(
        self,
        io_threads: int | None = None,
        *,
        backend: str | None = None,
        buffer_size: int | None = None,
        buffers_per_thread: int | None = None,
        max_buffer_memory: int | None = None,
        zerocopy_threshold: int | None = None,
    ) -> None:
        backend = check_pool_options(io_threads, backend, buffer_size, buffers_per_thread,
                                     max_buffer_memory, zerocopy_threshold)["backend"]
        threads = default_io_threads() if io_threads is None else io_threads
        self._engine = _native.Engine(threads, backend, buffer_size, buffers_per_thread,
                                      max_buffer_memory, zerocopy_threshold)
        self._lock = threading.Lock()
        self._resolver_pool: concurrent.futures.ThreadPoolExecutor | None = None
        _live.add(self)

    @classmethod
    def _around(cls, engine: Any) -> IOPool:
        """A pool over an engine made elsewhere (``netring.aio``'s hosted one)."""
        pool = cls.__new__(cls)
        pool._engine = engine
        pool._lock = threading.Lock()
        pool._resolver_pool = None
        _live.add(pool)
        return pool

    # -- timers --------------------------------------------------------------

    def call_later(self, delay: float, callback: Callable[..., Any], *args: Any,
                   workers: WorkerPool | None = None) -> TimerHandle:
        """Call ``callback(*args)`` on an IO thread after ``delay`` seconds
        (with ``workers=``, on a thread of that ``WorkerPool``)."""
        delay = check_seconds("delay", delay)
        return self._schedule(delay, None, callback, args, workers)

    def call_at(self, when: float, callback: Callable[..., Any], *args: Any,
                workers: WorkerPool | None = None) -> TimerHandle:
        """Call ``callback(*args)`` at ``when`` on ``time.monotonic()``'s clock
        (with ``workers=``, on a thread of that ``WorkerPool``)."""
        when = check_seconds("when", when)
        return self._schedule(max(0.0, when - time.monotonic()), None, callback, args, workers)

    def call_every(self, interval: float, callback: Callable[..., Any], *args: Any,
                   first: float | None = None, workers: WorkerPool | None = None) -> TimerHandle:
        """Call ``callback(*args)`` every ``interval`` seconds (first after
        ``first`` seconds, default ``interval``) until cancelled. Missed beats
        after a stall are skipped, not replayed. With ``workers=``, on a
        thread of that ``WorkerPool``; a beat is skipped while the previous
        run is still queued or running."""
        interval = check_seconds("interval", interval, positive=True)
        first = interval if first is None else check_seconds("first", first)
        return self._schedule(first, interval, callback, args, workers)

    def _schedule(self, delay: float, interval: float | None, callback: Callable[..., Any],
                  args: tuple[Any, ...], workers: WorkerPool | None = None) -> TimerHandle:
        from .workers import WorkerPool

        if not callable(callback):
            raise TypeError("callback: must be callable")
        fn = (lambda: callback(*args)) if args else callback
        if workers is not None:
            if not isinstance(workers, WorkerPool):
                raise TypeError(
                    f"workers: must be a netring.WorkerPool, not {type(workers).__name__}")
            if workers.is_closed():
                raise ConfigurationError("workers: the WorkerPool is closed")
            fn = workers._timer_callback(fn, interval is not None)
        when = time.monotonic() + delay
        return TimerHandle(self, self._engine.call_later(delay, fn, interval), when)

    # -- outbound connections ------------------------------------------------

    def connect(
        self,
        protocol_factory: Callable[[], Any],
        host: str | None = None,
        port: int | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        timeout: float | None = None,
        framing: Any = None,
        local_addr: tuple[str, int] | None = None,
        idle_timeout: float | None = None,
        keepalive: tuple[float, float, int] | None = None,
        max_write_buffer: int | None = None,
        frame_timeout: float | None = None,
        tls: TLSClientConfig | None = None,
    ) -> concurrent.futures.Future[tuple[Any, Any]]:
        """Open a TCP connection from this pool's IO threads.

        Returns a ``concurrent.futures.Future`` of ``(transport, protocol)``.
        The connect is asynchronous on an IO thread; once established the
        connection behaves exactly as an accepted one (same callbacks,
        framing, write queue, limits). Host names are resolved on a helper
        thread, never on an IO thread. A refused, unreachable or timed-out
        connect fails the future with the matching ``OSError`` /
        ``TimeoutError`` and leaves nothing behind. Safe to call from a
        protocol callback (e.g. a proxy opening its upstream); do not block
        an IO thread on ``future.result()``. ``max_write_buffer`` and
        ``frame_timeout`` are ``Server``'s per-connection limits.

        ``tls=netring.TLSClientConfig(...)``: the connection speaks TLS
        (verified against the system's roots unless the config says
        otherwise; the server name is the config's ``server_hostname`` or
        ``host``). The future resolves after the handshake; a rejected
        certificate fails it with ``TLSCertVerificationError`` (an
        ``ssl.SSLCertVerificationError``), another failed handshake with
        ``TLSError``.

        ``path=``: connect to a Unix domain stream socket instead of
        ``host:port`` (a leading NUL byte: an abstract name); with ``tls=``
        the config's ``server_hostname`` names the server.
        """
        if not callable(protocol_factory):
            raise TypeError("protocol_factory: must be callable")
        if path is not None:
            if host is not None or port is not None:
                raise ConfigurationError("path: give path, or host and port, not both")
            return self._connect_unix(protocol_factory, os.fspath(path), timeout=timeout,
                                      framing=framing, idle_timeout=idle_timeout,
                                      max_write_buffer=max_write_buffer,
                                      frame_timeout=frame_timeout, tls=tls)
        if not isinstance(host, str):
            raise TypeError(f"host: must be a str, not {type(host).__name__}")
        port = check_int("port", port, 1, 65535)
        timeout = None if timeout is None else check_seconds("timeout", timeout, positive=True)
        idle = (None if idle_timeout is None
                else check_seconds("idle_timeout", idle_timeout, positive=True))
        framing = check_framing(framing)
        ka = check_keepalive(keepalive)
        cap = (None if max_write_buffer is None
               else check_int("max_write_buffer", max_write_buffer, 1))
        frame_to = (None if frame_timeout is None
                    else check_seconds("frame_timeout", frame_timeout, positive=True))
        local = None
        if local_addr is not None:
            local = (str(local_addr[0]), check_int("local_addr port", local_addr[1], 0, 65535))
            if not is_ip(local[0]):
                raise ConfigurationError(
                    f"local_addr: must be an IP address (no name), not {local[0]!r}")
        if tls is not None and not isinstance(tls, TLSClientConfig):
            raise TypeError(f"tls: must be a netring.TLSClientConfig, not {type(tls).__name__}")
        layer = None if tls is None else tls._layer(host)
        future: concurrent.futures.Future[tuple[Any, Any]] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        spec = framing._spec()

        def start(ip: str) -> None:
            self._engine.connect(ip, port, protocol_factory, future, spec, idle, timeout, local,
                                 ka, cap, frame_to, layer)

        try:
            ipaddress.ip_address(host)
        except ValueError:
            # A name: resolve it on a helper thread, then connect.
            def resolve() -> None:
                try:
                    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    start(str(infos[0][4][0]))
                except BaseException as e:  # reported through the future
                    if not future.done():
                        future.set_exception(e)

            self._resolver().submit(resolve)
        else:
            start(host)
        return future

    def _connect_unix(self, protocol_factory: Callable[[], Any], path: str, *,
                      timeout: float | None, framing: Any, idle_timeout: float | None,
                      max_write_buffer: int | None, frame_timeout: float | None,
                      tls: TLSClientConfig | None) -> concurrent.futures.Future[tuple[Any, Any]]:
        """``connect(path=...)``: a Unix domain stream socket."""
        if not path or len(os.fsencode(path)) > 107:
            raise ConfigurationError(f"path: {path!r} must be 1 to 107 bytes (sun_path)")
        timeout = None if timeout is None else check_seconds("timeout", timeout, positive=True)
        idle = (None if idle_timeout is None
                else check_seconds("idle_timeout", idle_timeout, positive=True))
        cap = (None if max_write_buffer is None
               else check_int("max_write_buffer", max_write_buffer, 1))
        frame_to = (None if frame_timeout is None
                    else check_seconds("frame_timeout", frame_timeout, positive=True))
        layer = None
        if tls is not None:
            if not isinstance(tls, TLSClientConfig):
                raise TypeError(
                    f"tls: must be a netring.TLSClientConfig, not {type(tls).__name__}")
            if tls.server_hostname is None:
                raise ConfigurationError(
                    "tls: a Unix socket has no host name: give server_hostname=")
            layer = tls._layer("")
        future: concurrent.futures.Future[tuple[Any, Any]] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()
        self._engine.connect("", 0, protocol_factory, future, check_framing(framing)._spec(),
                             idle, timeout, None, None, cap, frame_to, layer, path)
        return future

    def _resolver(self) -> concurrent.futures.ThreadPoolExecutor:
        with self._lock:
            if self._resolver_pool is None:
                self._resolver_pool = concurrent.futures.ThreadPoolExecutor(
                    max_workers=2, thread_name_prefix="netring-resolve")
            return self._resolver_pool

    # -- lifecycle -------------------------------------------------------------

    def close(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Close every server's connections gracefully (abort after ``grace``
        seconds), cancel timers and join the IO threads."""
        with self._lock:
            resolver, self._resolver_pool = self._resolver_pool, None
        if resolver is not None:
            resolver.shutdown(wait=True)
        self._engine.shutdown(float(grace))
        _live.discard(self)

    def is_closed(self) -> bool:
        """Whether ``close()`` has run."""
        return self._engine.is_closed()

    def __enter__(self) -> IOPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def backend(self) -> str:
        """"io_uring" or "epoll"."""
        return self._engine.backend

    @property
    def io_threads(self) -> int:
        """Number of IO threads."""
        return self._engine.io_threads

    def stats(self) -> dict[str, Any]:
        """Counters over every server on the pool (see ``Server.stats``)."""
        return self._engine.stats()

    def __repr__(self) -> str:
        state = "closed" if self.is_closed() else "running"
        return f"<netring.IOPool {self.backend} io_threads={self.io_threads} {state}>"

    # -- UDP -------------------------------------------------------------------

    def create_datagram_endpoint(
        self,
        protocol_factory: Callable[[], Any],
        local_addr: tuple[str, int] | None = None,
        remote_addr: tuple[str, int] | None = None,
        *,
        reuse_port: bool = False,
        allow_broadcast: bool = False,
        multicast_groups: Any = (),
        multicast_loop: bool | None = None,
        multicast_ttl: int | None = None,
        max_send_queue: int | None = None,
    ) -> concurrent.futures.Future[tuple[Any, Any]]:
        """Open a UDP endpoint on this pool's IO threads (asyncio's
        ``loop.create_datagram_endpoint``, see ``netring.udp``).

        Returns a ``concurrent.futures.Future`` of ``(transport, protocol)``,
        resolved once ``connection_made`` ran on the endpoint's IO thread.
        ``local_addr`` defaults to an ephemeral port on the wildcard address
        of ``remote_addr``'s family; with ``remote_addr`` the socket is
        connected (the kernel filters other senders, ``sendto`` needs no
        address). ``multicast_groups`` lists groups to join (an address, or
        ``(group, interface_address)``); ``multicast_loop`` and
        ``multicast_ttl`` set the matching socket options. ``max_send_queue``
        caps queued outgoing bytes (default 1 MiB). With IP literals, socket
        and bind errors raise here; host names are resolved on a helper
        thread and errors fail the future.
        """
        if not callable(protocol_factory):
            raise TypeError("protocol_factory: must be callable")
        if local_addr is None and remote_addr is None:
            raise ConfigurationError("local_addr: give local_addr, remote_addr or both")
        local = None if local_addr is None else check_addr("local_addr", local_addr)
        remote = None if remote_addr is None else check_addr("remote_addr", remote_addr,
                                                            port_min=1)
        for name, flag in (("reuse_port", reuse_port), ("allow_broadcast", allow_broadcast)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name}: must be a bool, not {type(flag).__name__}")
        if multicast_loop is not None and not isinstance(multicast_loop, bool):
            raise TypeError("multicast_loop: must be a bool or None")
        ttl = None if multicast_ttl is None else check_int("multicast_ttl", multicast_ttl, 0, 255)
        cap = (None if max_send_queue is None
               else check_int("max_send_queue", max_send_queue, 1, 1 << 40))
        groups = check_groups(multicast_groups)
        future: concurrent.futures.Future[tuple[Any, Any]] = concurrent.futures.Future()
        future.set_running_or_notify_cancel()

        def start(local: tuple[str, int] | None, remote: tuple[str, int] | None) -> None:
            if local is None:
                assert remote is not None
                local = ("::" if ":" in remote[0] else "0.0.0.0", 0)
            self._engine.udp_open(protocol_factory, future, local, remote, reuse_port,
                                  allow_broadcast, groups, multicast_loop, ttl, cap)

        if all(a is None or is_ip(a[0]) for a in (local, remote)):
            start(local, remote)
            return future

        def resolve(addr: tuple[str, int] | None) -> tuple[str, int] | None:
            if addr is None or is_ip(addr[0]):
                return addr
            infos = socket.getaddrinfo(addr[0], addr[1], type=socket.SOCK_DGRAM)
            return str(infos[0][4][0]), addr[1]

        def resolve_and_start() -> None:
            try:
                start(resolve(local), resolve(remote))
            except BaseException as e:  # reported through the future
                if not future.done():
                    future.set_exception(e)

        self._resolver().submit(resolve_and_start)
        return future


def shutdown_all() -> None:
    """Close every live pool (at interpreter exit: IO threads are attached to
    the interpreter and must stop before it ends)."""
    for pool in list(_live):
        pool.close(0.0)
