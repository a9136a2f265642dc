"""``netring.WorkerPool``: business-logic threads for handlers that block.

Protocol callbacks normally run on the IO threads. A handler that blocks
there (a database query, a file, a call to another service) stops every
other connection of that IO thread. ``Server(..., workers=pool)`` moves the
protocol's callbacks to a pool of Python threads fed by a bounded queue, so
IO threads only do IO.

Where each callback runs with ``workers=``:

- ``connection_made(transport)``: on the IO thread, at once (keep it cheap:
  set up state; the transport is ready and may be written to).
- ``data_received`` / ``packet_received`` / ``packets_received``,
  ``eof_received``, ``timeout_received``, ``pause_writing`` /
  ``resume_writing`` and, last, ``connection_lost``: on a worker thread, in
  the order the IO thread saw them.

Guarantees:

- **Per-connection order.** The callbacks of one connection run one at a
  time, in arrival order, never concurrently; different connections run in
  parallel on different workers (Netty's ordered executors).
- **Priority.** With ``queue="priority"`` and ``Server(priority=fn)``
  (``fn(packet) -> int``, run on the IO thread: keep it cheap), lower runs
  first across connections, per-connection order still holding: a
  connection waits in the queue under the priority of its *oldest* queued
  packet (head of line), equal priorities in arrival order.
- **Bounded, with backpressure.** ``max_queued`` packets and
  ``max_queued_bytes`` bytes. Reaching either makes every connection that
  delivers more stop reading (the engine pauses its recv; TCP flow control
  then slows the peer) until the queue drains to half of both limits. Nothing
  is dropped.
- **Isolation.** An exception in a callback is logged once with the peer's
  address and aborts that connection only; ``connection_lost`` receives the
  exception; the worker goes on.

Threads and the GIL: blocking calls (sockets, files, ``time.sleep``,
``sqlite3`` queries, most C extensions' I/O) release the GIL, so N workers
overlap N blocking calls. CPU-bound *Python* handlers gain nothing from
threads on a GIL build of CPython — and they take the GIL from the IO
threads; use processes for that. This pool is for blocking work.

Design notes: ``docs/workers.md``.
"""

from __future__ import annotations

import atexit
import concurrent.futures
import heapq
import logging
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._args import MAX_WORKER_THREADS, check_int
from ._handoff import (
    CALL,
    KIND,
    LOST,
    NBYTES,
    NPACKETS,
    PAUSED_BY_POOL,
    PRIORITY,
    QUEUED_AT,
    SEQ,
)
from .errors import ConfigurationError

if TYPE_CHECKING:
    from ._served import _WorkerProtocol

__all__ = ["QUEUES", "WorkerPool"]

_log = logging.getLogger("netring")
_monotonic = time.monotonic

QUEUES = ("fifo", "priority")
#: Default queue limit in packets (chunks under ``Raw`` framing).
DEFAULT_MAX_QUEUED_PACKETS = 10_000
#: Default queue limit in bytes.
DEFAULT_MAX_QUEUED_BYTES = 64 << 20
#: Seconds ``close()`` lets queued work finish before dropping it.
DEFAULT_GRACE_SECONDS = 5.0
#: After the grace, seconds given to ``connection_lost`` callbacks still queued.
LOST_GRACE_SECONDS = 0.5
#: Items (one read's packets, or one event) of one connection a worker runs
#: per turn in a FIFO pool before the connection goes to the back of the queue.
FIFO_ITEMS_PER_TURN = 8

_live: weakref.WeakSet[WorkerPool] = weakref.WeakSet()


def format_peer(peer: Any) -> str:
    """``host:port`` (``[v6]:port``) as the engine logs it, or ``?``."""
    if not isinstance(peer, tuple) or len(peer) < 2:
        return "?"
    host = str(peer[0])
    return f"[{host}]:{peer[1]}" if ":" in host else f"{host}:{peer[1]}"


