"""netring inside asyncio: the running loop's own thread drives the engine.

``await netring.aio.create_server(factory, host, port, ...)`` serves
protocols on the running asyncio loop: each loop gets one hosted engine (no
IO thread) whose descriptor the loop watches (``loop.add_reader``); when it
is readable, one turn reaps the kernel's completions, calls the protocols'
callbacks on the loop thread (so they may ``create_task``, ``await`` in
tasks they start, use any asyncio library), settles and submits. The
engine's next deadline (timers, timeouts) is a ``loop.call_later``. Writes
from tasks outside a callback, or from other threads, reach the engine
through its mailbox, whose doorbell makes the descriptor readable.

The protocols and transports are netring's own, as on ``netring.Server``:
every framing, limit, timeout and ``tls=`` option works the same.

``start_server`` / ``open_connection`` give asyncio's own ``StreamReader``
and ``StreamWriter`` over netring transports.

``install()`` (or ``new_event_loop()`` as a ``loop_factory``) gives
asyncio's own ``loop.create_server`` / ``create_connection`` (and so
``asyncio.start_server``, ``open_connection``, uvicorn, aiohttp...) to
netring for TCP by host and port, with or without ``ssl=``; anything else
(``sock=`` other than TCP, Unix sockets, an ``ssl.SSLContext`` whose
settings the engine cannot honour...) falls through to the loop's own
implementation, logged once at DEBUG. A TCP ``sock=`` is served by netring
too (uvicorn's workers pass one). ``ssl=`` takes an ``ssl.SSLContext``
(converted by ``TLSConfig.from_ssl_context`` / ``TLSClientConfig.
from_ssl_context``: make the context after importing netring), a
``netring.TLSConfig`` / ``TLSClientConfig``, or ``True`` for a client;
``start_tls`` on a netring transport is asyncio's own (its Python TLS).

``start_packet_server`` / ``open_packet_connection`` are the framed form:
``await reader.read_packet()`` (or ``async for packet in reader``) returns
whole packets cut by the engine, ``writer.send_packet()`` frames them.

``workers=`` runs every callback after ``connection_made`` on a worker
thread, as on ``netring.Server``: blocking work off the loop.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import copy
import logging
import math
import os
import select
import socket
import ssl as _ssl
import threading
import time
import weakref
from collections.abc import Callable
from types import TracebackType
from typing import Any

from . import _native
from ._args import check_pool_options, check_seconds
from .errors import ConfigurationError
from .pool import IOPool
from .server import DEFAULT_GRACE_SECONDS, Server
from .tls import TLSClientConfig, TLSConfig

__all__ = ["AioServer", "PacketReader", "PacketWriter", "configure", "create_connection",
           "create_server", "engine_stats", "install", "new_event_loop", "open_connection",
           "open_packet_connection", "sendfile", "start_packet_server", "start_server"]

log = logging.getLogger("netring.aio")

#: How long closing a loop waits for its engine to finish (seconds).
CLOSE_TIMEOUT = 2.0

#: What `configure` set (checked), for the engines of loops made after it.
_configured: dict[str, Any] = {}


def configure(*, backend: str | None = None, buffer_size: int | None = None,
              buffers_per_thread: int | None = None, max_buffer_memory: int | None = None,
              zerocopy_threshold: int | None = None) -> None:
    """The engine options of engines made from now on (a loop's engine is
    made when it first serves or connects): ``IOPool``'s, with the same
    checks and defaults (``backend``: ``$NETRING_BACKEND``, or "auto").
    Each call replaces the last; ``configure()`` restores the defaults.
    Engines already running keep what they were made with."""
    global _configured
    options = check_pool_options(None, "auto" if backend is None else backend, buffer_size,
                                 buffers_per_thread, max_buffer_memory, zerocopy_threshold)
    del options["io_threads"]  # the loop's own thread, always one
    if backend is None:
        del options["backend"]  # $NETRING_BACKEND when the engine is made
    _configured = {k: v for k, v in options.items() if v is not None}


def _engine_options() -> dict[str, Any]:
    options = dict(_configured)
    if "backend" not in options:
        options["backend"] = os.environ.get("NETRING_BACKEND", "auto") or "auto"
    return options


class _Host:
    """One asyncio loop's hosted engine: the loop watches its descriptor and
    runs its turns."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        engine, turns = _native.Engine.hosted(**_engine_options())
        self.pool = IOPool._around(engine)
        self.turns: Any = turns
        self.fd: int = turns.fd()
        self._loop = weakref.ref(loop)
        # NOTE: weak, like the loop: the loop's end must not wait for this
        # host (whose finalizer closes the engine) to let go of it.
        self._timer: weakref.ref[asyncio.Handle] | None = None
        # When the timer fires, on time.monotonic(); inf while there is
        # none (cancelled, or it has fired).
        self._timer_when = math.inf
        self.closed = False
        self._thread = threading.get_ident()
        self._closer: Any = None
        loop.add_reader(self.fd, self._run)
        # Writes from tasks apply at once; the first after a turn asks for
        # the next one (settle and submit once per loop iteration).
        turns.attach(self._kick)
        self._run()  # the first turn submits what the engine armed at start

    def _run(self) -> None:
        # NOTE: the hot path of every loop wake-up: one native call, and
        # the timer touched only when the engine's deadline moves earlier.
        if self.closed:
            return
        when = self.turns.turn()
        if when is None:
            self._detach(self._loop())
        elif when < self._timer_when:
            self._schedule(when)

    def _on_timer(self) -> None:
        self._timer = None
        self._timer_when = math.inf
        self._run()

    def _cancel_timer(self) -> None:
        timer = self._timer() if self._timer is not None else None
        if timer is not None:
            timer.cancel()
        self._timer = None
        self._timer_when = math.inf

    def _kick(self) -> None:
        loop = self._loop()
        if loop is not None and not self.closed:
            loop.call_soon(self._run)

    def _schedule(self, when: float) -> None:
        """Fire the timer at `when` (earlier than the one set, if any).

        The engine nearly always has a deadline (its once-a-second
        housekeeping): a timer that fires no later than needed is kept
        instead of made anew every turn; one that fires early only runs an
        idle turn. `inf` (nothing scheduled) never gets here."""
        loop = self._loop()
        if loop is None:
            return
        self._cancel_timer()
        # NOTE: `when` is on time.monotonic(), which asyncio's and uvloop's
        # loop.time() are; converted anyway for a loop with its own clock.
        at = loop.time() + max(0.0, when - time.monotonic())
        self._timer = weakref.ref(loop.call_at(at, self._on_timer))
        self._timer_when = when

    def _detach(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self.closed = True
        self._cancel_timer()
        if loop is not None and not loop.is_closed():
            loop.remove_reader(self.fd)

    def close(self, grace: float = 0.0) -> None:
        """Shut the engine down and drive it to its end here (blocking, at
        most ``grace`` + ``CLOSE_TIMEOUT`` seconds), on the loop's thread."""
        if self.turns is None:
            return
        if threading.get_ident() != self._thread:
            # NOTE: a garbage collection on another thread ran the loop's
            # finalizer; only the loop's thread may drive (or drop) its
            # ring. Kept for good (a loop closed without shutdown_asyncgens,
            # then collected elsewhere): nothing else can be done safely.
            _orphans.append(self)
            log.debug("netring.aio: a loop's engine outlived it on another thread")
            return
        self._detach(self._loop())
        self.pool._engine.shutdown(grace)
        end = time.monotonic() + grace + CLOSE_TIMEOUT
        while (when := self.turns.turn()) is not None:
            left = end - time.monotonic()
            if left <= 0:
                log.warning("netring.aio: the engine did not finish closing in time")
                break
            delay = max(0.0, when - time.monotonic())
            select.select([self.fd], [], [], min(left, 0.05, delay))
        self.turns = None
        self._closer = None  # it holds the loop (its finalizer hook)


_hosts: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Host] = (
    weakref.WeakKeyDictionary())

