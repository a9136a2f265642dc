"""Prometheus metrics: the engine's counters, served off the IO threads.

One process::

    import netring
    from netring import metrics

    server = netring.Server(Echo, "0.0.0.0", 5050)
    server.start()
    endpoint = metrics.serve(9100, "0.0.0.0", servers={"echo": server})
    ...
    endpoint.close()

Worker processes (``run_workers(..., metrics=("0.0.0.0", 9100))``, or
``python -m netring serve ... --processes N --metrics-port 9100``): the
supervisor serves one endpoint with the figures of every worker combined.

What is read, and when
----------------------

``NetringCollector`` is a ``prometheus_client`` collector. Nothing polls in
the background: each scrape calls ``IOPool.stats()`` once per pool (an
atomic snapshot of the engine's counters: relaxed loads, no lock an IO
thread takes), ``Server.stats()`` once per server (the same snapshot plus
one listener's open count) and ``WorkerPool.stats()`` once per worker pool
(its lock, held for a dict's worth of reads). The HTTP endpoint is
``prometheus_client``'s ``start_http_server`` on a dedicated
``CollectorRegistry``: its own thread, one more per request, never an IO
thread, so a scrape never waits for a connection and a connection never
waits for a scrape (on a GIL build they share the interpreter for the
milliseconds a scrape spends in Python).

Labels: every figure of an ``IOPool`` carries ``pool``, every figure of a
``Server`` ``server``, every figure of a ``WorkerPool`` ``worker_pool``.
Names come from the mappings given (``servers={"echo": server}``); an
unnamed server is ``"HOST:PORT"``, an unnamed pool or worker pool takes the
name of the first server on it (else ``pool0``, ``worker_pool0``...). A pool
shared by several servers is exported once. A figure the engine reports
that this module does not know yet is exported untyped as
``netring_<key>``, so new counters show up before their documentation does.

Worker processes: why files, not ``prometheus_client``'s multiprocess mode
-------------------------------------------------------------------------

The engine's figures are absolute snapshots kept in Rust atomics, not
increments made through ``prometheus_client`` metric objects, which is what
its multiprocess mode aggregates (each process's ``Counter.inc()`` in an
mmap'd file, ``PROMETHEUS_MULTIPROC_DIR`` set before any import, gauges
needing a per-metric mode, dead processes handled by ``mark_process_dead``
keyed by a pid that the next worker may reuse). Mirroring the snapshots
into such objects would need the same periodic copy as below, with less
control over dead workers. Pulling a snapshot from each worker at scrape
time over a second pipe would make a scrape wait on every worker (on a busy
one, for its GIL) and lose a killed worker's figures since the last scrape.

So: each worker (its ``build`` wrapped by ``WorkerMetrics.wrap``) runs one
small thread that writes its snapshot (the families this collector would
serve, as JSON) to ``DIR/<pid>-<start time>.json`` every ``interval``
seconds (1 s; write and rename, so a reader never sees half a file), and a
last one when the worker exits (a drain: after its servers shut down). The
directory is the supervisor's (``/dev/shm`` when there is one), removed
when the run ends. The supervisor serves the endpoint (its own thread,
started before the first worker) and combines, at scrape time, the files
it finds: no worker is asked anything, a scrape costs a directory listing
and one small read per worker.

A worker that has exited (its process gone or a zombie: ``/proc/<pid>/stat``
is checked with the start time, so a reused pid is not mistaken for it) is
folded in at the next scrape, exactly once (its file is deleted under the
collector's lock): its counters are added to what the supervisor keeps for
exited workers, so every ``_total`` in the combined figures only grows over
deaths, restarts and ``SIGHUP`` reloads (a reload's old and new worker both
count while both run: each its own connections, nothing twice); its gauges
(connections open, buffer memory, queue depth) leave the sum. What can be
lost is said, never hidden: a worker that drained wrote its final figures
(``netring_workers_exited_total{final="true"}``); one that was killed
(``SIGKILL``, a crash) is folded in with its last report, so at most
``interval`` seconds of its increments are missing
(``netring_workers_exited_total{final="false"}``). A worker that stopped
reporting while alive (hung) keeps its last figures;
``netring_workers_report_age_seconds`` shows the oldest report's age.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

try:
    from prometheus_client import start_http_server
    from prometheus_client.core import (
        CollectorRegistry,
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
        UnknownMetricFamily,
    )
    from prometheus_client.process_collector import ProcessCollector
    from prometheus_client.utils import floatToGoString
except ImportError as _e:  # pragma: no cover - the optional dependency
    raise ImportError(
        "netring.metrics needs prometheus_client: pip install 'prometheus_client>=0.20'"
    ) from _e

from ._args import check_int, check_seconds
from .errors import ConfigurationError
from .pool import IOPool
from .server import Server
from .workers import WorkerPool

__all__ = [
    "MetricsServer",
    "NetringCollector",
    "WorkerMetrics",
    "WorkersCollector",
    "serve",
]

log = logging.getLogger("netring.metrics")

#: Seconds between a worker process's reports to the supervisor.
DEFAULT_INTERVAL = 1.0

# -- what is exported -----------------------------------------------------------------

#: ``IOPool.stats()`` key -> (metric name, type, help). Counters are named
#: without ``_total`` here; prometheus_client adds it.
POOL_METRICS: dict[str, tuple[str, str, str]] = {
    "connections_open": ("netring_connections_open", "gauge",
                         "TCP connections open now (accepted and outbound)."),
    "connections_accepted": ("netring_connections_accepted", "counter",
                             "TCP connections accepted."),
    "connections_connected": ("netring_connections_connected", "counter",
                              "Outbound TCP connections established (IOPool.connect)."),
    "connections_closed": ("netring_connections_closed", "counter",
                           "TCP connections closed (every cause)."),
    "connections_refused": ("netring_connections_refused", "counter",
                            "Connections accepted and closed at once by max_connections "
                            "(overflow='close') or max_connections_per_ip."),
    "handshakes_failed": ("netring_handshakes_failed", "counter",
                          "Connections closed before they opened: failed TLS handshakes, "
                          "bad, late or untrusted PROXY protocol headers."),
    "frame_errors_oversize": ("netring_frame_errors_oversize", "counter",
                              "Connections closed for a packet over max_packet or a line "
                              "over max_line."),
    "frame_errors_malformed": ("netring_frame_errors_malformed", "counter",
                               "Connections closed for input that broke the framing "
                               "otherwise (a bad length header, a RESP protocol error)."),
    "frame_timeouts": ("netring_frame_timeouts", "counter",
                       "Connections closed because a packet took longer than frame_timeout."),
    "write_buffer_aborts": ("netring_write_buffer_aborts", "counter",
                            "Connections aborted because their queued writes passed "
                            "max_write_buffer (a peer that does not read)."),
    "file_prefetches": ("netring_file_prefetches", "counter",
                        "sendfile windows not in the page cache, read on the prefetch "
                        "thread before they were sent."),
    "bytes_in": ("netring_received_bytes", "counter",
                 "Bytes received on TCP connections (as on the wire: TLS records included)."),
    "bytes_out": ("netring_sent_bytes", "counter",
                  "Bytes handed to the kernel on TCP connections (TLS records included)."),
    "frames_in": ("netring_frames_received", "counter",
                  "Packets cut by a framing (length-prefixed, delimited, fixed-size, RESP) "
                  "and delivered."),
    "frames_out": ("netring_frames_sent", "counter",
                   "Packets queued for sending framed (send_packet, send_packets)."),
    "zerocopy_sends": ("netring_zerocopy_sends", "counter",
                       "Zero-copy sends the kernel sent in place (SEND_ZC, MSG_ZEROCOPY; "
                       "zerocopy_threshold)."),
    "zerocopy_copied": ("netring_zerocopy_copied", "counter",
                        "Zero-copy sends the kernel copied after all (loopback): each turns "
                        "zero-copy off for its connection."),
    "zerocopy_abandoned": ("netring_zerocopy_abandoned", "counter",
                           "Zero-copy sends of closed connections the kernel did not release "
                           "in time (epoll): their buffers are leaked."),
    "datagrams_in": ("netring_datagrams_received", "counter", "UDP datagrams received."),
    "datagrams_out": ("netring_datagrams_sent", "counter", "UDP datagrams sent."),
    "datagrams_truncated": ("netring_datagrams_truncated", "counter",
                            "UDP datagrams received larger than a receive buffer (cut)."),
    "datagrams_dropped": ("netring_datagrams_dropped", "counter",
                          "UDP datagrams dropped because the send queue was full."),
    "buffer_memory": ("netring_buffer_memory_bytes", "gauge",
                      "Bytes the engine buffers beyond its receive buffers (queued writes, "
                      "partial packets, held input); counted only under max_buffer_memory."),
    "io_threads": ("netring_io_threads", "gauge", "IO threads of the pool."),
}
#: ``IOPool.stats()`` histograms (``{"buckets": [(le, cumulative)], "sum": s}``).
POOL_HISTOGRAMS: dict[str, tuple[str, str, str]] = {
    "turn_seconds": ("netring_io_turn_seconds", "histogram",
                     "Busy time of one IO-loop turn (completions, commands, callbacks, "
                     "settling; not the wait), per IO thread turn."),
    "callback_seconds": ("netring_callback_seconds", "histogram",
                         "Time in Python callbacks per IO-loop turn that delivered events "
                         "(every callback of that turn together)."),
}
#: Keys of ``IOPool.stats()`` that are not figures.
_POOL_TEXT = {"backend", "backend_fallback_reason"}
POOL_INFO = ("netring_pool_info", "gauge",
             "1 per pool, labelled with its backend (io_uring or epoll) and why auto fell "
             "back to epoll (empty: it did not).")

SERVER_METRICS: dict[str, tuple[str, str, str]] = {
    "server_connections_open": ("netring_server_connections_open", "gauge",
                                "This server's connections open now."),
    "serving": ("netring_server_serving", "gauge",
                "1 while the server accepts connections, else 0."),
}

#: ``WorkerPool.stats()`` key -> (metric name, type, help).
WORKER_POOL_METRICS: dict[str, tuple[str, str, str]] = {
    "threads": ("netring_worker_pool_threads", "gauge", "Worker threads of the pool."),
    "busy_workers": ("netring_worker_pool_busy_threads", "gauge",
                     "Worker threads running a callback now."),
    "queued_packets": ("netring_worker_pool_queued_packets", "gauge",
                       "Items (packets, events, tasks) waiting for a worker: the queue depth."),
    "queued_bytes": ("netring_worker_pool_queued_bytes", "gauge",
                     "Bytes of the packets waiting for a worker."),
    "max_queued": ("netring_worker_pool_queue_limit_packets", "gauge",
                   "Queued items at which connections feeding the pool stop reading."),
    "max_queued_bytes": ("netring_worker_pool_queue_limit_bytes", "gauge",
                         "Queued bytes at which connections feeding the pool stop reading."),
    "completed": ("netring_worker_pool_completed", "counter",
                  "Items (packets, events, tasks) handled by a worker."),
    "wait_seconds_total": ("netring_worker_pool_wait_seconds", "counter",
                           "Seconds items waited from queued to taken by a worker, summed "
                           "(over netring_worker_pool_completed_total: the mean wait)."),
    "paused_connections": ("netring_worker_pool_paused_connections", "gauge",
                           "Connections whose reading the pool paused (queue full)."),
}

#: The supervisor's own figures (worker processes only).
WORKERS_METRICS: dict[str, tuple[str, str, str]] = {
    "workers": ("netring_workers", "gauge",
                "Worker processes alive whose figures are in the combined totals."),
    "exited": ("netring_workers_exited", "counter",
               "Worker processes that exited, their counters kept in the totals; "
               "final=false: killed or crashed, so the increments after its last report "
               "(at most one report interval) are missing."),
    "age": ("netring_workers_report_age_seconds", "gauge",
            "Age of the oldest live worker's last report (a hung worker's grows)."),
}

# A family as plain data (what a worker writes and the supervisor reads):
# [name, type, help, [label names], [[[label values], value], ...]]; a
# histogram's value is {"buckets": [[le, cumulative count], ...], "sum": s}.
Family = list[Any]

#: Kinds whose samples only grow: an exited worker's are kept in the totals.
_CUMULATIVE = {"counter", "histogram"}


class _Families:
    """Families under construction, in first-seen order."""

    def __init__(self) -> None:
        self.by_name: dict[str, Family] = {}

    def add(self, spec: tuple[str, str, str], labelnames: list[str], labelvalues: list[str],
            value: float) -> None:
        name, kind, doc = spec
        family = self.by_name.get(name)
        if family is None:
            family = self.by_name[name] = [name, kind, doc, labelnames, []]
        family[4].append([labelvalues, value])

    def list(self) -> list[Family]:
        return list(self.by_name.values())


def _histogram(value: Mapping[str, Any]) -> dict[str, Any]:
    """A stats() histogram as plain data, bounds as Prometheus writes them:
    every other bound (powers of four microseconds, 1 µs ... 2^22 µs, then
    +Inf): half the lines of the engine's doubling bounds, for a scrape
    that holds the GIL half as long on these two families."""
    buckets = value["buckets"]
    kept = buckets[:-1:2] + buckets[-1:]
    return {"buckets": [[floatToGoString(le), count] for le, count in kept],
            "sum": float(value["sum"])}


def _merge(kind: str, a: Any, b: Any) -> Any:
    """Two workers' values of one sample, summed."""
    if kind != "histogram":
        return a + b
    return {"buckets": [[le, x + y] for (le, x), (_, y) in zip(a["buckets"], b["buckets"],
                                                              strict=True)],
            "sum": a["sum"] + b["sum"]}