class _Unit:
    """Something with its own ordered queue of items: a connection or a task.

    ``scheduled`` is true while the unit is in the pool's ready queue or a
    worker runs it: a unit is never in the ready queue twice, which is what
    makes its items run one at a time, in order.
    """

    __slots__ = ("__weakref__", "items", "runner", "scheduled")
    is_conn = False  # a served connection (``netring._served``), with pause bits

    def __init__(self) -> None:
        self.items: deque[tuple[Any, ...]] = deque()
        self.scheduled = False
        self.runner: str | None = None  # the worker thread's name while it runs

    def run(self, items: list[tuple[Any, ...]]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def describe(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


class _Task(_Unit):
    """A plain callable: ``WorkerPool.submit`` and timers with ``workers=``."""

    __slots__ = ("fn", "future", "what")

    def __init__(self, fn: Callable[[], Any], what: str,
                 future: concurrent.futures.Future[Any] | None = None) -> None:
        super().__init__()
        self.fn, self.what, self.future = fn, what, future

    def run(self, items: list[tuple[Any, ...]]) -> None:
        for _ in items:
            future = self.future
            if future is not None:
                if not future.set_running_or_notify_cancel():
                    continue
                try:
                    future.set_result(self.fn())
                except BaseException as e:
                    future.set_exception(e)
                continue
            try:
                self.fn()
            except BaseException:
                _log.exception("netring: exception in %s", self.what)

    def describe(self) -> str:
        return self.what


class WorkerPool:
    """A pool of business-logic threads fed by a bounded queue.

    Args:
        threads: worker threads (1 to 1024), started at construction.
        queue: ``"fifo"`` (default) or ``"priority"`` (lower runs first; a
            ``Server`` on it takes ``priority=fn``).
        max_queued: queued packets (chunks under ``Raw`` framing) at which
            the connections feeding the pool stop reading (default 10,000).
        max_queued_bytes: queued bytes at which they stop (default 64 MiB).
        name: thread name prefix (threads are ``NAME-0``, ``NAME-1``, ...).

    Reading resumes when the queue is back to half of both limits. A
    connection delivers at most one more read after the limit is reached, so
    memory is bounded by ``max_queued_bytes`` plus one receive buffer
    (``buffer_size``) per connection.

    Share one pool between servers (``Server(..., workers=pool)``) or give a
    server a thread count (``workers=8``) for a private pool it closes.
    ``submit(fn, *args)`` runs any callable on the pool, and
    ``IOPool.call_later(..., workers=pool)`` runs timers here.

    Threading contract: every method may be called from any thread. The
    callbacks of one connection never run concurrently and run in order.
    Blocking calls release the GIL; CPU-bound Python code gains nothing from
    threads on a GIL build (see the module docstring).
    """

    def __init__(
        self,
        threads: int,
        *,
        queue: str = "fifo",
        max_queued: int = DEFAULT_MAX_QUEUED_PACKETS,
        max_queued_bytes: int = DEFAULT_MAX_QUEUED_BYTES,
        name: str = "netring-worker",
    ) -> None:
        self._threads_n = check_int("threads", threads, 1, MAX_WORKER_THREADS)
        if not isinstance(queue, str):
            raise TypeError(f"queue: must be a str, not {type(queue).__name__}")
        if queue not in QUEUES:
            raise ConfigurationError(f"queue: must be one of {QUEUES}, not {queue!r}")
        self._max_packets = check_int("max_queued", max_queued, 1, 1 << 40)
        self._max_bytes = check_int("max_queued_bytes", max_queued_bytes, 1, 1 << 50)
        if not isinstance(name, str):
            raise TypeError(f"name: must be a str, not {type(name).__name__}")
        if not name:
            raise ConfigurationError("name: must not be empty")
        self._low_packets = self._max_packets // 2
        self._low_bytes = self._max_bytes // 2
        self._queue = queue
        self._priority = queue == "priority"
        self._name = name
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._ready: Any = [] if self._priority else deque()
        self._seq = 0
        self._queued_packets = 0
        self._queued_bytes = 0
        self._pausing = False  # over the limit, not yet back to low water
        self._paused: set[_WorkerProtocol] = set()
        self._idle = 0
        self._busy = 0
        self._completed = 0
        self._started_items = 0
        self._wait_total = 0.0
        self._closing = False
        self._closed = False
        self._running: dict[str, _Unit] = {}  # worker thread name -> the unit it runs
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{i}", daemon=True)
            for i in range(self._threads_n)
        ]
        for t in self._threads:
            t.start()
        _live.add(self)

    # -- the queue -------------------------------------------------------------

    def _push(self, unit: _Unit, kind: int, arg: Any, nbytes: int, npackets: int,
              prio: int) -> bool:
        """Queue one item of ``unit``; False if the pool is closed."""
        with self._lock:
            if self._closed:
                return False
            seq = self._seq
            self._seq = seq + 1
            # The one place an item is built; its layout: netring._handoff.
            unit.items.append((kind, arg, nbytes, npackets, _monotonic(), prio, seq))
            if npackets:
                self._queued_packets += npackets
                self._queued_bytes += nbytes
                if self._pausing or (self._queued_packets >= self._max_packets
                                     or self._queued_bytes >= self._max_bytes):
                    self._pausing = True
                    if unit.is_conn and not unit.mask & PAUSED_BY_POOL:  # type: ignore[attr-defined]
                        self._flip(unit, PAUSED_BY_POOL, True)  # type: ignore[arg-type]
            elif kind == LOST and unit in self._paused:
                self._paused.discard(unit)  # type: ignore[arg-type]
            if not unit.scheduled:
                unit.scheduled = True
                if self._priority:
                    heapq.heappush(self._ready, (prio, seq, unit))
                else:
                    self._ready.append(unit)
                if self._idle:
                    self._cond.notify()
            return True

    def _requeue(self, unit: _Unit) -> None:
        """After a turn: back to the ready queue if it has more (lock held)."""
        if not unit.items:
            unit.scheduled = False
            return
        if self._priority:
            head = unit.items[0]
            heapq.heappush(self._ready, (head[PRIORITY], head[SEQ], unit))
        else:
            self._ready.append(unit)
        if self._idle:
            self._cond.notify()

    def _flip(self, unit: _WorkerProtocol, bit: int, on: bool) -> None:
        """Set or clear one reason for ``unit`` not to read (lock held); the
        transport pauses on the first reason and resumes when none is left.

        NOTE: every pause/resume of a served connection goes through here
        under the pool's lock, so the transport's calls (immediate on the IO
        thread, through the mailbox from workers) never cross.
        """
        old = unit.mask
        new = old | bit if on else old & ~bit
        if new == old:
            return
        unit.mask = new
        if bit == PAUSED_BY_POOL:
            if on:
                self._paused.add(unit)
            else:
                self._paused.discard(unit)
        transport = unit.transport
        if transport is None:
            return
        if not old:
            transport.pause_reading()
        elif not new:
            transport.resume_reading()

    def _set_paused(self, unit: _WorkerProtocol, bit: int, on: bool) -> None:
        with self._lock:
            self._flip(unit, bit, on)

    def _work(self) -> None:
        """A worker thread: take a unit, run a turn of its items, repeat."""
        cond = self._cond
        me = threading.current_thread().name
        unit: _Unit | None = None
        taken: list[tuple[Any, ...]] = []
        per_turn = 1 if self._priority else FIFO_ITEMS_PER_TURN
        while True:
            with cond:
                if unit is not None:
                    self._busy -= 1
                    self._completed += sum(max(1, it[NPACKETS]) for it in taken)
                    unit.runner = None
                    del self._running[me]
                    self._requeue(unit)
                    unit = None
                while not self._ready:
                    if self._closing:
                        return
                    self._idle += 1
                    cond.wait()
                    self._idle -= 1
                if self._priority:
                    unit = heapq.heappop(self._ready)[2]
                else:
                    unit = self._ready.popleft()
                items = unit.items
                taken = [items.popleft() for _ in range(min(per_turn, len(items)))]
                now = _monotonic()
                for it in taken:
                    self._queued_packets -= it[NPACKETS]
                    self._queued_bytes -= it[NBYTES]
                    self._wait_total += now - it[QUEUED_AT]
                self._started_items += len(taken)
                self._busy += 1
                unit.runner = me
                self._running[me] = unit
                if (self._pausing and self._queued_packets <= self._low_packets
                        and self._queued_bytes <= self._low_bytes):
                    self._pausing = False
                    for u in list(self._paused):
                        self._flip(u, PAUSED_BY_POOL, False)
            if taken:
                try:
                    unit.run(taken)
                except BaseException:  # run() isolates callbacks; this is a bug
                    _log.exception("netring: worker %s: unexpected error", me)

    def _drop(self, units: Iterable[_Unit], keep: int | None = LOST) -> int:
        """Drop the queued items of ``units`` except those of kind ``keep``;
        returns how many were dropped."""
        dropped = 0
        with self._lock:
            for unit in units:
                if unit.is_conn:
                    unit.dropped = True  # type: ignore[attr-defined]  # a read's packets stop too
                items = unit.items
                if not items:
                    continue
                kept = [it for it in items if it[KIND] == keep]
                for it in items:
                    if it[KIND] != keep:
                        self._queued_packets -= it[NPACKETS]
                        self._queued_bytes -= it[NBYTES]
                        dropped += 1
                items.clear()
                items.extend(kept)
        return dropped

    # -- public API ------------------------------------------------------------

    def submit(self, fn: Callable[..., Any], /, *args: Any,
               priority: int = 0) -> concurrent.futures.Future[Any]:
        """Run ``fn(*args)`` on a worker; returns a ``concurrent.futures.Future``.

        Tasks do not count against ``max_queued`` (nothing to pause). In a
        priority pool they run under ``priority`` (default 0).
        """
        if not callable(fn):
            raise TypeError("fn: must be callable")
        if isinstance(priority, bool) or not isinstance(priority, int):
            raise TypeError(f"priority: must be an int, not {type(priority).__name__}")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        call = (lambda: fn(*args)) if args else fn
        task = _Task(call, f"task {getattr(fn, '__qualname__', fn)!r}", future)
        if not self._push(task, CALL, None, 0, 0, priority):
            raise RuntimeError("the WorkerPool is closed")
        return future

    def _timer_callback(self, callback: Callable[[], Any], repeating: bool) -> Callable[[], None]:
        """An IO-thread timer callback that runs ``callback`` on this pool.
        A repeating timer skips a beat while its previous run is still queued
        or running (as IO-thread timers skip missed beats)."""
        shared = _Task(callback, "a timer callback") if repeating else None

        def fire() -> None:
            task = shared if shared is not None else _Task(callback, "a timer callback")
            if shared is not None and shared.scheduled:
                return
            self._push(task, CALL, None, 0, 0, 0)

        return fire

    def close(self, grace: float = DEFAULT_GRACE_SECONDS) -> None:
        """Let the queued work finish within ``grace`` seconds, then drop
        what is left (``connection_lost`` callbacks still run, for up to
        half a second more) and stop the threads. A worker still running a
        callback after that is logged by name and left to finish (its thread
        is a daemon). Idempotent. Close the servers using the pool first."""
        if isinstance(grace, bool) or not isinstance(grace, int | float) or grace < 0:
            raise ConfigurationError(f"grace: must be a non-negative number, not {grace!r}")
        with self._lock:
            if self._closing:
                return
            self._closing = True
            self._cond.notify_all()
        deadline = _monotonic() + float(grace)
        me = threading.current_thread()
        others = [t for t in self._threads if t is not me]
        for t in others:
            t.join(max(0.0, deadline - _monotonic()))
        with self._lock:
            units = [entry if isinstance(entry, _Unit) else entry[2] for entry in self._ready]
            units += self._running.values()
            self._closed = True
        if self._drop(units):
            _log.warning("netring: %s: work still queued after the %.3g s grace was dropped",
                         self._name, grace)
        late = _monotonic() + LOST_GRACE_SECONDS
        for t in others:
            t.join(max(0.0, late - _monotonic()))
        self.report_overrun("closing the pool")
        _live.discard(self)

    def report_overrun(self, when: str, units: set[Any] | None = None) -> list[str]:
        """Log each worker thread still running a callback (of ``units``, if
        given), by name; returns the names."""
        with self._lock:
            running = list(self._running.items())
        names = []
        for name, unit in running:
            if units is not None and unit not in units:
                continue
            _log.warning("netring: worker thread %s still running %s after the grace period "
                         "(%s)", name, unit.describe(), when)
            names.append(name)
        return names

    def is_closed(self) -> bool:
        """Whether ``close()`` has run."""
        return self._closed

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    @property
    def threads(self) -> int:
        """Number of worker threads."""
        return self._threads_n

    @property
    def queue(self) -> str:
        """``"fifo"`` or ``"priority"``."""
        return self._queue

    @property
    def name(self) -> str:
        """The thread name prefix."""
        return self._name

    @property
    def max_queued(self) -> int:
        """The queue limit in packets."""
        return self._max_packets

    @property
    def max_queued_bytes(self) -> int:
        """The queue limit in bytes."""
        return self._max_bytes

    def stats(self) -> dict[str, Any]:
        """A snapshot: ``threads``, ``queue``, ``queued_packets``,
        ``queued_bytes`` (waiting, not yet taken by a worker),
        ``max_queued``, ``max_queued_bytes``, ``busy_workers``,
        ``completed`` (packets, events and tasks handled),
        ``wait_seconds_total`` and ``mean_wait_seconds`` (from queued to
        taken by a worker), ``paused_connections`` (reading stopped by the
        pool) and ``closed``."""
        with self._lock:
            started = self._started_items
            return {
                "threads": self._threads_n,
                "queue": self._queue,
                "queued_packets": self._queued_packets,
                "queued_bytes": self._queued_bytes,
                "max_queued": self._max_packets,
                "max_queued_bytes": self._max_bytes,
                "busy_workers": self._busy,
                "completed": self._completed,
                "wait_seconds_total": self._wait_total,
                "mean_wait_seconds": self._wait_total / started if started else 0.0,
                "paused_connections": len(self._paused),
                "closed": self._closed,
            }

    def __repr__(self) -> str:
        state = "closed" if self._closed else "running"
        return f"<netring.WorkerPool {self._name} threads={self._threads_n} {self._queue} {state}>"


def _close_all() -> None:
    """At interpreter exit: stop every pool's threads without waiting for work."""
    for pool in list(_live):
        pool.close(0.0)


atexit.register(_close_all)
