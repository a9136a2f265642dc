"""Worker processes: every core of the machine on one port.

``run_workers(build, processes)`` starts ``processes`` worker processes.
Each calls ``build()``, which makes (and may start) its servers with
``reuse_port=True``; the worker starts them, tells the supervisor it is
ready (over a pipe), and serves until the supervisor stops it. Workers
share nothing but the listening port.

Why ``SO_REUSEPORT`` and not one listening socket inherited by every
worker: with a shared socket all workers wait on one accept queue, and the
wake-ups go to whichever worker happens to be idle (on a busy machine, often
the same few), so the load is uneven; with ``SO_REUSEPORT`` each worker has
its own listening socket and accept queue, and the kernel spreads incoming
connections evenly over them (by a hash of the 4-tuple). A worker's socket
belongs to that worker alone (to its slot, with ``listen=``), so a worker can
be replaced on its own: the new one accepts before the old one stops
(``SIGHUP``).

Who binds: by default each worker's ``build`` binds its own socket, and a
replacement binds a new one beside the old. With ``listen=[(host, port)]``
(what ``netring serve --processes`` uses) the supervisor binds one socket
per address per worker *slot* and keeps them for the whole run; a worker
serves its slot's (``worker_sockets()``), and a reloaded or restarted
worker takes over the same socket, queue included: a reload drops no SYN
(the old and the new worker accept from one socket until the old stops,
serving what is still queued for it first) and a killed worker's queued
connections wait for its replacement (the restart delay: 0.1 s at first);
a slot whose workers keep dying (a delay over ``KEEP_SOCKETS_SECONDS``)
closes its sockets until its next worker starts.

The supervisor (the process that calls ``run_workers``):

* restarts a worker that dies, after a delay that doubles while workers
  keep dying young (``backoff`` … ``max_backoff``), logged on the
  ``netring.supervisor`` logger with the exit status or the signal;
* stops the whole run with ``WorkerStartError`` when workers die before
  they are ready ``max_start_failures`` times within
  ``start_failure_window`` seconds (a broken build, a port in use by
  someone else) instead of spinning;
* on SIGTERM or SIGINT: sends SIGTERM to every worker, which drains within
  ``grace`` seconds (below); a worker still running ``grace`` + 1 s after
  its SIGTERM is killed; then ``run_workers`` returns. A second
  SIGTERM/SIGINT kills the workers at once;
* on SIGHUP: replaces the workers one at a time: starts the new one, waits
  until it is ready (it accepts, on its own ``SO_REUSEPORT`` socket), then
  sends SIGTERM to the old one, which drains;
* ``processes="auto"``: ``usable_cpus()``, the CPUs this process may run on
  (``os.sched_getaffinity``) limited by the cgroup v2 CPU quota.

A worker drains without losing a connection. A socket of its own: closing
a listening socket at once would make the kernel reset every connection
still in its accept queue (unless ``sysctl net.ipv4.tcp_migrate_req=1``),
and a busy worker often has one there. So the worker first attaches a
socket filter that drops SYNs to its listening sockets: new connections go
to the other workers (a dropped SYN is sent again a second later, when this
socket is gone: on a reload under load, some connects take a second), while
the engine accepts what is queued. A socket it shares (``listen=``, or
systemd's): it goes on accepting for a quarter of a second (handshakes
under way), then stops, the engine first accepting what is still queued
(on a full stop the supervisor has made its own sockets drop SYNs first).
Then it gives its connections up to half a second to finish on their own,
and shuts its servers down (``Server.shutdown``: flush, close, abort what
is left when ``grace`` is over).
"""

from __future__ import annotations

import collections
import ctypes
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import struct
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from pathlib import Path
from types import FrameType
from typing import Any, Literal, Protocol, runtime_checkable

from ._args import check_int, check_seconds
from .errors import ConfigurationError, NetringError

__all__ = [
    "Listening",
    "Servable",
    "Supervisor",
    "WorkerStartError",
    "run_workers",
    "usable_cpus",
    "worker_sockets",
]

log = logging.getLogger("netring.supervisor")

#: Seconds a worker may take past ``grace`` to exit after its SIGTERM before
#: it is killed (process exit, joining the IO threads).
KILL_MARGIN = 1.0
#: A worker that lived this long before dying resets its slot's backoff.
STABLE_SECONDS = 10.0
#: A draining worker, once it stopped accepting, waits this long at most
#: (within the grace) for its connections to finish before closing them.
SETTLE_SECONDS = 0.5
#: A draining worker's listening sockets, refusing SYNs, stay open at least
#: this long (within the grace) so that handshakes already under way finish.
LISTEN_DRAIN_SECONDS = 0.25
#: How long a draining worker waits for its engine to close a listener and
#: open what was still queued on it.
STOP_ACCEPTING_SECONDS = 2.0
#: A dead worker's slot keeps its listening sockets (``listen=``), and the
#: connections queued on them for its replacement, when the replacement
#: starts within this long; a slot whose workers keep dying (a longer
#: backoff) closes them until its next worker starts, so that new
#: connections go to the other slots' sockets instead of waiting.
KEEP_SOCKETS_SECONDS = 0.5
_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class WorkerStartError(NetringError):
    """Workers could not start: they died before they were ready too often,
    or they listen on different addresses (port 0 with several processes).
    The run has stopped; the message says why and what the last one said."""