def _to_metric(family: Family) -> Metric:
    name, kind, doc, labelnames, samples = family
    if kind == "histogram":
        histogram = HistogramMetricFamily(name, doc, labels=labelnames)
        for labelvalues, value in samples:
            histogram.add_metric(labelvalues, [tuple(b) for b in value["buckets"]],
                                 value["sum"])
        return histogram
    cls = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}.get(kind,
                                                                          UnknownMetricFamily)
    metric = cls(name, doc, labels=labelnames)
    for labelvalues, value in samples:
        metric.add_metric(labelvalues, value)
    return metric


def _describe() -> Iterator[Metric]:
    """The families a collector always serves, empty (for the registry's
    duplicate check)."""
    specs = [*POOL_METRICS.values(), *POOL_HISTOGRAMS.values(), POOL_INFO, *SERVER_METRICS.values(),
             *WORKER_POOL_METRICS.values()]
    for name, kind, doc in specs:
        yield _to_metric([name, kind, doc, [], []])


def _named(things: Mapping[str, Any] | Iterable[Any] | None, kind: type,
           what: str) -> list[tuple[str | None, Any]]:
    if things is None:
        return []
    if isinstance(things, Mapping):
        items: list[tuple[str | None, Any]] = []
        for name, thing in things.items():
            if not isinstance(name, str):
                raise TypeError(f"{what}: names must be str, not {type(name).__name__}")
            items.append((name, thing))
    elif isinstance(things, kind):
        items = [(None, things)]
    elif isinstance(things, Iterable) and not isinstance(things, str | bytes):
        items = [(None, thing) for thing in things]
    else:
        raise TypeError(f"{what}: a mapping of names to {kind.__name__}s, or an iterable of "
                        f"them, not {type(things).__name__}")
    for _, thing in items:
        _check_kind(thing, kind, what)
    return items