#: Hosts whose loop was collected on another thread (see `_Host.close`).
_orphans: list[_Host] = []


async def _closer(host: _Host) -> Any:
    """An async generator the loop closes in ``shutdown_asyncgens`` (which
    ``asyncio.run`` and ``Runner.close`` call before closing the loop): the
    engine is closed there, on the loop's thread, inside the loop."""
    try:
        yield
    finally:
        host.close()


def _host(loop: asyncio.AbstractEventLoop | None = None) -> _Host:
    loop = loop or asyncio.get_running_loop()
    host = _hosts.get(loop)
    if host is None or host.closed:
        host = _Host(loop)
        _hosts[loop] = host
        # NOTE: when the loop ends, its engine finishes (connections closed,
        # descriptors and the ring released): in shutdown_asyncgens, or, for
        # a loop closed without it, when the loop is collected.
        closer = _closer(host)
        host._closer = closer  # the loop keeps async generators weakly
        try:
            closer.asend(None).send(None)  # to its yield: the loop tracks it now
        except StopIteration:
            pass
        weakref.finalize(loop, host.close)
    return host


def engine_stats(loop: asyncio.AbstractEventLoop | None = None) -> dict[str, Any]:
    """The running loop's engine's ``stats()`` (as ``IOPool.stats()``)."""
    return _host(loop).pool.stats()


