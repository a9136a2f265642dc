"""The connection side of ``netring.WorkerPool``: what a ``Server`` with
``workers=`` hands the engine instead of the user's protocol.

``_WorkerProtocol`` runs ``connection_made`` on the IO thread and queues
every later callback to the pool as an item of its own ordered queue;
``_WorkerTransport`` is the transport the user's protocol sees (reading
paused and resumed on its own behalf, apart from the pool's backpressure);
``_ServerWork`` is one server's share of a pool, for shutdown. Threading
contract: see ``netring.workers``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any

from ._handoff import (
    ARG,
    CALLBACK_NAMES,
    DATA,
    EOF,
    KIND,
    LOST,
    PACKET,
    PACKETS,
    PAUSE_WRITING,
    PAUSED_BY_SHUTDOWN,
    PAUSED_BY_USER,
    RESUME_WRITING,
    TIMEOUT,
)
from .protocol import Protocol
from .workers import (
    LOST_GRACE_SECONDS,
    WorkerPool,
    _log,
    _monotonic,
    _Unit,
    format_peer,
)

__all__ = ["_ServerWork", "_WorkerProtocol", "_WorkerTransport"]


class _WorkerTransport:
    """The transport a protocol served by a ``WorkerPool`` sees.

    The engine's transport with the same methods (bound straight through, so
    ``write`` costs nothing extra), except: ``pause_reading`` /
    ``resume_reading`` / ``is_reading`` are the protocol's own (the pool
    pauses reading for backpressure too, and never resumes a connection its
    protocol paused); ``get_protocol()`` / ``set_protocol()`` are the
    user's protocol (a new one gets the callbacks queued after the switch,
    on the workers, in order); and ``set_framing`` works only in
    ``connection_made`` (later, the IO thread may already have cut the
    following packets under the old rule).
    """

    __slots__ = ("_owner", "_transport", "abort", "can_write_eof", "close", "get_extra_info",
                 "get_write_buffer_limits", "get_write_buffer_size", "is_closing",
                 "send_packet", "set_idle_timeout", "set_write_buffer_limits", "write",
                 "write_eof", "writelines")

    def __init__(self, transport: Any, owner: _WorkerProtocol) -> None:
        self._transport = transport
        self._owner = owner
        for name in ("abort", "can_write_eof", "close", "get_extra_info",
                     "get_write_buffer_limits", "get_write_buffer_size", "is_closing",
                     "send_packet", "set_idle_timeout", "set_write_buffer_limits", "write",
                     "write_eof", "writelines"):
            setattr(self, name, getattr(transport, name))

    def pause_reading(self) -> None:
        """Stop reading from the peer. Items already queued for the pool
        still arrive (they were read before)."""
        self._owner.pool._set_paused(self._owner, PAUSED_BY_USER, True)

    def resume_reading(self) -> None:
        """Resume reading (unless the pool holds it paused for backpressure:
        then when the queue drains)."""
        self._owner.pool._set_paused(self._owner, PAUSED_BY_USER, False)

    def is_reading(self) -> bool:
        """False after ``pause_reading()`` or once closing."""
        return not self._owner.mask & PAUSED_BY_USER and not self._transport.is_closing()

    def get_protocol(self) -> Any:
        """The protocol this transport feeds."""
        return self._owner.user

    def set_protocol(self, protocol: Any) -> None:
        """Feed ``protocol`` from the next queued callback on (asyncio's
        ``set_protocol``); call it from one of the connection's callbacks."""
        if protocol is None:
            raise TypeError("protocol is required")
        self._owner.set_user(protocol)

    def set_framing(self, framing: Any) -> None:
        """Change the framing; only inside ``connection_made`` with workers."""
        if not self._owner.in_made:
            raise RuntimeError(
                "set_framing() on a connection served by a WorkerPool works only in "
                "connection_made(): the IO thread may already have cut the next packets")
        self._transport.set_framing(framing)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def __repr__(self) -> str:
        return f"<netring worker transport {self._transport!r}>"