def _check_kind(thing: object, kind: type, what: str) -> None:
    if kind is Server:
        # A server, or anything with a ``pool`` (a worker's UDP endpoint):
        # its pool's figures are exported.
        if not isinstance(thing, Server) and not hasattr(thing, "pool"):
            raise TypeError(f"{what}: a netring.Server, not {type(thing).__name__}")
    elif not isinstance(thing, kind):
        raise TypeError(f"{what}: a netring.{kind.__name__}, not {type(thing).__name__}")


class NetringCollector:
    """A ``prometheus_client`` collector over netring's counters, read when
    collected (see the module's documentation for names and labels).

    Args:
        pools: ``IOPool``s, as ``{name: pool}`` or an iterable.
        servers: ``Server``s, as ``{name: server}`` or an iterable; their
            pools and worker pools are exported too.
        worker_pools: ``WorkerPool``s not reachable through a server.

    ``add_pool``, ``add_server`` and ``add_worker_pool`` add more later (from
    any thread). Register it in a ``CollectorRegistry`` or use ``serve()``.
    """

    def __init__(self, *, pools: Mapping[str, IOPool] | Iterable[IOPool] | None = None,
                 servers: Mapping[str, Server] | Iterable[Server] | None = None,
                 worker_pools: Mapping[str, WorkerPool] | Iterable[WorkerPool] | None = None,
                 ) -> None:
        self._lock = threading.Lock()  # guards the lists below, never held while reading
        self._pools = _named(pools, IOPool, "pools")
        self._servers = _named(servers, Server, "servers")
        self._worker_pools = _named(worker_pools, WorkerPool, "worker_pools")

    def add_pool(self, pool: IOPool, name: str | None = None) -> None:
        """Export ``pool`` too (under ``name``)."""
        _check_kind(pool, IOPool, "pool")
        with self._lock:
            self._pools = [*self._pools, (name, pool)]

    def add_server(self, server: Server, name: str | None = None) -> None:
        """Export ``server`` too (under ``name``; default ``"HOST:PORT"``)."""
        _check_kind(server, Server, "server")
        with self._lock:
            self._servers = [*self._servers, (name, server)]

    def add_worker_pool(self, pool: WorkerPool, name: str | None = None) -> None:
        """Export ``pool`` too (under ``name``)."""
        _check_kind(pool, WorkerPool, "worker_pool")
        with self._lock:
            self._worker_pools = [*self._worker_pools, (name, pool)]

    def describe(self) -> Iterator[Metric]:
        return _describe()

    def collect(self) -> Iterator[Metric]:
        for family in self.snapshot():
            yield _to_metric(family)

    def snapshot(self) -> list[Family]:
        """The families as plain data: ``[name, type, help, label names,
        [[label values, value], ...]]`` (what a worker process reports)."""
        with self._lock:
            pools, servers, worker_pools = self._pools, self._servers, self._worker_pools
        out = _Families()
        # Names first (a pool takes its name, else its first server's).
        pool_names: dict[int, tuple[str, IOPool]] = {}
        wp_names: dict[int, tuple[str, WorkerPool]] = {}
        for name, pool in pools:
            pool_names.setdefault(id(pool), (name or f"pool{len(pool_names)}", pool))
        server_rows: list[tuple[str, Any]] = []
        for name, server in servers:
            label = name if name is not None else f"{server.host}:{server.port}"
            server_rows.append((label, server))
            pool = getattr(server, "pool", None)
            if isinstance(pool, IOPool):
                pool_names.setdefault(id(pool), (label, pool))
            workers = getattr(server, "workers", None) if isinstance(server, Server) else None
            if isinstance(workers, WorkerPool):
                wp_names.setdefault(id(workers), (label, workers))
        for name, wp in worker_pools:
            wp_names.setdefault(id(wp), (name or f"worker_pool{len(wp_names)}", wp))

        for label, pool in pool_names.values():
            stats = pool.stats()
            for key, value in stats.items():
                if key in POOL_HISTOGRAMS and isinstance(value, Mapping):
                    out.add(POOL_HISTOGRAMS[key], ["pool"], [label], _histogram(value))
                    continue
                if key in _POOL_TEXT or isinstance(value, bool) or \
                        not isinstance(value, int | float):
                    continue
                spec = POOL_METRICS.get(key) or (
                    f"netring_{key}", "unknown", f"netring engine figure {key!r}.")
                out.add(spec, ["pool"], [label], value)
            out.add(POOL_INFO, ["pool", "backend", "backend_fallback_reason"],
                    [label, str(stats.get("backend", "")),
                     str(stats.get("backend_fallback_reason") or "")], 1)
        for label, server in server_rows:
            if not isinstance(server, Server):
                continue
            stats = server.stats()
            out.add(SERVER_METRICS["server_connections_open"], ["server"], [label],
                    stats.get("server_connections_open", 0))
            out.add(SERVER_METRICS["serving"], ["server"], [label],
                    1 if server.is_serving() else 0)
        for label, wp in wp_names.values():
            stats = wp.stats()
            for key, spec in WORKER_POOL_METRICS.items():
                value = stats.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    out.add(spec, ["worker_pool"], [label], value)
        return out.list()


