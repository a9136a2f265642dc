"""``netring.Server``: a TCP server whose IO runs in the native engine.

Threading contract: protocol callbacks run on the engine's IO threads; the
callbacks of one connection never run concurrently. ``serve_forever()``
blocks the calling thread with the GIL released, waking every 100 ms so
that SIGINT and SIGTERM stop it gracefully.
"""

from __future__ import annotations

import atexit
import os
import signal
import socket
import sys
import threading
import weakref
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from . import _native
from .errors import ConfigurationError
from .framing import Delimited, Exactly, Framing, LengthPrefixed, Raw

__all__ = ["BACKENDS", "Server", "backend_info", "default_io_threads"]

BACKENDS = ("auto", "io_uring", "epoll")
#: Seconds ``shutdown()`` waits for queued writes to drain before aborting.
DEFAULT_GRACE_SECONDS = 5.0

_live: weakref.WeakSet[Server] = weakref.WeakSet()


def backend_info() -> dict[str, str | None]:
    """Which backend ``auto`` picks on this machine, and why it fell back.

    Returns ``{"backend": "io_uring" | "epoll", "reason": None | str}``.
    """
    backend, reason = _native.probe_backend()
    return {"backend": backend, "reason": reason}


def default_io_threads() -> int:
    """IO threads when none are asked for: 1 on a GIL build of CPython, one
    per CPU on a free-threaded build.

    With the GIL, a second IO thread adds no parallelism for Python
    callbacks and the threads hand the GIL back and forth: on the 2-CPU
    benchmark machine, 2 IO threads raised p99 latency from ~0.5 ms to
    ~4 ms at equal throughput (benchmarks/echo_bench.py --io-threads 2;
    see docs/io-threads.md). Pass ``io_threads=`` to choose otherwise.
    """
    gil = getattr(sys, "_is_gil_enabled", lambda: True)()
    return 1 if gil else (os.cpu_count() or 1)


def _check_int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name}: must be an int, not {type(value).__name__}")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ConfigurationError(f"{name}: must be {bound}, not {value}")
    return value


