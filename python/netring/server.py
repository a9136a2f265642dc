"""``netring.Server``: a TCP server whose IO runs in the native engine.

Threading contract: protocol callbacks run on the engine's IO threads (with
``workers=``, every callback after ``connection_made`` runs on a
``WorkerPool`` thread instead); the callbacks of one connection never run
concurrently. ``serve_forever()``
blocks the calling thread with the GIL released, waking every 100 ms so
that SIGINT and SIGTERM stop it gracefully.
"""

from __future__ import annotations

import atexit
import ipaddress
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from types import FrameType, TracebackType
from typing import Any

from . import _native
from ._args import (
    BACKENDS,
    MAX_WORKER_THREADS,
    check_framing,
    check_int,
    check_keepalive,
    check_pool_options,
    check_seconds,
)
from ._served import _ServerWork
from .errors import ConfigurationError, NetringError
from .framing import Framing
from .pool import DEFAULT_GRACE_SECONDS, IOPool, default_io_threads, shutdown_all
from .tls import DEFAULT_MAX_HANDSHAKES, TLSConfig
from .workers import WorkerPool

__all__ = ["BACKENDS", "Server", "backend_info", "default_io_threads"]


def backend_info() -> dict[str, str | None]:
    """Which backend ``auto`` picks on this machine, and why it fell back.

    Returns ``{"backend": "io_uring" | "epoll", "reason": None | str}``.
    """
    backend, reason = _native.probe_backend()
    return {"backend": backend, "reason": reason}