# -- the endpoint ---------------------------------------------------------------------


class MetricsServer:
    """A running metrics endpoint (``serve()``, or a supervisor's): ``host``,
    ``port`` (the bound one, also when 0 was asked), ``url``; ``close()``
    stops it (within about half a second: the HTTP loop's poll)."""

    def __init__(self, httpd: Any, thread: threading.Thread, registry: CollectorRegistry,
                 collector: Any) -> None:
        self._httpd = httpd
        self._thread = thread
        self.registry = registry
        #: The collector (a ``NetringCollector`` or the supervisor's ``WorkersCollector``).
        self.collector = collector
        self.host: str = str(httpd.server_address[0])
        self.port: int = int(httpd.server_address[1])
        self._closed = False

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        """Stop serving and close the listening socket. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5.0)

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<netring.metrics.MetricsServer {self.url}{' closed' if self._closed else ''}>"


def _start(port: int, host: str, registry: CollectorRegistry, collector: Any) -> MetricsServer:
    port = check_int("port", port, 0, 65535)
    if not isinstance(host, str):
        raise TypeError(f"host: must be a str, not {type(host).__name__}")
    httpd, thread = start_http_server(port, addr=host, registry=registry)
    thread.name = "netring-metrics-http"
    return MetricsServer(httpd, thread, registry, collector)


def serve(port: int, host: str = "127.0.0.1", *,
          pools: Mapping[str, IOPool] | Iterable[IOPool] | None = None,
          servers: Mapping[str, Server] | Iterable[Server] | None = None,
          worker_pools: Mapping[str, WorkerPool] | Iterable[WorkerPool] | None = None,
          process: bool = True) -> MetricsServer:
    """Serve Prometheus metrics on ``http://host:port/metrics`` from a thread
    of its own (``prometheus_client.start_http_server`` on a dedicated
    ``CollectorRegistry``); ``port=0`` picks a free one (``.port``).

    Exports ``NetringCollector(pools=, servers=, worker_pools=)``, read at
    each scrape, and with ``process=True`` the ``process_*`` figures of this
    process (CPU, memory, descriptors). Returns a ``MetricsServer``:
    ``close()`` stops it; ``.collector.add_server(...)`` adds servers later.
    """
    collector = NetringCollector(pools=pools, servers=servers, worker_pools=worker_pools)
    registry = CollectorRegistry()
    registry.register(collector)
    if process:
        ProcessCollector(registry=registry)
    return _start(port, host, registry, collector)


# -- worker processes -----------------------------------------------------------------


def _proc_start(pid: int) -> tuple[str, int] | None:
    """(state, start time in clock ticks) of a process, or None if gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            text = f.read().decode("ascii", "replace")
    except OSError:
        return None
    fields = text[text.rfind(")") + 2:].split()
    try:
        return fields[0], int(fields[19])
    except (IndexError, ValueError):
        return None