@runtime_checkable
class Servable(Protocol):
    """What ``build()`` returns (one, or an iterable of them): a
    ``netring.Server`` is one."""

    @property
    def host(self) -> str: ...
    @property
    def port(self) -> int: ...
    @property
    def backend(self) -> str: ...
    @property
    def io_threads(self) -> int: ...
    def start(self) -> None: ...
    def shutdown(self, grace: float = ...) -> None: ...


@dataclass(frozen=True)
class Listening:
    """One server of a ready worker: where it listens, on what."""

    host: str
    port: int
    backend: str
    io_threads: int


# -- how many -----------------------------------------------------------------------


def usable_cpus(cgroup_root: str | os.PathLike[str] = "/sys/fs/cgroup",
                proc_cgroup: str | os.PathLike[str] = "/proc/self/cgroup") -> int:
    """The CPUs this process can use: ``os.sched_getaffinity(0)``, limited by
    the cgroup v2 CPU quota (``cpu.max``: ``"QUOTA PERIOD"``, rounded up;
    ``"max"`` is no limit) of this process's cgroup and of every cgroup above
    it up to ``cgroup_root``; at least 1. The paths are arguments for tests;
    a missing or unreadable file is no limit."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    root = Path(cgroup_root)
    here = root
    try:
        for line in Path(proc_cgroup).read_text().splitlines():
            if line.startswith("0::"):
                here = root / line[3:].strip().lstrip("/")
                break
    except OSError:
        pass
    directory = here
    while True:
        limit = _cpu_max(directory / "cpu.max")
        if limit is not None:
            cpus = min(cpus, limit)
        if directory == root or root not in directory.parents:
            break
        directory = directory.parent
    return max(1, cpus)


def _cpu_max(path: Path) -> int | None:
    try:
        fields = path.read_text().split()
        if not fields or fields[0] == "max":
            return None
        quota = int(fields[0])
        period = int(fields[1]) if len(fields) > 1 else 100_000
    except (OSError, ValueError):
        return None
    if quota <= 0 or period <= 0:
        return None
    return max(1, math.ceil(quota / period))


def _check_processes(processes: object) -> int:
    if processes == "auto":
        return usable_cpus()
    if isinstance(processes, str):
        raise ConfigurationError(f"processes: must be an int >= 1 or 'auto', not {processes!r}")
    return check_int("processes", processes, 1, 4096)


# -- the worker side ----------------------------------------------------------------


def _servables(built: object) -> list[Servable]:
    if isinstance(built, Servable):
        items: list[object] = [built]
    elif isinstance(built, Iterable):
        items = list(built)
    else:
        raise TypeError(f"build: must return a netring.Server or an iterable of them, "
                        f"not {type(built).__name__}")
    if not items:
        raise ConfigurationError("build: returned no server")
    for item in items:
        if not isinstance(item, Servable):
            raise TypeError(f"build: must return a netring.Server or an iterable of them, "
                            f"not {type(item).__name__}")
        if getattr(item, "_reuse_port", True) is not True and \
                getattr(item, "_fd", None) is None:
            raise ConfigurationError(
                "build: every Server needs reuse_port=True (each worker binds the port "
                "with SO_REUSEPORT), or a listening socket every worker shares "
                "(sock=/fd=: one bound before run_workers, or systemd's)")
    return items  # type: ignore[return-value]


def _failure(item: Servable) -> str | None:
    """Why a server stopped serving on its own (an IO thread panicked)."""
    pool = getattr(item, "pool", None)
    engine = getattr(pool, "_engine", None)
    failure = engine.failure() if engine is not None else None
    if failure is not None:
        return str(failure)
    is_serving = getattr(item, "is_serving", None)
    if callable(is_serving) and not is_serving():
        return "it stopped serving"
    return None


def _listening_sockets(items: list[Servable]) -> list[socket.socket]:
    """Duplicates of this process's listening TCP sockets on the servers'
    addresses (the engine's; found in /proc/self/fd). Not those of servers
    given a socket from outside (``sock=``/``fd=``, systemd's): every worker
    accepts from that same socket, so a SYN filter on it would turn away
    every worker's new connections; such a worker just stops accepting (the
    engine first serves what is queued: see ``Engine.unlisten``)."""
    wanted = {(item.host, item.port) for item in items
              if getattr(item, "_fd", None) is None}
    found: list[socket.socket] = []
    try:
        fds = [int(name) for name in os.listdir("/proc/self/fd")]
    except OSError:
        return found
    for fd in fds:
        try:
            if not os.readlink(f"/proc/self/fd/{fd}").startswith("socket:"):
                continue
            sock = socket.socket(fileno=os.dup(fd))
        except OSError:
            continue
        try:
            if (sock.type == socket.SOCK_STREAM
                    and sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN)
                    and tuple(sock.getsockname()[:2]) in wanted):
                found.append(sock)
                continue
        except OSError:
            pass
        sock.close()
    return found


#: A classic BPF socket filter: drop TCP segments with SYN set (the data
#: starts at the TCP header; flags at byte 13), keep the rest.
_DROP_SYN = ((0x30, 0, 0, 13),           # ldb [13]
             (0x45, 0, 1, 0x02),         # jset #SYN, drop, keep
             (0x06, 0, 0, 0),            # drop: ret #0
             (0x06, 0, 0, 0xFFFFFFFF))   # keep: ret #-1
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)


def _refuse_new_connections(sock: socket.socket) -> bool:
    """Make a listening socket drop SYNs, so that it takes no new connection
    while it still accepts the ones it has: a client whose SYN is dropped
    sends it again a second later, when this socket is closed and the
    kernel picks another worker's. Closing the socket at once instead
    would reset every connection in its accept queue."""
    program = ctypes.create_string_buffer(
        b"".join(struct.pack("=HBBI", *insn) for insn in _DROP_SYN))
    fprog = struct.pack("@HP", len(_DROP_SYN), ctypes.addressof(program))
    try:
        sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)
    except OSError as e:
        log.debug("cannot filter SYNs on a listening socket: %s", e)
        return False
    return True


def _accept_queue(sock: socket.socket) -> int:
    """Connections waiting in a listening socket's accept queue
    (``tcpi_unacked`` of a listener)."""
    try:
        info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
        return int(struct.unpack_from("=I", info, 24)[0])
    except (OSError, struct.error):
        return 0


def _stop_accepting(item: Servable, within: float) -> None:
    """Close a Server's listening socket, keeping its connections; return
    once the connections it still had queued are open (so the settling
    that follows sees them)."""
    listener = getattr(item, "_listener", None)
    engine = getattr(getattr(item, "pool", None), "_engine", None)
    if listener is not None and engine is not None:
        engine.unlisten(listener, min(STOP_ACCEPTING_SECONDS, within))


def _open_connections(item: Servable) -> int:
    stats = getattr(item, "stats", None)
    return int(stats().get("server_connections_open", 0)) if callable(stats) else 0


def _drain(items: list[Servable], grace: float, listening: list[socket.socket]) -> None:
    """Drain this worker within ``grace`` seconds, losing no connection:

    1. sockets of its own drop SYNs: new connections go to the other
       workers (their SYN is sent again, 1 s later, when these are closed);
       the engine accepts what is queued, and handshakes under way finish
       (``LISTEN_DRAIN_SECONDS``, longer while the queue is not empty, 1 s
       at most); on a socket it shares (``listen=``'s, systemd's) it goes on
       accepting for ``LISTEN_DRAIN_SECONDS`` (the other workers, or its
       successor, take the new ones from then on);
    2. it stops accepting, its engine first opening what is still queued
       for it (nothing is reset), and closes its copies of shared sockets;
    3. the open connections get up to ``SETTLE_SECONDS`` to finish on their
       own (a request sent right after the connect is read and answered,
       not cut by the close);
    4. every server shuts down at once in the rest of ``grace`` (flush,
       close, abort what is left), then the pools this process still has
       (shared IO pools, worker pools) close.
    """
    start = time.monotonic()
    deadline = start + grace
    filtered = [sock for sock in listening if _refuse_new_connections(sock)]
    if any(getattr(item, "_fd", None) is not None for item in items):
        # A socket shared with the supervisor or systemd (and the other
        # workers): no filter here (it is theirs too), but handshakes under
        # way finish before this worker stops accepting.
        time.sleep(max(0.0, min(deadline, start + LISTEN_DRAIN_SECONDS) - time.monotonic()))
    if filtered:
        at_least = min(deadline, start + LISTEN_DRAIN_SECONDS)
        at_most = min(deadline, start + 1.0)
        while True:
            now = time.monotonic()
            if now >= at_most or (now >= at_least and not any(map(_accept_queue, filtered))):
                break
            time.sleep(0.005)
    for item in items:
        _stop_accepting(item, max(0.0, deadline - time.monotonic()))
    for sock in listening:
        sock.close()
    for sock in _worker_sockets or []:
        # NOTE: the supervisor's socket; kept open here, it would stay in the
        # port's group after the supervisor closed it (a slot that keeps
        # dying), with nobody accepting.
        sock.close()
    settled = min(deadline, time.monotonic() + SETTLE_SECONDS)
    while time.monotonic() < settled and any(map(_open_connections, items)):
        time.sleep(0.01)
    grace = max(0.0, deadline - time.monotonic())
    threads = [threading.Thread(target=item.shutdown, args=(grace,),
                                name=f"netring-drain-{i}") for i, item in enumerate(items)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _close_pools(max(0.0, deadline - time.monotonic()))


def _close_pools(grace: float) -> None:
    from . import pool, workers
    for io in list(pool._live):
        io.close(grace)
    for wp in list(workers._live):
        wp.close(grace)


#: In a worker of a supervisor with ``listen=``: its slot's sockets.
_worker_sockets: list[socket.socket] | None = None


def worker_sockets() -> list[socket.socket]:
    """In a worker process of ``run_workers(..., listen=[(host, port),
    ...])``: the listening sockets of this worker's slot, one per address,
    in ``listen``'s order; serve each with ``Server(factory, sock=...)``.
    The supervisor made them (``SO_REUSEPORT``, one per slot: the kernel
    spreads connections over the slots) and keeps them open across this
    worker's replacement. Raises ``RuntimeError`` anywhere else."""
    if _worker_sockets is None:
        raise RuntimeError("worker_sockets(): only in a worker process of "
                           "run_workers(..., listen=...)")
    return list(_worker_sockets)


def _listen_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A listening TCP socket on host:port with SO_REUSEPORT (``::``:
    dual-stack)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and host == "::":
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind((host, port))
        sock.listen(backlog)
    except BaseException:
        sock.close()
        raise
    return sock


def _worker_main(build: Callable[[], Any], conn: multiprocessing.connection.Connection,
                 grace: float, slot: int, supervisor_pid: int,
                 slot_sockets: dict[int, list[socket.socket]] | None = None) -> None:
    """A worker process: build, start, report ready, serve until SIGTERM or
    SIGINT (or the supervisor is gone), drain. Exit status 0 after a drain,
    1 when ``build`` failed or a server stopped on its own."""
    stop = threading.Event()

    def on_stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_stop)
    signal.signal(signal.SIGINT, on_stop)
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _SIGNALS)
    pid = os.getpid()
    if slot_sockets is not None:
        # Only this slot's: another slot's socket kept open here would
        # outlive its closing by the supervisor (a slot whose workers die).
        global _worker_sockets
        for other, socks in slot_sockets.items():
            if other != slot:
                for sock in socks:
                    sock.close()
        _worker_sockets = slot_sockets.get(slot, [])
    try:
        items = _servables(build())
        for item in items:
            item.start()
        listening = [Listening(item.host, item.port, item.backend, item.io_threads)
                     for item in items]
        sockets = _listening_sockets(items)
    except BaseException as e:
        log.exception("worker %d (pid %d): build failed", slot, pid)
        try:
            conn.send(("failed", f"{type(e).__name__}: {e}"))
        except OSError:
            pass
        _close_pools(0.0)
        raise SystemExit(1) from None
    failure = None
    try:
        if not stop.is_set():
            conn.send(("ready", listening))
    except OSError:  # the supervisor is gone
        stop.set()
    if not stop.is_set():
        while not stop.wait(0.1):
            if os.getppid() != supervisor_pid:
                log.warning("worker %d (pid %d): the supervisor is gone; draining", slot, pid)
                break
            failure = next((f for f in map(_failure, items) if f is not None), None)
            if failure is not None:
                log.error("worker %d (pid %d): a server stopped: %s", slot, pid, failure)
                break
    _drain(items, grace, sockets)
    conn.close()
    if failure is not None:
        raise SystemExit(1)