class _WorkerProtocol(_Unit):
    """The protocol the engine sees: runs ``connection_made`` on the IO
    thread and queues every later callback to the pool, in order."""

    is_conn = True

    __slots__ = ("_data", "_packet", "_packets", "dropped", "failed", "group", "in_made",
                 "last_prio",
                 "mask", "peer", "pool", "priority", "transport", "user", "view")

    def __init__(self, user: Any, group: _ServerWork) -> None:
        super().__init__()
        self.user = user
        self.group = group
        self.pool = group.pool
        self.priority = group.priority
        self.transport: Any = None
        self.view: _WorkerTransport | None = None
        self.peer: Any = None
        self.mask = 0
        self.failed: BaseException | None = None
        self.dropped = False  # shutdown dropped its work: run nothing but connection_lost
        self.in_made = False
        self.last_prio = 0
        self.set_user(user)

    def set_user(self, user: Any) -> None:
        """Look up ``user``'s callbacks; later items go to it."""
        self.user = user
        self._data = _data_callback(user)
        self._packets = getattr(user, "packets_received", None)
        self._packet = getattr(user, "packet_received", None)

    # -- on the IO thread ------------------------------------------------------

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.peer = transport.get_extra_info("peername")
        self.view = _WorkerTransport(transport, self)
        self.group.add(self)
        self.in_made = True
        try:
            self.user.connection_made(self.view)
        finally:
            self.in_made = False

    def _queue(self, kind: int, arg: Any = None, nbytes: int = 0, npackets: int = 0,
               prio: int | None = None) -> None:
        if prio is None:
            prio = self.last_prio
        if not self.pool._push(self, kind, arg, nbytes, npackets, prio):
            self._pool_closed(kind, arg)

    def _pool_closed(self, kind: int, arg: Any) -> None:
        """The pool was closed under a live connection: abort it; its
        ``connection_lost`` runs here if nothing of it can still be running."""
        if kind == LOST:
            self.group.discard(self)
            if not self.scheduled:
                try:
                    self.user.connection_lost(self.failed if self.failed is not None else arg)
                except BaseException:
                    _log.exception("netring: exception in connection_lost for %s",
                                   format_peer(self.peer))
            return
        if self.transport is not None:
            self.transport.abort()

    def data_received(self, data: bytes) -> None:
        prio = 0
        if self.priority is not None:
            prio = self.last_prio = self.priority(data)
        self._queue(DATA, data, len(data), 1, prio)

    def packets_received(self, packets: list[bytes]) -> None:
        fn = self.priority
        if fn is None:
            self._queue(PACKETS, packets, sum(map(len, packets)), len(packets), 0)
            return
        for packet in packets:
            prio = self.last_prio = fn(packet)
            self._queue(PACKET, packet, len(packet), 1, prio)

    def eof_received(self) -> bool:
        self._queue(EOF)
        return True  # half-open until the user's eof_received has run

    def timeout_received(self) -> None:
        self._queue(TIMEOUT)

    def pause_writing(self) -> None:
        self._queue(PAUSE_WRITING)

    def resume_writing(self) -> None:
        self._queue(RESUME_WRITING)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._queue(LOST, exc)

    # -- on a worker -------------------------------------------------------------

    def run(self, items: list[tuple[Any, ...]]) -> None:
        for item in items:
            user = self.user  # (set_protocol may switch it between items)
            kind, arg = item[KIND], item[ARG]
            if (self.failed is not None or self.dropped) and kind != LOST:
                continue  # aborted, or shut down past the grace: drop what it sent
            try:
                if kind == PACKETS:
                    if self._packets is not None:
                        self._packets(arg)
                    else:
                        packet_received = self._packet
                        assert packet_received is not None
                        for packet in arg:
                            if self.failed is not None or self.dropped:
                                break
                            packet_received(packet)
                elif kind == DATA:
                    self._data(arg)  # type: ignore[misc]
                elif kind == PACKET:
                    if self._packets is not None:
                        self._packets([arg])
                    else:
                        self._packet(arg)  # type: ignore[misc]
                elif kind == EOF:
                    if not user.eof_received():
                        self.transport.close()
                elif kind == LOST:
                    self.group.discard(self)
                    user.connection_lost(self.failed if self.failed is not None else arg)
                elif kind == TIMEOUT:
                    handler = getattr(user, "timeout_received", None)
                    if handler is None:
                        self.transport.close()  # asyncio protocols know no idle timeouts
                    else:
                        handler()
                elif kind == PAUSE_WRITING:
                    user.pause_writing()
                elif kind == RESUME_WRITING:
                    user.resume_writing()
            except BaseException as e:
                self._fail(kind, e)

    def _fail(self, kind: int, exc: BaseException) -> None:
        peer = format_peer(self.peer)
        if kind == LOST:
            _log.error("netring: exception in connection_lost for %s", peer, exc_info=exc)
            return
        if self.failed is not None:
            return
        self.failed = exc
        _log.error("netring: exception in %s for %s; closing the connection",
                   CALLBACK_NAMES.get(kind, "a callback"), peer, exc_info=exc)
        self.transport.abort()

    def describe(self) -> str:
        return f"a callback of {type(self.user).__name__} for {format_peer(self.peer)}"