class _SocketName:
    """What ``AioServer.sockets`` lists: a listening socket's name, family
    and type (the engine owns the socket itself)."""

    type = socket.SOCK_STREAM
    proto = socket.IPPROTO_TCP

    def __init__(self, address: tuple[str, int]) -> None:
        self._address = address
        self.family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET

    def getsockname(self) -> tuple[str, int]:
        return self._address

    def __repr__(self) -> str:
        return f"<netring listening socket {self._address[0]}:{self._address[1]}>"


class AioServer:
    """A server on the running loop's engine; behaves like ``asyncio.Server``
    (``close``, ``wait_closed``, ``serve_forever``, ``async with``,
    ``sockets``, ``is_serving``)."""

    def __init__(self, server: Server, loop: asyncio.AbstractEventLoop,
                 grace: float, close_connections: bool = True) -> None:
        self._server = server
        self._loop = loop
        self._grace = grace
        # False (asyncio's own create_server, after install()): close() only
        # stops accepting, as asyncio.Server.close does; the application
        # ends its connections and wait_closed() waits for them.
        self._close_connections = close_connections
        self._listener: int | None = server._listener
        self._closed = loop.create_future()
        self._serving_forever: asyncio.Future[None] | None = None
        # The socket a loop's create_server(sock=) was given: it stays open
        # (and usable, as asyncio leaves it) until close().
        self._given: socket.socket | None = None

    @property
    def address(self) -> tuple[str, int]:
        return self._server.address

    @property
    def port(self) -> int:
        return self._server.port

    @property
    def sockets(self) -> tuple[_SocketName, ...]:
        return () if self._listener is None else (_SocketName(self._server.address),)

    def get_loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def is_serving(self) -> bool:
        return self._listener is not None

    async def start_serving(self) -> None:
        """Already serving (servers start at creation)."""

    def stats(self) -> dict[str, Any]:
        return self._server.stats()

    def close(self) -> None:
        """Stop accepting and close the connections gracefully (flushing
        what was written; those still open after the server's grace are
        aborted). Returns at once; ``await wait_closed()`` for the end."""
        listener, self._listener = self._listener, None
        if self._given is not None:
            self._given.close()
            self._given = None
        if listener is None:
            return
        self._server._listener = None
        engine = self._server.pool._engine  # type: ignore[union-attr]
        work, self._server._work = self._server._work, None
        if work is not None:
            # NOTE: with workers= the shutdown waits for the worker threads
            # (queued work, then connection_lost on them): a thread of its
            # own does the waiting while this loop goes on driving the
            # engine it waits for.
            engine.unlisten(listener)
            self._loop.create_task(self._finish_work(engine, listener, work))
        elif self._close_connections:
            engine.close_listener(listener, self._grace, wait=False)
            self._loop.create_task(self._finish(engine, listener))
        else:
            engine.unlisten(listener)
            self._loop.create_task(self._finish(engine, listener))
        if self._serving_forever is not None and not self._serving_forever.done():
            self._serving_forever.cancel()

    async def _finish_work(self, engine: Any, listener: int, work: Any) -> None:
        def close_connections(remaining: float) -> None:
            engine.close_listener(listener, remaining, wait=True)

        try:
            await self._loop.run_in_executor(None, work.shutdown, self._grace,
                                             close_connections)
        finally:
            engine.forget_listener(listener)
            if not self._closed.done():
                self._closed.set_result(None)

    async def _finish(self, engine: Any, listener: int) -> None:
        end = self._loop.time() + self._grace + 1.0
        while engine.listener_connections(listener) > 0 and (
                not self._close_connections or self._loop.time() < end):
            await asyncio.sleep(0.005)
        engine.forget_listener(listener)
        if not self._closed.done():
            self._closed.set_result(None)

    async def wait_closed(self) -> None:
        """Wait until ``close()`` is done: every connection's
        ``connection_lost`` has run."""
        if self._listener is not None:
            # asyncio's Server waits for close() first, then the connections.
            while self._listener is not None:
                await asyncio.sleep(0.01)
        await asyncio.shield(self._closed)

    async def serve_forever(self) -> None:
        """Serve until cancelled (or ``close()``), then close."""
        if self._serving_forever is not None:
            raise RuntimeError("serve_forever() is already running")
        self._serving_forever = self._loop.create_future()
        try:
            await self._serving_forever
        except asyncio.CancelledError:
            try:
                self.close()
                await self.wait_closed()
            finally:
                raise
        finally:
            self._serving_forever = None

    async def __aenter__(self) -> AioServer:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        self.close()
        await self.wait_closed()

    def __repr__(self) -> str:
        state = "serving" if self.is_serving() else "closed"
        return f"<netring.aio.AioServer {self._server.host}:{self._server.port} {state}>"