def _alive(pid: int, start: int) -> bool:
    info = _proc_start(pid)
    return info is not None and info[1] == start and info[0] not in ("Z", "X", "x")


def _shm_dir() -> str | None:
    return "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None


class _Reporter:
    """In a worker process: writes the worker's families to its file every
    ``interval`` seconds, and once more when the process exits."""

    def __init__(self, collector: NetringCollector, directory: str, interval: float) -> None:
        self._collector = collector
        self._interval = interval
        pid = os.getpid()
        info = _proc_start(pid)
        self._pid, self._start = pid, (info[1] if info else 0)
        self._path = os.path.join(directory, f"{pid}-{self._start}.json")
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="netring-metrics-report",
                                        daemon=True)

    def start(self) -> None:
        import multiprocessing.util
        try:
            self.write(final=False)
        except Exception:
            log.warning("worker %d: cannot write its metrics to %s", self._pid, self._path,
                        exc_info=True)
        self._thread.start()
        # Runs when the worker's target returns (after its drain) or raises.
        multiprocessing.util.Finalize(None, self.finish, exitpriority=100)

    def _run(self) -> None:
        while not self._done.wait(self._interval):
            try:
                self.write(final=False)
            except Exception:  # a figure that cannot be read now: try again next time
                log.debug("worker %d: cannot write its metrics", self._pid, exc_info=True)

    def finish(self) -> None:
        self._done.set()
        try:
            self.write(final=True)
        except Exception:
            log.debug("worker %d: cannot write its final metrics", self._pid, exc_info=True)

    def write(self, final: bool) -> None:
        families = self._collector.snapshot()
        data = json.dumps({"pid": self._pid, "start": self._start, "time": time.time(),
                           "final": final, "families": families}, separators=(",", ":"))
        with self._lock:
            if self._done.is_set() and not final:
                return  # the final report is written (or being written): keep it
            tmp = f"{self._path}.tmp"
            with open(tmp, "w") as f:
                f.write(data)
            os.replace(tmp, self._path)