# -- the supervisor -----------------------------------------------------------------


@dataclass(eq=False)
class _Worker:
    slot: int
    pid: int
    process: BaseProcess
    conn: multiprocessing.connection.Connection | None
    started: float
    replacement: bool = False
    ready_at: float | None = None
    listening: list[Listening] | None = None
    said: str | None = None  # what a failed build reported
    kill_at: float | None = None  # SIGTERM sent; SIGKILL then

    def __str__(self) -> str:
        return f"worker {self.slot} (pid {self.pid})"


def _status(exitcode: int | None) -> str:
    if exitcode is None:
        return "is still running"
    if exitcode < 0:
        try:
            return f"was killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            return f"was killed by signal {-exitcode}"
    return f"exited with status {exitcode}"


class Supervisor:
    """Runs ``processes`` workers, each serving what ``build()`` returns.
    ``run()`` blocks until the workers have stopped; see ``run_workers`` for
    the arguments and the module's documentation for the signals.

    ``stop()`` and ``reload()`` do what SIGTERM and SIGHUP do, from any
    thread (for a supervisor run outside the main thread, where it cannot
    install signal handlers).
    """

    def __init__(
        self,
        build: Callable[[], Servable | Iterable[Servable]],
        processes: int | Literal["auto"] = "auto",
        *,
        grace: float = 5.0,
        ready_timeout: float = 30.0,
        max_start_failures: int = 5,
        start_failure_window: float = 60.0,
        backoff: float = 0.1,
        max_backoff: float = 10.0,
        on_ready: Callable[[list[Listening]], object] | None = None,
        start_method: Literal["fork", "spawn", "forkserver"] = "fork",
        metrics: Any = None,
        listen: Iterable[tuple[str, int]] | None = None,
        backlog: int = 1024,
    ) -> None:
        if not callable(build):
            raise TypeError("build: must be callable")
        self.processes = _check_processes(processes)
        self.grace = check_seconds("grace", grace)
        self.ready_timeout = check_seconds("ready_timeout", ready_timeout, positive=True)
        self.max_start_failures = check_int("max_start_failures", max_start_failures, 1)
        self.start_failure_window = check_seconds("start_failure_window", start_failure_window,
                                                  positive=True)
        self.backoff = check_seconds("backoff", backoff)
        self.max_backoff = check_seconds("max_backoff", max_backoff)
        if on_ready is not None and not callable(on_ready):
            raise TypeError("on_ready: must be callable")
        if start_method not in ("fork", "spawn", "forkserver"):
            raise ConfigurationError(
                f"start_method: must be 'fork', 'spawn' or 'forkserver', not {start_method!r}")
        self._listen: list[tuple[str, int]] | None = None
        if listen is not None:
            if start_method != "fork":
                raise ConfigurationError("listen: needs start_method='fork' (the workers "
                                         "inherit the supervisor's sockets)")
            self._listen = []
            for address in listen:
                if not (isinstance(address, tuple) and len(address) == 2
                        and isinstance(address[0], str)):
                    raise TypeError(f"listen: (host, port) tuples, not {address!r}")
                self._listen.append((address[0], check_int("listen port", address[1],
                                                           0, 65535)))
        self.backlog = check_int("backlog", backlog, 1)
        self._build = build
        self._on_ready = on_ready
        # -- metrics (netring.metrics): workers report, this process serves.
        self._metrics: Any = None
        if metrics is not None:
            from .metrics import WorkerMetrics
            self._metrics = WorkerMetrics.of(metrics)
        self._ctx = multiprocessing.get_context(start_method)
        # Set from signal handlers and other threads; acted on by run().
        self._stop_requests = 0
        self._reload_requested = False
        self._signal_name = "stop"
        self._wake_w: int | None = None
        self._running = False

    # -- requests (signal handlers, other threads) ----------------------------

    def stop(self) -> None:
        """Drain every worker and return from ``run()`` (SIGTERM)."""
        self._stop_requests += 1
        self._wake()

    def reload(self) -> None:
        """Replace the workers one at a time (SIGHUP)."""
        self._reload_requested = True
        self._wake()

    def _wake(self) -> None:
        fd = self._wake_w
        if fd is None:
            return
        try:
            os.write(fd, b"\0")
        except OSError:  # full (a wake-up is pending anyway) or closed
            pass

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if signum == signal.SIGHUP:
            self.reload()
        else:
            self._signal_name = signal.Signals(signum).name
            self.stop()

    # -- the loop ---------------------------------------------------------------

    def run(self) -> None:
        """Start the workers and supervise them until stopped; returns after
        every worker has exited. Raises ``WorkerStartError`` when the
        workers could not start (after stopping the others)."""
        if self._running:
            raise RuntimeError("this Supervisor is already running")
        self._running = True
        self._slots: list[_Worker | None] = [None] * self.processes
        self._replacing: _Worker | None = None  # the new worker of a reload
        self._retiring: list[_Worker] = []
        self._restart_at: dict[int, float] = {}  # slot -> when (for the reload: -1 - slot)
        self._streak = [0] * self.processes
        self._start_failures: collections.deque[float] = collections.deque()
        self._reload_queue: list[int] = []
        self._reload_again = False
        self._stopping = False
        self._fatal: str | None = None
        self._announced = False
        self._listening: list[Listening] | None = None
        self._sockets: dict[int, list[socket.socket]] = {}
        self._wake_r, wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(wake_w, False)
        self._wake_w = wake_w
        restore: dict[int, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in _SIGNALS:
                restore[sig] = signal.signal(sig, self._on_signal)
        self._worker_build = self._build
        try:
            if self._metrics is not None:  # metrics: the endpoint before the first worker
                self._metrics.start()
                self._worker_build = self._metrics.wrap(self._build)
            for slot in range(self.processes):
                self._spawn(slot)
            self._loop()
        except BaseException:
            self._kill_all()
            for w in self._live():
                w.process.join(5.0)
            raise
        finally:
            for sig, handler in restore.items():
                signal.signal(sig, handler)
            self._wake_w = None
            os.close(self._wake_r)
            os.close(wake_w)
            if self._metrics is not None:  # metrics: stop serving, remove the reports
                self._metrics.close()
            for slot in list(self._sockets):
                self._close_sockets(slot)
            self._running = False
        if self._fatal is not None:
            raise WorkerStartError(self._fatal)

    def _live(self) -> list[_Worker]:
        live = [w for w in self._slots if w is not None]
        if self._replacing is not None:
            live.append(self._replacing)
        return live + self._retiring

    def _loop(self) -> None:
        stops_seen = 0
        while True:
            if self._stop_requests != stops_seen:
                first = stops_seen == 0
                stops_seen = self._stop_requests
                if first and not self._stopping:
                    log.info("%s: draining %d workers (grace %.1f s)", self._signal_name,
                             len(self._live()), self.grace)
                    self._begin_stop()
                else:
                    log.warning("%s again: killing the workers now", self._signal_name)
                    self._kill_all()
            if self._reload_requested:
                self._reload_requested = False
                self._begin_reload()
            live = self._live()
            if self._stopping and not live:
                return
            now = time.monotonic()
            deadlines = list(self._restart_at.values())
            deadlines += [w.kill_at for w in live if w.kill_at is not None]
            deadlines += [w.started + self.ready_timeout for w in live
                          if w.ready_at is None and w.kill_at is None]
            finite = [t for t in deadlines if t != math.inf]
            timeout = max(0.0, min(finite) - now) if finite else None
            waitables: list[Any] = [self._wake_r]
            waitables += [w.process.sentinel for w in live]
            waitables += [w.conn for w in live if w.conn is not None]
            ready = multiprocessing.connection.wait(waitables, timeout)
            if self._wake_r in ready:
                try:
                    while os.read(self._wake_r, 512):
                        pass
                except BlockingIOError:
                    pass
            for w in live:
                if w.conn is not None and w.conn in ready:
                    self._receive(w)
            for w in live:
                if w.process.sentinel in ready:
                    self._exited(w)
            self._timers(time.monotonic())

    def _slot_sockets(self, slot: int) -> dict[int, list[socket.socket]] | None:
        """``listen=``: every slot's sockets, this one's made if it has none
        (the first slot's bind picks the ports asked as 0)."""
        if self._listen is None:
            return None
        if slot not in self._sockets:
            socks: list[socket.socket] = []
            try:
                for i, (host, port) in enumerate(self._listen):
                    try:
                        sock = _listen_socket(host, port, self.backlog)
                    except OSError as e:
                        raise OSError(e.errno, f"cannot listen on {host}:{port}: "
                                      f"{e.strerror or e}") from None
                    socks.append(sock)
                    if port == 0:
                        self._listen[i] = (host, sock.getsockname()[1])
            except BaseException:
                for sock in socks:
                    sock.close()
                raise
            self._sockets[slot] = socks
        return self._sockets

    def _close_sockets(self, slot: int) -> None:
        for sock in self._sockets.pop(slot, []):
            sock.close()

    def _spawn(self, slot: int, replacement: bool = False) -> _Worker:
        sockets = self._slot_sockets(slot)
        reader, writer = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(
            target=_worker_main, name=f"netring-worker-{slot}",
            args=(self._worker_build, writer, self.grace, slot, os.getpid(), sockets))
        # Blocked across the fork, so that the child never runs this
        # process's handlers; the worker installs its own, then unblocks.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, _SIGNALS)
        try:
            process.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
            writer.close()
        worker = _Worker(slot, process.pid or 0, process, reader, time.monotonic(),
                         replacement=replacement)
        if replacement:
            self._replacing = worker
        else:
            self._slots[slot] = worker
        log.info("%s started%s", worker, " (replacing)" if replacement else "")
        return worker

    def _receive(self, w: _Worker) -> None:
        assert w.conn is not None
        try:
            kind, value = w.conn.recv()
        except (EOFError, OSError):
            w.conn.close()
            w.conn = None
            return
        except Exception as e:  # unpicklable garbage: treat as a failed start
            kind, value = "failed", f"unreadable report: {e}"
        if kind == "failed":
            w.said = str(value)
            return
        if kind != "ready" or w.ready_at is not None:
            return
        w.ready_at = time.monotonic()
        w.listening = list(value)
        if self._stopping:
            return
        if self._listening is None:
            self._listening = w.listening
        elif [(x.host, x.port) for x in w.listening] != \
                [(x.host, x.port) for x in self._listening]:
            self._fail(f"{w} listens on "
                       f"{', '.join(f'{x.host}:{x.port}' for x in w.listening)}, the others on "
                       f"{', '.join(f'{x.host}:{x.port}' for x in self._listening)}: with "
                       f"several processes every worker must bind the same fixed port "
                       f"(not 0) with reuse_port=True")
            return
        log.info("%s ready", w)
        if w is self._replacing:
            self._replacing = None
            old = self._slots[w.slot]
            self._slots[w.slot] = w
            if old is not None:
                log.info("%s replaces %s, which drains", w, old)
                self._retire(old)
            self._next_reload()
        if not self._announced and all(s is not None and s.ready_at is not None
                                       for s in self._slots):
            self._announced = True
            log.info("%d workers ready", self.processes)
            if self._on_ready is not None:
                self._on_ready(list(self._listening))

    def _exited(self, w: _Worker) -> None:
        w.process.join()
        if w.conn is not None:
            # A report sent just before exiting ("failed") is still readable.
            while w.conn is not None and w.conn.poll():
                self._receive(w)
            if w.conn is not None:
                w.conn.close()
                w.conn = None
        status = _status(w.process.exitcode)
        w.process.close()
        if w in self._retiring:
            self._retiring.remove(w)
            log.info("%s %s (drained)", w, status)
            return
        was_replacing = w is self._replacing
        if was_replacing:
            self._replacing = None
        elif self._slots[w.slot] is w:
            self._slots[w.slot] = None
        if self._stopping or self._stop_requests:
            log.info("%s %s", w, status)
            return
        now = time.monotonic()
        lived = now - w.started
        if lived >= STABLE_SECONDS:
            self._streak[w.slot] = 0
        delay = min(self.max_backoff, self.backoff * 2 ** self._streak[w.slot])
        self._streak[w.slot] += 1
        said = f": {w.said}" if w.said else ""
        if w.ready_at is None:
            self._start_failures.append(now)
            while self._start_failures and now - self._start_failures[0] > \
                    self.start_failure_window:
                self._start_failures.popleft()
            if len(self._start_failures) >= self.max_start_failures:
                self._fail(f"workers died before they were ready {len(self._start_failures)} "
                           f"times in {now - self._start_failures[0]:.1f} s (the last: {w} "
                           f"{status}{said}); stopping")
                return
            what = "before it was ready"
        else:
            what = f"after {lived:.1f} s"
        if was_replacing:
            if self._slots[w.slot] is None:
                # The old one is gone too: an ordinary restart fills the slot.
                log.warning("%s %s %s%s; restarting in %.1f s", w, status, what, said, delay)
                self._restart_at[w.slot] = now + delay
                if delay > KEEP_SOCKETS_SECONDS:
                    self._close_sockets(w.slot)
                self._next_reload()
            else:
                log.warning("%s %s %s%s; starting another replacement in %.1f s",
                            w, status, what, said, delay)
                self._restart_at[-1 - w.slot] = now + delay
            return
        if self._replacing is not None and self._replacing.slot == w.slot:
            log.warning("%s %s %s%s; its replacement is starting", w, status, what, said)
            return
        log.warning("%s %s %s%s; restarting in %.1f s", w, status, what, said, delay)
        self._restart_at[w.slot] = now + delay
        if delay > KEEP_SOCKETS_SECONDS:
            self._close_sockets(w.slot)

    def _timers(self, now: float) -> None:
        for key, when in list(self._restart_at.items()):
            if when <= now and not self._stopping:
                del self._restart_at[key]
                slot = key if key >= 0 else -1 - key
                try:
                    self._spawn(slot, replacement=key < 0)
                except OSError as e:  # its sockets cannot be bound again (listen=)
                    delay = min(self.max_backoff, max(self.backoff, 1.0))
                    log.error("worker %d cannot start: %s; trying again in %.1f s",
                              slot, e, delay)
                    self._restart_at[key] = now + delay
        for w in self._live():
            if w.kill_at is not None and now >= w.kill_at:
                log.warning("%s still running %.1f s after SIGTERM: killed",
                            w, self.grace + KILL_MARGIN)
                w.kill_at = math.inf
                self._signal(w, signal.SIGKILL)
            elif (w.ready_at is None and w.kill_at is None
                  and now >= w.started + self.ready_timeout):
                w.said = f"not ready after {self.ready_timeout:.1f} s: killed"
                log.warning("%s %s", w, w.said)
                w.kill_at = math.inf
                self._signal(w, signal.SIGKILL)

    # -- transitions --------------------------------------------------------------

    def _signal(self, w: _Worker, sig: int) -> None:
        try:
            os.kill(w.pid, sig)
        except ProcessLookupError:
            pass

    def _retire(self, w: _Worker) -> None:
        """SIGTERM: drain within the grace, killed after it."""
        if w not in self._retiring:
            self._retiring.append(w)
        if w.kill_at is None:
            w.kill_at = time.monotonic() + self.grace + KILL_MARGIN
            self._signal(w, signal.SIGTERM)

    def _begin_stop(self) -> None:
        self._stopping = True
        self._restart_at.clear()
        self._reload_queue.clear()
        self._reload_again = False
        # Our own sockets (listen=) take no new connection from now on: a
        # dropped SYN is sent again, and by then the port is closed (or a
        # balancer in front has tried another server), while what is queued
        # is still accepted by the draining workers.
        for socks in self._sockets.values():
            for sock in socks:
                _refuse_new_connections(sock)
        for w in self._live():
            if w.kill_at is None:
                w.kill_at = time.monotonic() + self.grace + KILL_MARGIN
                self._signal(w, signal.SIGTERM)

    def _kill_all(self) -> None:
        self._stopping = True
        self._restart_at.clear()
        for w in self._live():
            w.kill_at = math.inf
            self._signal(w, signal.SIGKILL)

    def _fail(self, message: str) -> None:
        log.error("%s", message)
        if self._fatal is None:
            self._fatal = message
        self._begin_stop()

    def _begin_reload(self) -> None:
        if self._stopping:
            return
        if self._replacing is not None or self._reload_queue or \
                any(k < 0 for k in self._restart_at):
            log.info("SIGHUP during a reload: another one follows it")
            self._reload_again = True
            return
        log.info("SIGHUP: replacing %d workers one at a time", self.processes)
        self._reload_queue = list(range(self.processes))
        self._next_reload()

    def _next_reload(self) -> None:
        while self._reload_queue and not self._stopping:
            slot = self._reload_queue.pop(0)
            current = self._slots[slot]
            if current is None or current.ready_at is None:
                continue  # being (re)started anyway
            self._spawn(slot, replacement=True)
            return
        if not self._stopping and self._replacing is None and \
                not any(k < 0 for k in self._restart_at):
            if self._reload_again:
                self._reload_again = False
                self._begin_reload()
            else:
                log.info("reload done")


def run_workers(
    build: Callable[[], Servable | Iterable[Servable]],
    processes: int | Literal["auto"] = "auto",
    *,
    grace: float = 5.0,
    ready_timeout: float = 30.0,
    max_start_failures: int = 5,
    start_failure_window: float = 60.0,
    backoff: float = 0.1,
    max_backoff: float = 10.0,
    on_ready: Callable[[list[Listening]], object] | None = None,
    start_method: Literal["fork", "spawn", "forkserver"] = "fork",
    metrics: Any = None,
    listen: Iterable[tuple[str, int]] | None = None,
    backlog: int = 1024,
) -> None:
    """Serve on every core: run ``processes`` worker processes, each serving
    what ``build()`` returns, until SIGTERM/SIGINT; SIGHUP replaces them one
    at a time. Returns once every worker has drained and exited.

    Args:
        build: called in each worker process; returns a ``netring.Server``
            (or an iterable of them) made with ``reuse_port=True`` and a
            fixed port, started or not (the worker starts it). Build
            everything here, not before ``run_workers``: an IO pool made in
            the supervisor does not survive a fork. With
            ``start_method="spawn"`` it must be picklable (a module-level
            function).
        processes: how many workers, or ``"auto"``: ``usable_cpus()``.
        grace: seconds each worker has to drain on SIGTERM (its servers'
            ``shutdown(grace)``); a worker still running 1 s after that is
            killed.
        ready_timeout: seconds a new worker may take to report ready before
            it is killed (and counted as a failed start).
        max_start_failures, start_failure_window: the run stops with
            ``WorkerStartError`` once workers have died before being ready
            this many times within this many seconds.
        backoff, max_backoff: the delay before restarting a dead worker:
            ``backoff``, doubled for each further death in that slot of a
            worker that lived under 10 s, at most ``max_backoff``.
        on_ready: called (in the supervisor) once, when every worker first
            reports ready, with the first worker's ``Listening`` list (its
            servers' addresses, backend and IO threads, in ``build``'s
            order): print a ready line there. SIGTERM/SIGINT handlers are
            in place by then.
        start_method: how workers are made (``multiprocessing``'s): ``fork``
            (default: fast, ``build`` may be a closure) or ``spawn`` /
            ``forkserver`` (a fresh interpreter).
        metrics: serve Prometheus metrics from the supervisor, every
            worker's figures combined (``netring.metrics``, needs
            ``prometheus_client``): a port, ``(host, port)``,
            ``"HOST:PORT"`` (host 127.0.0.1 by default) or a
            ``netring.metrics.WorkerMetrics``; served from before the first
            worker starts until the run ends.
        listen: ``[(host, port), ...]``: the supervisor binds the listening
            sockets, one ``SO_REUSEPORT`` socket per address per worker slot
            (``backlog``), and keeps them for the whole run; ``build`` serves
            ``worker_sockets()`` with ``Server(factory, sock=...)``. A
            reloaded or restarted worker takes over its slot's sockets
            (what is queued there included) instead of binding new ones: a
            reload drops no SYN and resets nothing, and a killed worker's
            queued connections wait for its replacement (0.1 s later) unless
            the slot's workers keep dying. Port 0: the first bind picks one.
            Needs ``start_method="fork"``.

    Raises:
        WorkerStartError: workers kept dying before they were ready (or
            bound different ports); every worker has been stopped.

    Signal handlers are installed when called from the main thread;
    otherwise use ``Supervisor`` and its ``stop()`` / ``reload()``.
    """
    Supervisor(build, processes, grace=grace, ready_timeout=ready_timeout,
               max_start_failures=max_start_failures,
               start_failure_window=start_failure_window, backoff=backoff,
               max_backoff=max_backoff, on_ready=on_ready, start_method=start_method,
               metrics=metrics, listen=listen, backlog=backlog).run()