def _resolve(host: object) -> str:
    if not isinstance(host, str):
        raise TypeError(f"host: must be a str, not {type(host).__name__}")
    try:
        infos = socket.getaddrinfo(host or None, None, type=socket.SOCK_STREAM,
                                   flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ConfigurationError(f"host: cannot resolve {host!r}: {e}") from None
    return str(infos[0][4][0])


#: How long a client behind a proxy may take to send its PROXY header.
DEFAULT_PROXY_TIMEOUT_SECONDS = 5.0


def _proxy_option(version: object, trusted: object,
                  timeout: object) -> tuple[str, list[tuple[str, int]], float | None] | None:
    """``proxy_protocol`` / ``trusted_proxies`` / ``proxy_timeout``, checked,
    as the engine takes them."""
    if version is None:
        if trusted is not None:
            raise ConfigurationError("trusted_proxies: needs proxy_protocol=")
        return None
    if version not in ("v1", "v2", "any"):
        raise ConfigurationError(
            f"proxy_protocol: must be 'v1', 'v2' or 'any', not {version!r}")
    if trusted is None:
        raise ConfigurationError(
            "proxy_protocol: needs trusted_proxies= (the networks of your load balancers; "
            "a header from anywhere else could claim any address)")
    if isinstance(trusted, str) or not isinstance(trusted, Iterable):
        raise TypeError("trusted_proxies: an iterable of networks, e.g. ['10.0.0.0/8']")
    networks: list[tuple[str, int]] = []
    for net in trusted:
        try:
            parsed = ipaddress.ip_network(str(net), strict=False)
        except ValueError as e:
            raise ConfigurationError(f"trusted_proxies: {e}") from None
        networks.append((str(parsed.network_address), parsed.prefixlen))
    if not networks:
        raise ConfigurationError("trusted_proxies: empty (no proxy could connect)")
    seconds = None if timeout is None else check_seconds("proxy_timeout", timeout, positive=True)
    return (str(version), networks, seconds)


def _unix_path(path: object, mode: object, sock: object, fd: object) -> str | None:
    """``path=`` / ``path_mode=``, checked: a Unix domain socket's path (a
    leading NUL byte: an abstract name)."""
    if path is None:
        if mode is not None:
            raise ConfigurationError("path_mode: needs path=")
        return None
    if sock is not None or fd is not None:
        raise ConfigurationError("path: give path, sock or fd, not several")
    if not isinstance(path, str | os.PathLike):
        raise TypeError(f"path: must be a str or os.PathLike, not {type(path).__name__}")
    path = os.fspath(path)
    if not path or len(os.fsencode(path)) > 107:
        raise ConfigurationError(f"path: {path!r} must be 1 to 107 bytes (sun_path)")
    if mode is not None:
        check_int("path_mode", mode, 0, 0o777)
        if path.startswith("\0"):
            raise ConfigurationError("path_mode: an abstract socket has no file mode")
    return path


def _bind_unix(path: str, mode: int | None, backlog: int) -> tuple[int, int | None]:
    """A listening Unix socket at ``path`` (its descriptor, and the inode of
    its file). A stale socket file (nobody accepts on it) is replaced; a live
    server's, or anything that is not a socket, is never removed."""
    import errno
    import stat

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        abstract = path.startswith("\0")
        if not abstract:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                pass
            else:
                if not stat.S_ISSOCK(st.st_mode):
                    raise OSError(errno.EADDRINUSE, f"{path} exists and is not a socket")
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                    probe.settimeout(1.0)
                    try:
                        probe.connect(path)
                    except ConnectionRefusedError:
                        os.unlink(path)  # stale: its server is gone
                    except OSError:
                        pass  # let bind report it
                    else:
                        raise OSError(errno.EADDRINUSE,
                                      f"a server is listening on {path}")
        sock.bind(path)
        inode = None
        if not abstract:
            if mode is not None:
                os.chmod(path, mode)
            inode = os.stat(path).st_ino
        sock.listen(backlog)
        return sock.detach(), inode
    except BaseException:
        sock.close()
        raise


def _unlink_if_ours(path: str, inode: int) -> None:
    """Remove the socket file this server made, unless it was replaced."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def _listening_fd(sock: object, fd: object) -> int | None:
    """``sock=`` / ``fd=``, checked: the descriptor of an already-bound TCP
    socket (the server serves a duplicate of it each time it starts)."""
    if sock is not None and fd is not None:
        raise ConfigurationError("sock and fd: give one, not both")
    if sock is not None:
        if not isinstance(sock, socket.socket):
            raise TypeError(f"sock: must be a socket.socket, not {type(sock).__name__}")
        fd = sock.fileno()
        if fd < 0:
            raise ConfigurationError("sock: the socket is closed")
    if fd is None:
        return None
    fd = check_int("fd", fd, 0, 1 << 30)
    try:
        probe = socket.socket(fileno=os.dup(fd))
    except OSError as e:
        raise ConfigurationError(f"fd {fd}: not an open socket ({e.strerror})") from None
    with probe:
        if probe.type != socket.SOCK_STREAM or probe.family not in (
                socket.AF_INET, socket.AF_INET6, socket.AF_UNIX):
            raise ConfigurationError(
                f"fd {fd}: must be a TCP or Unix stream socket, not {probe.family.name} "
                f"{probe.type.name}")
        try:
            name = probe.getsockname()
        except OSError as e:
            raise ConfigurationError(f"fd {fd}: {e.strerror}") from None
        if name in ("", b"") or (isinstance(name, tuple) and name[1] == 0):
            raise ConfigurationError(f"fd {fd}: the socket is not bound")
    return fd


class Server:
    """Serve ``protocol_factory()`` protocols on ``host:port``.

    Args:
        protocol_factory: called once per accepted connection (on its IO
            thread); returns a ``netring.Protocol`` or ``asyncio.Protocol``.
        host: address or name to bind (default 127.0.0.1).
        port: port to bind; 0 picks a free one (see ``port`` after start).
        pool: an ``IOPool`` to share with other servers; without one the
            server makes its own from the five pool arguments below.
        io_threads: IO threads (default: 1 on a GIL build, one per CPU on a
            free-threaded build; see ``default_io_threads``).
        backend: "auto" (default, or $NETRING_BACKEND), "io_uring" or "epoll".
        buffer_size: bytes per receive buffer (default 16 KiB).
        buffers_per_thread: receive buffers per IO thread (power of two,
            default 512).
        max_buffer_memory: cap on the bytes the engine buffers for
            connections (see ``IOPool``); default: no cap.
        zerocopy_threshold: zero-copy sends from this size (see
            ``IOPool``); default: off.
        backlog: listen backlog.
        reuse_port: set SO_REUSEPORT (several processes on one port).
        framing: how each connection's stream is cut into packets
            (``netring.Raw()`` by default; ``LengthPrefixed``, ``Delimited``,
            ``Exactly``): protocols then get ``packet_received``.
        idle_timeout: seconds with nothing received before the protocol's
            ``timeout_received()`` is called (default: never). The default
            ``timeout_received`` closes the connection.
        keepalive: ``(idle, interval, count)``: TCP keepalive probes after
            ``idle`` seconds of silence, every ``interval`` seconds, dropping
            the connection after ``count`` unanswered ones (default: off).
            For peers that vanish without a FIN; a dead peer is only certain
            when a send fails, and keepalive makes the kernel try one.
        max_connections: open connections at most (default: no limit). At
            the limit, ``overflow="hold"`` (default) stops taking connections
            from the accept queue (the kernel backlog holds them; clients
            wait) until one closes; ``overflow="close"`` accepts and closes
            each extra one at once. Closed ones count in
            ``stats()["connections_refused"]``.
        max_connections_per_ip: open connections from one peer address at
            most (default: no limit); an extra one is accepted and closed at
            once (holding it would stall every other address behind it).
        overflow: "hold" or "close", see ``max_connections``.
        max_write_buffer: bytes a connection may have queued for sending
            (default 64 MiB). Past it the peer is not reading: the
            connection is aborted, the reason logged, and ``connection_lost``
            gets ``netring.WriteBufferLimitError``. The water marks
            (``pause_writing``) warn long before.
        frame_timeout: seconds a framed packet (or line) may take from its
            first byte to its last (default: no limit). A slower one closes
            the connection with ``netring.FrameTimeoutError``; with
            ``idle_timeout`` this bounds what a silent or trickling peer can
            hold (slowloris).
        tls: a ``netring.TLSConfig``: serve TLS from the engine.
        proxy_protocol: ``"v1"``, ``"v2"`` or ``"any"``: every connection
            starts with a PROXY protocol header from a load balancer
            (HAProxy's ``send-proxy`` / ``send-proxy-v2``); ``peername`` is
            then the client's address (``get_extra_info("proxy_peername")``
            the proxy's). Parsed in the engine before TLS and framing. Needs
            ``trusted_proxies``: the networks (``"10.0.0.0/8"``, ``"::1"``)
            allowed to send one; a connection from elsewhere, or with a
            malformed, oversize or late header, is closed before it opens
            (counted in ``stats()["handshakes_failed"]``, logged at DEBUG).
        proxy_timeout: seconds a header may take (default 5).
        sock: serve an already-bound TCP socket (made by a supervisor,
            inherited...) instead of binding ``host:port``; the server uses
            a duplicate of its descriptor, so close ``sock`` yourself once
            started. ``fd``: the same, by descriptor number (e.g. from
            systemd socket activation; see ``netring.systemd``).
        path: serve a Unix domain stream socket at this path instead of
            ``host:port`` (a leading NUL byte: an abstract name). A stale
            socket file left by a dead server is replaced; a live server's,
            or a file that is not a socket, is never removed (``OSError``
            EADDRINUSE). The file is removed at shutdown if it is still this
            server's. ``peername`` is ``None`` for Unix clients.
        path_mode: the socket file's permissions (e.g. ``0o660``).
        workers: run the protocol's callbacks (all but ``connection_made``,
            which stays on the IO thread) on a ``netring.WorkerPool``, for
            handlers that block: a pool to share, or a thread count for a
            private pool that ``shutdown()`` closes. Per-connection order
            holds; see ``netring.workers``.
        priority: with a priority pool (``WorkerPool(queue="priority")``, or
            ``workers=N`` which then makes one), ``priority(packet) -> int``
            orders work across connections, lower first. It runs on the IO
            thread for every packet: keep it cheap.

    Wrong arguments raise ``TypeError`` or ``ConfigurationError`` (a
    ``ValueError``) here, naming the argument.
    """

    def __init__(
        self,
        protocol_factory: Callable[[], Any],
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        pool: IOPool | None = None,
        io_threads: int | None = None,
        backend: str | None = None,
        buffer_size: int | None = None,
        buffers_per_thread: int | None = None,
        max_buffer_memory: int | None = None,
        zerocopy_threshold: int | None = None,
        backlog: int = _native.DEFAULT_BACKLOG,
        reuse_port: bool = False,
        framing: Framing | None = None,
        idle_timeout: float | None = None,
        keepalive: tuple[float, float, int] | None = None,
        workers: WorkerPool | int | None = None,
        priority: Callable[[bytes], int] | None = None,
        max_connections: int | None = None,
        max_connections_per_ip: int | None = None,
        overflow: str = "hold",
        max_write_buffer: int | None = None,
        frame_timeout: float | None = None,
        tls: TLSConfig | None = None,
        proxy_protocol: str | None = None,
        trusted_proxies: Iterable[str] | None = None,
        proxy_timeout: float | None = DEFAULT_PROXY_TIMEOUT_SECONDS,
        sock: socket.socket | None = None,
        fd: int | None = None,
        path: str | os.PathLike[str] | None = None,
        path_mode: int | None = None,
    ) -> None:
        if not callable(protocol_factory):
            raise TypeError("protocol_factory: must be callable (a Protocol class or a function)")
        self._factory = protocol_factory
        self._host = _resolve(host)
        self._port = check_int("port", port, 0, 65535)
        self._backlog = check_int("backlog", backlog, 1, 65535)
        if not isinstance(reuse_port, bool):
            raise TypeError(f"reuse_port: must be a bool, not {type(reuse_port).__name__}")
        self._reuse_port = reuse_port
        self._framing: Framing = check_framing(framing)
        self._idle_timeout = (None if idle_timeout is None
                              else check_seconds("idle_timeout", idle_timeout, positive=True))
        self._keepalive = check_keepalive(keepalive)
        self._max_connections = (None if max_connections is None
                                 else check_int("max_connections", max_connections, 1))
        self._max_per_ip = (None if max_connections_per_ip is None
                            else check_int("max_connections_per_ip", max_connections_per_ip, 1))
        if overflow not in ("hold", "close"):
            raise ConfigurationError(f"overflow: must be 'hold' or 'close', not {overflow!r}")
        self._overflow = overflow
        self._max_write_buffer = (None if max_write_buffer is None
                                  else check_int("max_write_buffer", max_write_buffer, 1))
        self._frame_timeout = (None if frame_timeout is None
                               else check_seconds("frame_timeout", frame_timeout, positive=True))
        if tls is not None and not isinstance(tls, TLSConfig):
            raise TypeError(f"tls: must be a netring.TLSConfig, not {type(tls).__name__}")
        self._tls = tls
        self._proxy = _proxy_option(proxy_protocol, trusted_proxies, proxy_timeout)
        self._fd = _listening_fd(sock, fd)
        self._path = _unix_path(path, path_mode, sock, fd)
        self._path_mode = path_mode
        self._path_inode: int | None = None
        self._tls_native: Any = None  # this server's own copy, while it listens
        if priority is not None and not callable(priority):
            raise TypeError(f"priority: must be callable, not {type(priority).__name__}")
        if isinstance(workers, WorkerPool):
            if workers.is_closed():
                raise ConfigurationError("workers: the WorkerPool is closed")
            if priority is not None and workers.queue != "priority":
                raise ConfigurationError(
                    'priority: needs a WorkerPool(queue="priority"), not a FIFO one')
        elif workers is not None:
            check_int("workers", workers, 1, MAX_WORKER_THREADS)
        elif priority is not None:
            raise ConfigurationError("priority: needs workers= (a priority WorkerPool)")
        self._workers_arg = workers
        self._priority = priority
        self._work: _ServerWork | None = None
        pool_args = {"io_threads": io_threads, "backend": backend, "buffer_size": buffer_size,
                     "buffers_per_thread": buffers_per_thread,
                     "max_buffer_memory": max_buffer_memory,
                     "zerocopy_threshold": zerocopy_threshold}
        if pool is not None:
            if not isinstance(pool, IOPool):
                raise TypeError(f"pool: must be a netring.IOPool, not {type(pool).__name__}")
            for name, value in pool_args.items():
                if value is not None:
                    raise ConfigurationError(
                        f"{name}: set it on the IOPool, not on a Server given pool=")
            self._pool_args: dict[str, Any] | None = None
        else:
            # Checked now (errors at construction); the pool is built at start().
            self._pool_args = check_pool_options(**pool_args)
        self._pool = pool
        self._own_pool = pool is None
        self._listener: int | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> None:
        """Start the IO threads (unless on a shared pool) and begin
        accepting. Idempotent."""
        with self._lock:
            if self._listener is not None:
                return
            if self._pool is None or (self._own_pool and self._pool.is_closed()):
                self._pool = IOPool(**(self._pool_args or {}))
            factory = self._factory
            work = None
            if self._workers_arg is not None:
                work = self._make_work()
                factory = work.factory(self._factory)
            tls = None if self._tls is None else self._tls._native.for_listener(self._tls._context)
            # The engine owns what it is given: a duplicate of the caller's,
            # or the Unix socket bound here.
            fd = None if self._fd is None else os.dup(self._fd)
            if self._path is not None:
                fd, self._path_inode = _bind_unix(self._path, self._path_mode, self._backlog)
            try:
                listener, host, port = self._pool._engine.listen(
                    self._host, self._port, self._backlog, self._reuse_port, factory,
                    self._framing._spec(), self._idle_timeout, self._keepalive,
                    self._max_write_buffer, self._frame_timeout, self._max_connections,
                    self._max_per_ip, self._overflow == "close", tls,
                    self._max_unready(), self._proxy, fd)
            except BaseException:
                if work is not None and work.owned:
                    work.pool.close(0.0)
                if self._own_pool:
                    self._pool.close(0.0)
                raise
            self._work = work
            self._tls_native = tls
            if self._path is not None:
                host = self._path
            self._listener, self._host, self._port = listener, host, port
            self._stop.clear()

    def _max_unready(self) -> int | None:
        """Connections whose handshake or PROXY header is not done yet, at
        most (``TLSConfig.max_handshakes`` per IO thread)."""
        if self._tls is None and self._proxy is None:
            return None
        per_thread = DEFAULT_MAX_HANDSHAKES if self._tls is None else self._tls.max_handshakes
        assert self._pool is not None
        return per_thread * self._pool.io_threads

    def reload_tls(self, tls: TLSConfig) -> None:
        """Use ``tls`` (certificates, SNI names, client auth, ALPN...) for
        the handshakes that start from now on, without a restart: open
        connections keep the session they negotiated, and nothing is
        refused meanwhile. To pick up renewed files, make a new
        ``TLSConfig`` from the same paths (a bad file raises here, and the
        server keeps its old certificates). Only this server changes, even
        if others were started with the same config."""
        if not isinstance(tls, TLSConfig):
            raise TypeError(f"tls: must be a netring.TLSConfig, not {type(tls).__name__}")
        with self._lock:
            if self._tls is None:
                raise ConfigurationError(
                    "reload_tls: this server was made without tls=; TLS cannot be added later")
            self._tls = tls
            if self._tls_native is not None:
                self._tls_native.reload(tls._native)

    def _make_work(self) -> _ServerWork:
        workers = self._workers_arg
        if isinstance(workers, WorkerPool):
            if workers.is_closed():
                raise ConfigurationError("workers: the WorkerPool is closed")
            return _ServerWork(workers, self._priority, owned=False)
        assert isinstance(workers, int)
        queue = "fifo" if self._priority is None else "priority"
        return _ServerWork(WorkerPool(workers, queue=queue), self._priority, owned=True)

    def serve_forever(self, grace: float = DEFAULT_GRACE_SECONDS,
                      on_ready: Callable[[], Any] | None = None) -> None:
        """Start if needed and block until SIGINT/SIGTERM or ``shutdown()``;
        then drain gracefully within ``grace`` seconds. ``on_ready()`` runs
        once the server accepts connections and the signal handlers are in
        place (print a ready line there: a signal sent right after it
        drains instead of killing the process)."""
        restore: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            def on_signal(signum: int, frame: FrameType | None) -> None:
                self._stop.set()
            for sig in (signal.SIGINT, signal.SIGTERM):
                restore[sig] = signal.signal(sig, on_signal)
        try:
            self.start()
            if on_ready is not None:
                on_ready()
            while not self._stop.wait(0.1):
                failure = self._pool._engine.failure() if self._pool is not None else None
                if failure is not None:
                    raise NetringError(f"the server stopped: {failure}")
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            self.shutdown(grace)

    def shutdown(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Stop accepting, flush and close this server's connections, abort
        what is still open after ``grace`` seconds; with its own pool, join
        the IO threads. ``connection_lost`` has run for every connection
        when this returns (unless called from one of its own callbacks).

        With ``workers=``: stop accepting and reading, let the workers finish
        the queued work within ``grace``, then close; work still queued then
        is dropped (``connection_lost`` still runs, within half a second
        more), and a worker still inside a callback is logged by thread
        name. A private worker pool is closed."""
        self._stop.set()
        with self._lock:
            listener, self._listener = self._listener, None
            work, self._work = self._work, None
            inode, self._path_inode = self._path_inode, None
        pool = self._pool
        if listener is None or pool is None:
            return
        if self._path is not None and inode is not None:
            _unlink_if_ours(self._path, inode)
        grace = check_seconds("grace", grace)

        def close_connections(remaining: float) -> None:
            if self._own_pool:
                pool.close(remaining)
            else:
                pool._engine.close_listener(listener, remaining)

        if work is None:
            close_connections(grace)
            return
        pool._engine.unlisten(listener)
        work.shutdown(grace, close_connections)

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
    def pool(self) -> IOPool | None:
        """The IO pool (shared, or the server's own once started)."""
        return self._pool

    @property
    def workers(self) -> WorkerPool | None:
        """The worker pool callbacks run on (a private one once started), or None."""
        if self._work is not None:
            return self._work.pool
        return self._workers_arg if isinstance(self._workers_arg, WorkerPool) else None

    @property
    def framing(self) -> Framing:
        """The framing new connections start with."""
        return self._framing

    @property
    def io_threads(self) -> int:
        """Number of IO threads."""
        if self._pool is not None:
            return self._pool.io_threads
        n = (self._pool_args or {}).get("io_threads")
        return default_io_threads() if n is None else int(n)

    @property
    def backend(self) -> str:
        """The backend in use ("io_uring" or "epoll"), or the request before start."""
        if self._pool is not None:
            return self._pool.backend
        return str((self._pool_args or {}).get("backend", "auto"))

    def is_serving(self) -> bool:
        """True between ``start()`` and ``shutdown()``."""
        return (self._listener is not None and self._pool is not None
                and not self._pool.is_closed())

    def stats(self) -> dict[str, Any]:
        """Counters: connections_open, connections_accepted,
        connections_closed, bytes_in, bytes_out, frames_in, frames_out,
        the frame and handshake failures (over the whole pool when it is
        shared; the README's "Metrics" lists every key),
        server_connections_open (this server's), backend,
        backend_fallback_reason, io_threads; ``turn_seconds`` and
        ``callback_seconds``, histograms of the IO threads' busy time per
        turn and of the time in callbacks per turn that had events
        (``{"buckets": [(upper bound in seconds, cumulative count), ...],
        "count": n, "sum": seconds}``, bounds 1 µs to 2^22 µs doubling, then
        ``inf``); with ``workers=``, ``workers``: the pool's
        ``WorkerPool.stats()``."""
        if self._pool is None:
            return {"connections_open": 0, "connections_accepted": 0,
                    "connections_closed": 0, "bytes_in": 0, "bytes_out": 0,
                    "server_connections_open": 0, "backend": self.backend,
                    "backend_fallback_reason": None, "io_threads": self.io_threads}
        stats = self._pool.stats()
        work = self._work
        if work is not None:
            stats["workers"] = work.pool.stats()
        listener = self._listener
        stats["server_connections_open"] = (
            0 if listener is None else self._pool._engine.listener_connections(listener))
        return stats

    def __repr__(self) -> str:
        state = "serving" if self.is_serving() else "stopped"
        return f"<netring.Server {self._host}:{self._port} {self.backend} {state}>"


atexit.register(shutdown_all)