def _resolve(host: object) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host: must be a str, not {type(host).__name__}")
    try:
        infos = socket.getaddrinfo(host or None, None, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigurationError(f"host: cannot resolve {host!r}: {e}") from None
    return str(infos[0][4][0])


def _choose_backend(backend: object) -> str:
    if backend is None:
        backend = os.environ.get("NETRING_BACKEND", "auto") or "auto"
    if not isinstance(backend, str):
        raise TypeError(f"backend: must be a str, not {type(backend).__name__}")
    if backend not in BACKENDS:
        raise ConfigurationError(f"backend: must be one of {BACKENDS}, not {backend!r}")
    return backend


class Server:
    """Serve ``protocol_factory()`` protocols on ``host:port``.

    Args:
        protocol_factory: called once per accepted connection (on its IO
            thread); returns a ``netring.Protocol`` or ``asyncio.Protocol``.
        host: address or name to bind (default 127.0.0.1).
        port: port to bind; 0 picks a free one (see ``port`` after start).
        io_threads: IO threads (default: 1 on a GIL build, one per CPU on a
            free-threaded build; see ``default_io_threads``).
        backlog: listen backlog.
        reuse_port: set SO_REUSEPORT (several processes on one port).
        backend: "auto" (default, or $NETRING_BACKEND), "io_uring" or "epoll".
        buffer_size: bytes per receive buffer (default 16 KiB).
        buffers_per_thread: receive buffers per IO thread (power of two,
            default 512).
        framing: how each connection's stream is cut into packets
            (``netring.Raw()`` by default; ``LengthPrefixed``, ``Delimited``,
            ``Exactly``): protocols then get ``packet_received``.

    Wrong arguments raise ``TypeError`` or ``ConfigurationError`` (a
    ``ValueError``) here, naming the argument.
    """

    def __init__(
        self,
        protocol_factory: Callable[[], Any],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        io_threads: int | None = None,
        backlog: int = _native.DEFAULT_BACKLOG,
        reuse_port: bool = False,
        backend: str | None = None,
        buffer_size: int | None = None,
        buffers_per_thread: int | None = None,
        framing: Framing | None = None,
    ) -> None:
        if not callable(protocol_factory):
            raise TypeError("protocol_factory: must be callable (a Protocol class or a function)")
        self._factory = protocol_factory
        self._host = _resolve(host)
        self._port = _check_int("port", port, 0, 65535)
        self._io_threads = (
            default_io_threads() if io_threads is None
            else _check_int("io_threads", io_threads, 1, 256)
        )
        self._backlog = _check_int("backlog", backlog, 1, 65535)
        if not isinstance(reuse_port, bool):
            raise TypeError(f"reuse_port: must be a bool, not {type(reuse_port).__name__}")
        self._reuse_port = reuse_port
        self._backend = _choose_backend(backend)
        self._buffer_size = (
            None if buffer_size is None else _check_int("buffer_size", buffer_size, 512, 1 << 20)
        )
        if buffers_per_thread is not None:
            n = _check_int("buffers_per_thread", buffers_per_thread, 2, 32768)
            if n & (n - 1):
                raise ConfigurationError(
                    f"buffers_per_thread: must be a power of two, not {n}")
        self._buffers_per_thread = buffers_per_thread
        if framing is None:
            framing = Raw()
        if not isinstance(framing, Raw | LengthPrefixed | Delimited | Exactly):
            raise TypeError(
                "framing: must be netring.Raw(), LengthPrefixed(), Delimited() or Exactly(), "
                f"not {type(framing).__name__}")
        self._framing = framing
        self._engine: _native.Engine | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the IO threads and begin accepting. Idempotent."""
        with self._lock:
            if self._engine is not None:
                return
            engine = _native.Engine(self._io_threads, self._backend,
                                    self._buffer_size, self._buffers_per_thread)
            try:
                _, host, port = engine.listen(self._host, self._port, self._backlog,
                                              self._reuse_port, self._factory,
                                              self._framing._spec())
            except BaseException:
                engine.shutdown(0.0)
                raise
            self._host, self._port = host, port
            self._engine = engine
            self._stop.clear()
            _live.add(self)

    def serve_forever(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Start if needed and block until SIGINT/SIGTERM or ``shutdown()``;
        then drain gracefully within ``grace`` seconds."""
        self.start()
        restore: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(signum: int, frame: FrameType | None) -> None:
                self._stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, on_signal)
        try:
            while not self._stop.wait(0.1):
                pass
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            self.shutdown(grace)

    def shutdown(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Stop accepting, flush and close every connection, abort what is
        still open after ``grace`` seconds, and join the IO threads.
        ``connection_lost`` runs for every connection before this returns."""
        self._stop.set()
        with self._lock:
            engine = self._engine
        if engine is not None:
            engine.shutdown(float(grace))
            _live.discard(self)

    close = shutdown

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.shutdown()

    # -- introspection ------------------------------------------------------

    @property
    def host(self) -> str:
        """The bound host (an IP address)."""
        return self._host

    @property
    def port(self) -> int:
        """The bound port (the real one after ``start()`` when 0 was asked)."""
        return self._port

    @property
    def address(self) -> tuple[str, int]:
        """``(host, port)``."""
        return (self._host, self._port)

    @property
    def framing(self) -> Framing:
        """The framing new connections start with."""
        return self._framing

    @property
    def io_threads(self) -> int:
        """Number of IO threads."""
        return self._io_threads

    @property
    def backend(self) -> str:
        """The backend in use ("io_uring" or "epoll"), or the request before start."""
        return self._engine.backend if self._engine is not None else self._backend

    def is_serving(self) -> bool:
        """True between ``start()`` and ``shutdown()``."""
        return self._engine is not None and not self._engine.is_closed()

    def stats(self) -> dict[str, Any]:
        """Counters: connections_open, connections_accepted,
        connections_closed, bytes_in, bytes_out, backend, io_threads."""
        if self._engine is None:
            return {"connections_open": 0, "connections_accepted": 0,
                    "connections_closed": 0, "bytes_in": 0, "bytes_out": 0,
                    "backend": self._backend, "io_threads": self._io_threads}
        return self._engine.stats()

    def __repr__(self) -> str:
        state = "serving" if self.is_serving() else "stopped"
        return f"<netring.Server {self._host}:{self._port} {self.backend} {state}>"


@atexit.register
def _shutdown_all() -> None:
    # IO threads are attached to the interpreter: stop them before it ends.
    for server in list(_live):
        server.shutdown(0.0)