class _Reporting:
    """A worker's ``build``: the caller's, then a reporter over what it built."""

    def __init__(self, build: Callable[[], Any], directory: str, interval: float,
                 names: list[str] | None) -> None:
        self.build = build
        self.directory = directory
        self.interval = interval
        self.names = names

    def __call__(self) -> Any:
        built = self.build()
        items = [built] if hasattr(built, "start") and hasattr(built, "shutdown") \
            else list(built)
        collector = NetringCollector()
        names = self.names or []
        for i, item in enumerate(items):
            if isinstance(item, Server) or hasattr(item, "pool"):  # else: nothing to read
                collector.add_server(item, names[i] if i < len(names) else None)
        _Reporter(collector, self.directory, self.interval).start()
        return items


class WorkersCollector:
    """The supervisor's collector: the combined figures of every worker's
    report in ``directory`` (see the module's documentation), read at each
    scrape."""

    def __init__(self, directory: str) -> None:
        self._directory = directory
        self._lock = threading.Lock()
        #: Counters of exited workers: (name, label values) -> value.
        self._retired: dict[tuple[str, tuple[str, ...]], Any] = {}
        #: What a family looks like: name -> (type, help, label names).
        self._meta: dict[str, tuple[str, str, list[str]]] = {}
        self._exited = {"true": 0, "false": 0}

    def describe(self) -> Iterator[Metric]:
        yield from _describe()
        for name, kind, doc in WORKERS_METRICS.values():
            yield _to_metric([name, kind, doc, [], []])

    def _read(self) -> list[dict[str, Any]]:
        reports = []
        try:
            names = os.listdir(self._directory)
        except OSError:
            return reports
        for name in names:
            if not name.endswith(".json"):
                continue
            path = os.path.join(self._directory, name)
            try:
                with open(path) as f:
                    report = json.load(f)
                report["path"] = path
            except (OSError, ValueError):
                continue
            reports.append(report)
        return reports

    def collect(self) -> Iterator[Metric]:
        with self._lock:  # the supervisor's own lock: concurrent scrapes fold once
            now = time.time()
            live: list[dict[str, Any]] = []
            for report in self._read():
                if _alive(int(report["pid"]), int(report["start"])):
                    live.append(report)
                    continue
                for name, kind, doc, labelnames, samples in report["families"]:
                    self._meta.setdefault(name, (kind, doc, labelnames))
                    if kind not in _CUMULATIVE:
                        continue
                    for labelvalues, value in samples:
                        key = (name, tuple(labelvalues))
                        old = self._retired.get(key)
                        self._retired[key] = value if old is None else _merge(kind, old, value)
                self._exited["true" if report.get("final") else "false"] += 1
                with contextlib.suppress(OSError):
                    os.unlink(report["path"])
            totals: dict[tuple[str, tuple[str, ...]], Any] = dict(self._retired)
            for report in live:
                for name, kind, doc, labelnames, samples in report["families"]:
                    self._meta.setdefault(name, (kind, doc, labelnames))
                    for labelvalues, value in samples:
                        key = (name, tuple(labelvalues))
                        old = totals.get(key)
                        totals[key] = value if old is None else _merge(kind, old, value)
            # Gauges of exited workers are not kept; a name seen only then has none.
            families: dict[str, Family] = {}
            for (name, labelvalues), value in totals.items():
                kind, doc, labelnames = self._meta[name]
                family = families.setdefault(name, [name, kind, doc, labelnames, []])
                family[4].append([list(labelvalues), value])
            exited = dict(self._exited)
        for family in families.values():
            yield _to_metric(family)
        yield _to_metric([*WORKERS_METRICS["workers"], [], [[[], len(live)]]])
        yield _to_metric([*WORKERS_METRICS["exited"], ["final"],
                          [[["true"], exited["true"]], [["false"], exited["false"]]]])
        age = max((now - float(r["time"]) for r in live), default=0.0)
        yield _to_metric([*WORKERS_METRICS["age"], [], [[[], max(0.0, age)]]])