async def create_server(protocol_factory: Callable[[], Any], host: str = "127.0.0.1",
                        port: int = 0, *, grace: float = DEFAULT_GRACE_SECONDS,
                        _close_connections: bool = True, **options: Any) -> AioServer:
    """Serve ``protocol_factory()`` protocols on ``host:port`` from the
    running loop's thread. ``options`` are ``netring.Server``'s (framing,
    limits, timeouts, ``tls=``, ``backlog``, ``reuse_port``, ``workers``...)
    except the pool's; ``grace`` is what ``close()`` gives connections to
    finish. With ``workers=``, every callback after ``connection_made`` runs
    on a worker thread (blocking work, off the loop), as on
    ``netring.Server``; ``close()`` then lets queued work finish within
    ``grace`` before closing. Returns once the server accepts connections."""
    loop = asyncio.get_running_loop()
    grace = check_seconds("grace", grace)
    for name in ("pool", "io_threads", "backend", "buffer_size", "buffers_per_thread",
                 "max_buffer_memory", "zerocopy_threshold"):
        if name in options:
            where = ("netring.aio.configure() sets it for the loop's engine"
                     if name not in ("pool", "io_threads") else
                     "the loop's engine is one IO thread: the loop's own")
            raise ConfigurationError(f"{name}: not an option of create_server inside asyncio; "
                                     f"{where}")
    server = Server(protocol_factory, host, port, pool=_host(loop).pool, **options)
    server.start()
    return AioServer(server, loop, grace, _close_connections)


async def create_connection(protocol_factory: Callable[[], Any], host: str, port: int,
                            **options: Any) -> tuple[Any, Any]:
    """Connect to ``host:port`` from the running loop's engine; returns
    ``(transport, protocol)`` once connected (after the handshake with
    ``tls=``). ``options`` are ``IOPool.connect``'s (``timeout``,
    ``framing``, ``local_addr``, ``idle_timeout``, ``tls``...)."""
    loop = asyncio.get_running_loop()
    future: concurrent.futures.Future[tuple[Any, Any]] = _host(loop).pool.connect(
        protocol_factory, host, port, **options)
    return await asyncio.wrap_future(future, loop=loop)


#: asyncio's default stream buffer limit (64 KiB).
_STREAM_LIMIT = 2 ** 16


async def start_server(client_connected_cb: Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                                     Any],
                       host: str = "127.0.0.1", port: int = 0, *, limit: int = _STREAM_LIMIT,
                       **options: Any) -> AioServer:
    """``asyncio.start_server`` on the loop's engine: ``client_connected_cb(reader,
    writer)`` (a function or a coroutine, run as a task) gets asyncio's own
    ``StreamReader`` / ``StreamWriter`` for each connection; ``drain()``
    honours the transport's water marks. ``options`` as ``create_server``."""
    loop = asyncio.get_running_loop()

    def factory() -> asyncio.StreamReaderProtocol:
        reader = asyncio.StreamReader(limit=limit, loop=loop)
        return asyncio.StreamReaderProtocol(reader, client_connected_cb, loop=loop)

    return await create_server(factory, host, port, **options)