def _data_callback(user: Any) -> Callable[[bytes], None] | None:
    """What received bytes are handed to: ``data_received``, or the
    protocol's own buffer (``get_buffer`` / ``buffer_updated``), by the rule
    the engine's dispatcher follows: an ``asyncio.BufferedProtocol``, or a
    protocol with both and no ``data_received`` of its own."""
    data = getattr(user, "data_received", None)
    get_buffer = getattr(user, "get_buffer", None)
    buffer_updated = getattr(user, "buffer_updated", None)
    if get_buffer is None or buffer_updated is None:
        return data
    if (data is None or isinstance(user, asyncio.BufferedProtocol)
            or getattr(data, "__func__", None) is Protocol.data_received):
        def feed(chunk: bytes) -> None:
            _feed(get_buffer, buffer_updated, chunk)
        return feed
    return data


def _feed(get_buffer: Callable[[int], Any], buffer_updated: Callable[[int], Any],
          chunk: bytes) -> None:
    """Copy ``chunk`` into the protocol's buffers, as many as it takes."""
    rest = memoryview(chunk)
    while rest:
        try:
            view = memoryview(get_buffer(len(rest)))
        except TypeError as e:
            raise TypeError("get_buffer() must return a writable, contiguous buffer") from e
        with view:
            if view.readonly or not view.c_contiguous:
                raise TypeError("get_buffer() must return a writable, contiguous buffer")
            if not view.nbytes:
                raise RuntimeError("get_buffer() returned an empty buffer")
            n = min(view.nbytes, len(rest))
            with view.cast("B") as target:
                target[:n] = rest[:n]
        buffer_updated(n)
        rest = rest[n:]


class _ServerWork:
    """One server's side of a WorkerPool: wraps its protocol factory and
    tracks its live connections, for shutdown."""

    def __init__(self, pool: WorkerPool, priority: Callable[[bytes], int] | None,
                 owned: bool) -> None:
        self.pool = pool
        self.priority = priority
        self.owned = owned
        self.lock = threading.Lock()
        self.live: set[_WorkerProtocol] = set()

    def factory(self, user_factory: Callable[[], Any]) -> Callable[[], _WorkerProtocol]:
        def make() -> _WorkerProtocol:
            return _WorkerProtocol(user_factory(), self)
        return make

    def add(self, conn: _WorkerProtocol) -> None:
        with self.lock:
            self.live.add(conn)

    def discard(self, conn: _WorkerProtocol) -> None:
        with self.lock:
            self.live.discard(conn)

    def snapshot(self) -> list[_WorkerProtocol]:
        with self.lock:
            return list(self.live)

    def stop_reading(self) -> None:
        """Shutdown: no connection of this server reads any more."""
        for conn in self.snapshot():
            self.pool._set_paused(conn, PAUSED_BY_SHUTDOWN, True)

    def wait_idle(self, deadline: float, *, until_gone: bool = False) -> bool:
        """Wait until no connection of this server has queued or running
        work (``until_gone``: until every ``connection_lost`` has run), or
        ``deadline``. A unit run by the calling thread (shutdown from a
        callback) counts as idle."""
        me = threading.current_thread().name
        while True:
            conns = self.snapshot()
            if until_gone:
                busy = [c for c in conns if c.runner != me]
            else:
                busy = [c for c in conns if c.scheduled and c.runner != me]
            if not busy or _monotonic() >= deadline:
                return not busy
            time.sleep(0.005)

    def drop_queued(self) -> int:
        """Drop the queued data and events of this server's connections
        (their ``connection_lost`` stays)."""
        return self.pool._drop(self.snapshot())

    def shutdown(self, grace: float, close_connections: Callable[[float], Any]) -> None:
        """Stop reading, let queued work finish within ``grace``, close the
        connections (``close_connections(remaining_grace)``), run their
        ``connection_lost``, log workers that overran."""
        deadline = _monotonic() + grace
        self.stop_reading()
        if not self.wait_idle(deadline):
            dropped = self.drop_queued()
            if dropped:
                _log.warning("netring: %d queued callbacks dropped: the %.3g s shutdown "
                             "grace ran out", dropped, grace)
        close_connections(max(0.0, deadline - _monotonic()))
        late = max(deadline, _monotonic()) + LOST_GRACE_SECONDS
        if not self.wait_idle(late, until_gone=True):
            self.drop_queued()
            units = set(self.snapshot())
            self.pool.report_overrun("shutting down a server", units)
        if self.owned:
            self.pool.close(0.0)