class WorkerMetrics:
    """Metrics for worker processes: the supervisor serves the combined
    figures of every worker on ``host:port``; each worker reports its own
    every ``interval`` seconds (see the module's documentation).

    ``run_workers(..., metrics=...)`` takes one of these, or ``(host,
    port)``, ``"HOST:PORT"`` or a port (host 127.0.0.1). ``names`` label
    what each worker's ``build()`` returns, in order (default
    ``"HOST:PORT"``). By hand: ``start()`` in the supervisor, before the
    workers; ``wrap(build)`` as the workers' build; ``close()`` at the end.
    """

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *,
                 interval: float = DEFAULT_INTERVAL, names: Iterable[str] | None = None,
                 directory: str | None = None) -> None:
        self.port = check_int("port", port, 0, 65535)
        if not isinstance(host, str):
            raise TypeError(f"host: must be a str, not {type(host).__name__}")
        self.host = host
        self.interval = check_seconds("interval", interval, positive=True)
        self.names = None if names is None else [str(n) for n in names]
        self._parent = directory
        self.directory: str | None = None
        self.server: MetricsServer | None = None

    @classmethod
    def of(cls, metrics: object) -> WorkerMetrics:
        """``metrics=`` as ``run_workers`` takes it."""
        if isinstance(metrics, WorkerMetrics):
            return metrics
        if isinstance(metrics, int) and not isinstance(metrics, bool):
            return cls(metrics)
        if isinstance(metrics, str):
            host, sep, port = metrics.rpartition(":")
            if not sep or not port.isdigit():
                raise ConfigurationError(f"metrics: 'HOST:PORT', not {metrics!r}")
            return cls(int(port), host.strip("[]") or "127.0.0.1")
        if isinstance(metrics, tuple) and len(metrics) == 2:
            return cls(metrics[1], metrics[0])
        raise TypeError("metrics: a port, (host, port), 'HOST:PORT' or a "
                        f"netring.metrics.WorkerMetrics, not {type(metrics).__name__}")

    def start(self) -> MetricsServer:
        """In the supervisor: make the reports' directory and serve."""
        if self.server is not None:
            raise RuntimeError("these WorkerMetrics are already started")
        self.directory = tempfile.mkdtemp(prefix=f"netring-metrics-{os.getpid()}-",
                                          dir=self._parent or _shm_dir())
        registry = CollectorRegistry()
        collector = WorkersCollector(self.directory)
        registry.register(collector)
        try:
            self.server = _start(self.port, self.host, registry, collector)
        except BaseException:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            raise
        log.info("metrics of the worker processes on %s", self.server.url)
        return self.server

    def wrap(self, build: Callable[[], Any]) -> Callable[[], Any]:
        """The workers' ``build``: ``build()``, then report what it built
        (after ``start()``; picklable when ``build`` is)."""
        if self.directory is None:
            raise RuntimeError("WorkerMetrics.wrap: start() first")
        return _Reporting(build, self.directory, self.interval, self.names)

    def close(self) -> None:
        """Stop serving and remove the reports. Idempotent."""
        server, self.server = self.server, None
        if server is not None:
            server.close()
        directory, self.directory = self.directory, None
        if directory is not None:
            shutil.rmtree(directory, ignore_errors=True)