async def open_connection(host: str, port: int, *, limit: int = _STREAM_LIMIT,
                          **options: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """``asyncio.open_connection`` on the loop's engine: ``(reader, writer)``
    once connected. ``options`` as ``create_connection``."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport, _ = await create_connection(lambda: protocol, host, port, **options)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def sendfile(transport: Any, file: Any, offset: int = 0, count: int | None = None) -> int:
    """Send ``count`` bytes of ``file`` from ``offset`` (``None``: to its
    end) on a netring transport through the kernel, as ``loop.sendfile``
    does (and, as it does, leave the file's position after the bytes sent);
    returns how many were sent, once all are. See ``Transport.sendfile``."""
    sent = await asyncio.wrap_future(transport.sendfile(file, offset, count))
    if sent and hasattr(file, "seek"):
        file.seek(offset + sent)
    return sent


# -- asyncio's own API on the engine (install) --------------------------------

_fell_through: set[str] = set()


def _fall_through(what: str, why: str) -> None:
    if why not in _fell_through:
        _fell_through.add(why)
        log.debug("netring.aio: %s falls through to the loop's own: %s", what, why)


#: asyncio's default TLS handshake timeout (its ``ssl_handshake_timeout``).
ASYNCIO_HANDSHAKE_TIMEOUT = 60.0


def _ssl_timeouts(ssl: Any, more: dict[str, Any]) -> float:
    """Take asyncio's TLS timeouts out of ``more`` (only with ``ssl=``, as
    asyncio takes them): the handshake's, and the shutdown's (netring sends
    ``close_notify`` and does not wait for the peer's, so there is nothing
    to bound)."""
    if not ssl:
        return ASYNCIO_HANDSHAKE_TIMEOUT
    more.pop("ssl_shutdown_timeout", None)
    timeout = more.pop("ssl_handshake_timeout", None)
    return ASYNCIO_HANDSHAKE_TIMEOUT if timeout is None else timeout


def _server_tls(ssl: Any, timeout: float) -> TLSConfig | str:
    """asyncio's ``ssl=`` for a server as a ``TLSConfig``, or why not."""
    if isinstance(ssl, TLSConfig):
        return ssl
    if not isinstance(ssl, _ssl.SSLContext):
        return f"ssl={type(ssl).__name__} is not an SSLContext"
    try:
        return TLSConfig.from_ssl_context(ssl, handshake_timeout=timeout)
    except ConfigurationError as e:
        return str(e)


_default_client_context: _ssl.SSLContext | None = None


def _client_tls(ssl: Any, timeout: float) -> TLSClientConfig | str:
    """asyncio's ``ssl=`` for a client as a ``TLSClientConfig`` (one per
    context and settings, so connects resume sessions), or why not."""
    global _default_client_context
    if isinstance(ssl, TLSClientConfig):
        return ssl
    if ssl is True:
        if _default_client_context is None:
            _default_client_context = _ssl.create_default_context()
        ssl = _default_client_context
    if not isinstance(ssl, _ssl.SSLContext):
        return f"ssl={type(ssl).__name__} is not an SSLContext"
    notes = ssl.__dict__.get("_netring_tls_notes")
    key = (timeout, ssl.verify_mode, ssl.check_hostname, ssl.options, ssl.minimum_version,
           ssl.maximum_version, ssl.verify_flags, ssl.keylog_filename,
           None if notes is None else notes.get("changes"),
           tuple(sorted(ssl.cert_store_stats().items())),
           tuple(c["name"] for c in ssl.get_ciphers()))
    cached = ssl.__dict__.get("_netring_client")
    if cached is not None and cached[0] == key:
        return cached[1]  # type: ignore[no-any-return]
    made: TLSClientConfig | str
    try:
        made = TLSClientConfig.from_ssl_context(ssl, handshake_timeout=timeout)
    except ConfigurationError as e:
        made = str(e)  # remembered too: the next connect falls through at once
    ssl.__dict__["_netring_client"] = (key, made)
    return made


def _unsupported(**given: Any) -> str | None:
    """Why asyncio's arguments cannot go to netring (None: they can)."""
    for name, value in given.items():
        if value is not None and value is not False and value != 0:
            return f"{name}= is not handled by netring yet"
    return None


class _NetringLoop:
    """What ``install()`` adds to a loop class: ``create_server`` and
    ``create_connection`` for plain TCP by host and port run on the loop's
    netring engine, and ``sendfile`` on their transports through the
    engine; the rest goes to the loop's own."""

    async def create_server(self, protocol_factory: Callable[[], Any], host: Any = None,
                            port: Any = None, *, family: int = 0, flags: int = 0,
                            sock: Any = None, backlog: int = 100, ssl: Any = None,
                            reuse_address: bool | None = None, reuse_port: bool | None = None,
                            start_serving: bool = True, **more: Any) -> Any:
        tcp_sock = sock is not None and sock.type == socket.SOCK_STREAM and sock.family in (
            socket.AF_INET, socket.AF_INET6)
        given = dict(more)
        handshake_timeout = _ssl_timeouts(ssl, given)
        why = _unsupported(sock=None if tcp_sock else sock, family=family,
                           start_serving=not start_serving, **given)
        if why is None and not (host is None or isinstance(host, str)):
            why = "several hosts"
        tls: TLSConfig | None = None
        if why is None and ssl:
            made = _server_tls(ssl, handshake_timeout)
            if isinstance(made, str):
                why = made
            else:
                tls = made
        if why is not None:
            _fall_through("create_server", why)
            return await super().create_server(  # type: ignore[misc]
                protocol_factory, host, port, family=family, flags=flags, sock=sock,
                backlog=backlog, ssl=ssl, reuse_address=reuse_address, reuse_port=reuse_port,
                start_serving=start_serving, **more)
        if tcp_sock:
            # asyncio's server owns the socket it is given: so does this one
            # (the engine serves a duplicate; the original stays open, as
            # asyncio's does, until the server closes).
            server = await create_server(protocol_factory, sock=sock, backlog=backlog,
                                         tls=tls, _close_connections=False)
            server._given = sock
            return server
        return await create_server(protocol_factory, host or "0.0.0.0", int(port or 0),
                                   backlog=backlog, reuse_port=bool(reuse_port), tls=tls,
                                   _close_connections=False)

    async def create_connection(self, protocol_factory: Callable[[], Any], host: Any = None,
                                port: Any = None, *, ssl: Any = None, family: int = 0,
                                proto: int = 0, flags: int = 0, sock: Any = None,
                                local_addr: Any = None, server_hostname: Any = None,
                                **more: Any) -> Any:
        given = dict(more)
        handshake_timeout = _ssl_timeouts(ssl, given)
        why = _unsupported(family=family, proto=proto, flags=flags, sock=sock, **given)
        if why is None and (host is None or port is None):
            why = "no host and port"
        if why is None and server_hostname is not None and not ssl:
            why = "server_hostname= without ssl="
        if why is None and server_hostname == "":
            why = "server_hostname='' (no host name check)"
        tls: TLSClientConfig | None = None
        if why is None and ssl:
            made = _client_tls(ssl, handshake_timeout)
            if isinstance(made, str):
                why = made
            else:
                tls = made
                if server_hostname is not None and server_hostname != tls.server_hostname:
                    tls = copy.copy(tls)  # the same session cache, another name
                    tls.server_hostname = server_hostname
        if why is not None:
            _fall_through("create_connection", why)
            return await super().create_connection(  # type: ignore[misc]
                protocol_factory, host, port, ssl=ssl, family=family, proto=proto,
                flags=flags, sock=sock, local_addr=local_addr,
                server_hostname=server_hostname, **more)
        return await create_connection(protocol_factory, host, int(port),
                                       local_addr=local_addr, tls=tls)


    async def start_tls(self, transport: Any, protocol: Any, sslcontext: Any, *,
                        server_side: bool = False, server_hostname: str | None = None,
                        ssl_handshake_timeout: float | None = None,
                        ssl_shutdown_timeout: float | None = None) -> Any:
        """Upgrade a connection to TLS (``StreamWriter.start_tls``, STARTTLS
        protocols, HTTPS through a proxy's tunnel). On a netring transport
        this is asyncio's own upgrade (its ``SSLProtocol`` over the
        transport, the loop's Python TLS, as the loop's own transports
        get): the engine's TLS starts only with a connection."""
        if not isinstance(transport, _native.Transport):
            return await super().start_tls(  # type: ignore[misc]
                transport, protocol, sslcontext, server_side=server_side,
                server_hostname=server_hostname, ssl_handshake_timeout=ssl_handshake_timeout,
                ssl_shutdown_timeout=ssl_shutdown_timeout)
        if not isinstance(sslcontext, _ssl.SSLContext):
            raise TypeError(f"sslcontext is expected to be an instance of ssl.SSLContext, "
                            f"got {sslcontext!r}")
        from asyncio import sslproto

        loop: Any = self
        waiter = loop.create_future()
        ssl_protocol = sslproto.SSLProtocol(
            loop, protocol, sslcontext, waiter, server_side, server_hostname,
            ssl_handshake_timeout=ssl_handshake_timeout,
            ssl_shutdown_timeout=ssl_shutdown_timeout, call_connection_made=False)
        # As asyncio's: paused, so that nothing reaches the TLS protocol
        # before its connection_made.
        transport.pause_reading()
        transport.set_protocol(ssl_protocol)
        made = loop.call_soon(ssl_protocol.connection_made, transport)
        resumed = loop.call_soon(transport.resume_reading)
        try:
            await waiter
        except BaseException:
            transport.close()
            made.cancel()
            resumed.cancel()
            raise
        return ssl_protocol._app_transport

    async def sendfile(self, transport: Any, file: Any, offset: int = 0,
                       count: int | None = None, *, fallback: bool = True) -> int:
        if isinstance(transport, _native.Transport):
            return await sendfile(transport, file, offset, count)
        return await super().sendfile(  # type: ignore[misc]
            transport, file, offset, count, fallback=fallback)


class NetringEventLoop(_NetringLoop, asyncio.SelectorEventLoop):  # type: ignore[misc]
    """The stdlib's loop with TCP servers and connections on netring."""


def _loop_class(loop: str) -> type[asyncio.AbstractEventLoop]:
    if loop not in ("auto", "asyncio", "uvloop"):
        raise ConfigurationError(f"loop: 'auto', 'asyncio' or 'uvloop', not {loop!r}")
    if loop != "asyncio":
        try:
            import uvloop
        except ImportError:
            if loop == "uvloop":
                raise ConfigurationError("loop='uvloop': uvloop is not installed") from None
        else:
            return type("NetringUVLoop", (_NetringLoop, uvloop.Loop), {
                "__doc__": "uvloop's loop with TCP servers and connections on netring."})
    return NetringEventLoop


def new_event_loop(loop: str = "auto") -> asyncio.AbstractEventLoop:
    """A new loop whose ``create_server``/``create_connection`` run on
    netring: uvloop's (``auto`` when it is installed, or ``uvloop``) or the
    stdlib's (``asyncio``). Usable as ``asyncio.Runner(loop_factory=...)``
    (with ``functools.partial`` to choose)."""
    return _loop_class(loop)()


class _Policy(asyncio.DefaultEventLoopPolicy):
    def __init__(self, loop: str) -> None:
        super().__init__()
        self._loop_kind = loop

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        return new_event_loop(self._loop_kind)


def install(loop: str = "auto") -> None:
    """Make asyncio's new loops netring's (see ``new_event_loop``): after
    this, ``asyncio.run(main())`` serves ``loop.create_server``,
    ``asyncio.start_server`` and friends from the engine, unchanged."""
    _loop_class(loop)  # check now
    asyncio.set_event_loop_policy(_Policy(loop))


# -- framed streams -------------------------------------------------------------

#: Packets a PacketReader holds before it pauses reading (then resumes at half).
PACKET_QUEUE_LIMIT = 256


class PacketReader:
    """Whole packets of a framed connection, awaited one at a time:
    ``await read_packet()`` (``None`` at the end), or ``async for``. Holds
    at most ``limit`` packets; past it the connection stops reading until
    the application catches up (backpressure to the peer)."""

    def __init__(self, limit: int = PACKET_QUEUE_LIMIT) -> None:
        self._packets: collections.deque[bytes] = collections.deque()
        self._limit = limit
        self._waiter: asyncio.Future[None] | None = None
        self._eof = False
        self._exc: BaseException | None = None
        self._transport: Any = None
        self._paused = False

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _feed(self, packet: bytes) -> None:
        self._packets.append(packet)
        if len(self._packets) >= self._limit and not self._paused and self._transport:
            self._paused = True
            self._transport.pause_reading()
        self._wake()

    def _end(self, exc: BaseException | None) -> None:
        self._eof = True
        self._exc = exc
        self._wake()

    async def read_packet(self) -> bytes | None:
        """The next packet; ``None`` once the peer ended the stream. A
        connection that broke (a framing error, a reset) raises its error."""
        while not self._packets:
            if self._eof:
                if self._exc is not None:
                    raise self._exc
                return None
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        packet = self._packets.popleft()
        if self._paused and len(self._packets) <= self._limit // 2:
            self._paused = False
            self._transport.resume_reading()
        return packet

    def at_eof(self) -> bool:
        return self._eof and not self._packets

    def __aiter__(self) -> PacketReader:
        return self

    async def __anext__(self) -> bytes:
        packet = await self.read_packet()
        if packet is None:
            raise StopAsyncIteration
        return packet


class PacketWriter:
    """The sending side of a framed connection: ``send_packet`` frames one
    packet, ``await drain()`` waits while the write queue is over its high
    water mark, ``close()`` / ``await wait_closed()``."""

    def __init__(self, transport: Any, protocol: _PacketProtocol) -> None:
        self.transport = transport
        self._protocol = protocol

    def send_packet(self, packet: bytes) -> None:
        self.transport.send_packet(packet)

    def write(self, data: bytes) -> None:
        """Raw bytes, unframed (the caller frames them)."""
        self.transport.write(data)

    async def drain(self) -> None:
        if self._protocol._lost is not None and self._protocol._lost.done():
            exc = self._protocol._lost.result()
            if exc is not None:
                raise exc
            raise ConnectionResetError("the connection is closed")
        if self._protocol._can_write is not None:
            await asyncio.shield(self._protocol._can_write)

    def close(self) -> None:
        self.transport.close()

    def is_closing(self) -> bool:
        return bool(self.transport.is_closing())

    async def wait_closed(self) -> None:
        if self._protocol._lost is not None:
            await asyncio.shield(self._protocol._lost)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self.transport.get_extra_info(name, default)


class _PacketProtocol:
    """Feeds a PacketReader; gives the writer its flow control."""

    def __init__(self, reader: PacketReader,
                 on_connected: Callable[[PacketReader, PacketWriter], Any] | None,
                 loop: asyncio.AbstractEventLoop) -> None:
        self._reader = reader
        self._on_connected = on_connected
        self._loop = loop
        self._can_write: asyncio.Future[None] | None = None
        self._lost: asyncio.Future[BaseException | None] | None = None
        self.writer: PacketWriter | None = None

    def connection_made(self, transport: Any) -> None:
        self._lost = self._loop.create_future()
        self._reader._transport = transport
        self.writer = PacketWriter(transport, self)
        if self._on_connected is not None:
            result = self._on_connected(self._reader, self.writer)
            if asyncio.iscoroutine(result):
                self._loop.create_task(result)

    def packet_received(self, packet: bytes) -> None:
        self._reader._feed(packet)

    def eof_received(self) -> bool:
        self._reader._end(None)
        return True  # the application closes its side when it is done

    def pause_writing(self) -> None:
        if self._can_write is None:
            self._can_write = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None:
            self._can_write.set_result(None)
            self._can_write = None

    def connection_lost(self, exc: BaseException | None) -> None:
        self._reader._end(exc)
        if self._can_write is not None:
            self._can_write.set_result(None)
            self._can_write = None
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(exc)


async def start_packet_server(client_connected_cb: Callable[[PacketReader, PacketWriter], Any],
                              host: str = "127.0.0.1", port: int = 0, *, framing: Any,
                              limit: int = PACKET_QUEUE_LIMIT, **options: Any) -> AioServer:
    """``start_server`` for packets: ``framing`` (``netring.LengthPrefixed``,
    ``Delimited``, ``Exactly``...) cuts each connection's stream in the
    engine; ``client_connected_cb(reader, writer)`` gets a ``PacketReader``
    and a ``PacketWriter``. ``options`` as ``create_server``."""
    loop = asyncio.get_running_loop()
    return await create_server(
        lambda: _PacketProtocol(PacketReader(limit), client_connected_cb, loop), host, port,
        framing=framing, **options)


async def open_packet_connection(host: str, port: int, *, framing: Any,
                                 limit: int = PACKET_QUEUE_LIMIT,
                                 **options: Any) -> tuple[PacketReader, PacketWriter]:
    """``open_connection`` for packets: ``(reader, writer)`` once connected."""
    loop = asyncio.get_running_loop()
    protocol = _PacketProtocol(PacketReader(limit), None, loop)
    await create_connection(lambda: protocol, host, port, framing=framing, **options)
    assert protocol.writer is not None
    return protocol._reader, protocol.writer
