"""Prometheus metrics (``netring.metrics``): the engine's counters served
from a thread of their own, scraped over loopback with urllib and parsed by
``prometheus_client``'s own parser; counters move with traffic, a scrape
under heavy traffic returns at once, the command line serves them, and with
``--processes 2`` the supervisor's figures combine both workers and keep a
dead or replaced worker's counters.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import netring
import pytest
from conftest import cli_server, recv_exactly, serving, wait_until
from netring import metrics
from prometheus_client.parser import text_string_to_metric_families

pytestmark = pytest.mark.timeout(90)


def free_port() -> int:
    """A port free now (bound to 0, read, released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Scrape:
    """One scrape: ``families`` by name (prometheus_client's parser), and
    ``value(sample_name, **labels)``."""

    def __init__(self, url: str, timeout: float = 5.0) -> None:
        self.started = start = time.monotonic()
        with urllib.request.urlopen(url, timeout=timeout) as response:
            assert response.status == 200
            self.text = response.read().decode()
        self.seconds = time.monotonic() - start
        self.families = {f.name: f for f in text_string_to_metric_families(self.text)}
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, frozenset(s.labels.items()))] = s.value

    def value(self, name: str, **labels: str) -> float:
        key = (name, frozenset(labels.items()))
        assert key in self.samples, f"no {name}{labels} in:\n{self.text}"
        return self.samples[key]


def try_scrape(url: str) -> Scrape | None:
    try:
        return Scrape(url)
    except OSError:
        return None


class Echo(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def test_counters_move_with_traffic(backend: str) -> None:
    n, size = 20, 1000
    with serving(Echo, backend, io_threads=1) as server, \
            metrics.serve(0, servers={"echo": server}) as endpoint:
        assert endpoint.port > 0 and endpoint.url.endswith("/metrics")
        before = Scrape(endpoint.url)
        assert before.value("netring_connections_accepted_total", pool="echo") == 0
        assert before.value("netring_server_serving", server="echo") == 1
        assert before.value("netring_pool_info", pool="echo", backend=backend,
                            backend_fallback_reason="") == 1
        # Types, help texts and the _total suffix of counters.
        fams = before.families
        assert fams["netring_connections_accepted"].type == "counter"
        assert fams["netring_received_bytes"].type == "counter"
        assert fams["netring_connections_open"].type == "gauge"
        assert fams["netring_buffer_memory_bytes"].type == "gauge"
        assert fams["netring_zerocopy_abandoned"].type == "counter"
        assert before.value("netring_zerocopy_abandoned_total", pool="echo") == 0
        assert all(f.documentation for name, f in fams.items() if name.startswith("netring"))
        assert "netring_connections_accepted_total{" in before.text
        assert "process_cpu_seconds_total" in before.text  # this process's own figures

        clients = [socket.create_connection(server.address, timeout=10) for _ in range(n)]
        try:
            for c in clients:
                c.sendall(b"x" * size)
            for c in clients:
                assert recv_exactly(c, size) == b"x" * size
            during = Scrape(endpoint.url)
            assert during.value("netring_connections_open", pool="echo") == n
            assert during.value("netring_server_connections_open", server="echo") == n
        finally:
            for c in clients:
                c.close()

        def settled() -> bool:
            s = Scrape(endpoint.url)
            return s.value("netring_connections_closed_total", pool="echo") == n

        assert wait_until(settled)
        after = Scrape(endpoint.url)
        assert after.value("netring_connections_accepted_total", pool="echo") == n
        assert after.value("netring_received_bytes_total", pool="echo") == n * size
        assert after.value("netring_sent_bytes_total", pool="echo") == n * size
        assert after.value("netring_connections_open", pool="echo") == 0
        assert after.value("netring_server_connections_open", server="echo") == 0
    # Closed: nothing listens there any more.
    with pytest.raises(OSError):
        Scrape(endpoint.url, timeout=2)


class PacketEcho(netring.Protocol):
    """Echoes packets; a packet b"slow" blocks its callback for 30 ms first."""

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, packet: bytes) -> None:
        if packet == b"slow":
            time.sleep(0.03)
        self.transport.send_packet(packet)


class RawPackets(Echo):
    def data_received(self, data: bytes) -> None:
        self.transport.send_packet(data)


def bucket_counts(scrape: Scrape, name: str, **labels: str) -> list[tuple[float, float]]:
    """A histogram's (le, cumulative count) pairs, in order of le."""
    family = scrape.families[name]
    assert family.type == "histogram", family.type
    rows = [(float(s.labels["le"]), s.value) for s in family.samples
            if s.name == f"{name}_bucket"
            and all(s.labels.get(k) == v for k, v in labels.items())]
    return sorted(rows)


def test_frames_and_turn_and_callback_histograms(backend: str) -> None:
    """Frames in and out count packets (several in one read too); the turn
    and callback histograms are Prometheus histograms whose buckets add up,
    and a callback that blocks for 30 ms lands above 16 ms in both."""
    framing = netring.LengthPrefixed(2)
    with serving(PacketEcho, backend, io_threads=1, framing=framing) as server, \
            metrics.serve(0, servers={"echo": server}) as endpoint:
        before = Scrape(endpoint.url)
        assert before.value("netring_frames_received_total", pool="echo") == 0
        assert before.value("netring_frames_sent_total", pool="echo") == 0
        with socket.create_connection(server.address, timeout=10) as c:
            one = b"\x00\x03abc"
            c.sendall(one * 10)  # ten packets, most likely one read
            assert recv_exactly(c, len(one) * 10) == one * 10
            for _ in range(5):
                c.sendall(one)
                assert recv_exactly(c, len(one)) == one
            c.sendall(b"\x00\x04slow")
            assert recv_exactly(c, 6) == b"\x00\x04slow"
        s = Scrape(endpoint.url)
        assert s.value("netring_frames_received_total", pool="echo") == 16
        assert s.value("netring_frames_sent_total", pool="echo") == 16
        for name in ("netring_io_turn_seconds", "netring_callback_seconds"):
            rows = bucket_counts(s, name, pool="echo")
            assert rows[-1][0] == float("inf")
            counts = [n for _, n in rows]
            assert counts == sorted(counts), f"{name}: buckets not cumulative: {rows}"
            total = s.value(f"{name}_count", pool="echo")
            assert total == counts[-1] >= 7  # at least one turn per request above
            assert s.value(f"{name}_sum", pool="echo") >= 0.03  # the slow callback
            below_16ms = max(n for le, n in rows if le <= 0.016384)
            assert below_16ms <= total - 1, f"{name}: the 30 ms callback is missing: {rows}"
            # Bounds are powers of four microseconds, up to 2^22 µs.
            assert [le for le, _ in rows[:3]] == [1e-06, 4e-06, 1.6e-05]
            assert len(rows) == 13 and rows[-2][0] == 4.194304
    # A raw connection's send_packet is a plain write, not a frame.
    with serving(RawPackets, backend, io_threads=1) as server:
        with socket.create_connection(server.address, timeout=10) as c:
            c.sendall(b"abc")
            assert recv_exactly(c, 3) == b"abc"
        stats = server.stats()
        assert stats["frames_in"] == stats["frames_out"] == 0
        turns = stats["turn_seconds"]
        assert turns["count"] == turns["buckets"][-1][1] > 0


def test_worker_pool_queue_depth(backend: str) -> None:
    gate = threading.Event()

    class Blocking(Echo):
        def data_received(self, data: bytes) -> None:  # on the worker thread
            gate.wait(20)
            self.transport.write(data)

    with netring.WorkerPool(1) as workers, \
            serving(Blocking, backend, io_threads=1, workers=workers) as server, \
            metrics.serve(0, servers={"slow": server}) as endpoint:
        clients = [socket.create_connection(server.address, timeout=10) for _ in range(5)]
        try:
            for c in clients:
                c.sendall(b"ping")

            def queued() -> bool:
                s = Scrape(endpoint.url)
                return (s.value("netring_worker_pool_busy_threads", worker_pool="slow") == 1
                        and s.value("netring_worker_pool_queued_packets",
                                    worker_pool="slow") == 4)

            assert wait_until(queued)
            s = Scrape(endpoint.url)
            assert s.value("netring_worker_pool_threads", worker_pool="slow") == 1
            assert s.value("netring_worker_pool_queued_bytes", worker_pool="slow") == 16
            gate.set()
            for c in clients:
                assert recv_exactly(c, 4) == b"ping"
            assert wait_until(lambda: Scrape(endpoint.url).value(
                "netring_worker_pool_queued_packets", worker_pool="slow") == 0)
            done = Scrape(endpoint.url)
            assert done.value("netring_worker_pool_completed_total", worker_pool="slow") >= 5
            assert done.value("netring_worker_pool_wait_seconds_total", worker_pool="slow") > 0
        finally:
            gate.set()
            for c in clients:
                c.close()


def test_a_shared_pool_is_exported_once(backend: str) -> None:
    with netring.IOPool(1, backend=backend) as pool, \
            netring.Server(Echo, pool=pool) as a, netring.Server(Echo, pool=pool) as b, \
            metrics.serve(0, pools={"shared": pool}, servers=[a]) as endpoint:
        endpoint.collector.add_server(b, "b")
        for server in (a, b):
            with socket.create_connection(server.address, timeout=10) as c:
                c.sendall(b"hi")
                assert recv_exactly(c, 2) == b"hi"
        assert wait_until(lambda: Scrape(endpoint.url).value(
            "netring_connections_closed_total", pool="shared") == 2)
        s = Scrape(endpoint.url)
        assert s.value("netring_connections_accepted_total", pool="shared") == 2
        pools = {dict(k[1]).get("pool") for k in s.samples if k[0].startswith("netring_")}
        assert pools - {None} == {"shared"}
        assert s.value("netring_server_serving", server=f"127.0.0.1:{a.port}") == 1
        assert s.value("netring_server_serving", server="b") == 1
    with pytest.raises(TypeError):
        metrics.NetringCollector(servers=[object()])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        metrics.NetringCollector(pools={1: pool})  # type: ignore[dict-item]


LOAD = r"""
import selectors, socket, sys, time
port, conns, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
sel = selectors.DefaultSelector()
chunk = b"z" * 65536
socks = []
for _ in range(conns):
    s = socket.create_connection(("127.0.0.1", port))
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    socks.append(s)
print("loading", flush=True)
end = time.monotonic() + seconds
moved = 0
while time.monotonic() < end:
    for key, ev in sel.select(0.1):
        if ev & selectors.EVENT_WRITE:
            try:
                key.fileobj.send(chunk)
            except BlockingIOError:
                pass
        if ev & selectors.EVENT_READ:
            try:
                moved += len(key.fileobj.recv(1 << 20))
            except BlockingIOError:
                pass
for s in socks:
    s.close()
print(moved, flush=True)
"""


def test_a_scrape_under_heavy_traffic_returns_quickly(backend: str) -> None:
    with serving(Echo, backend, io_threads=1) as server, \
            metrics.serve(0, servers={"echo": server}) as endpoint:
        load = subprocess.Popen([sys.executable, "-c", LOAD, str(server.port), "50", "4"],
                                stdout=subprocess.PIPE, text=True)
        try:
            assert load.stdout is not None
            assert load.stdout.readline().strip() == "loading"
            loading = time.monotonic()
            scrapes = []
            for _ in range(20):
                scrapes.append(Scrape(endpoint.url))
                time.sleep(0.1)
            moved = int(load.stdout.readline())
        finally:
            if load.poll() is None:
                load.kill()
            load.wait(10)
            if load.stdout is not None:
                load.stdout.close()
        received = [s.value("netring_received_bytes_total", pool="echo") for s in scrapes]
        assert received == sorted(received)  # counters only grow
        assert received[-1] - received[0] > 10 * 65536, received  # the traffic was heavy
        # The 50 connections are open from just after "loading" until the load
        # ends 4 s later (on a busy machine the last scrapes may come after).
        during = [s for s in scrapes if loading + 0.3 < s.started < loading + 3.5]
        assert len(during) >= 5, [round(s.started - loading, 2) for s in scrapes]
        assert all(s.value("netring_connections_open", pool="echo") == 50 for s in during), [
            (round(s.started - loading, 2), s.value("netring_connections_open", pool="echo"))
            for s in scrapes]
        assert moved > 0
        slowest = max(s.seconds for s in scrapes)
        assert slowest < 1.0, sorted(s.seconds for s in scrapes)


# -- the supervisor's combined figures ------------------------------------------------


def _report(path: Path, pid: int, start: int, final: bool, accepted: float,
            open_: float) -> None:
    turns = {"buckets": [["1e-06", accepted], ["2e-06", 2 * accepted],
                         ["+Inf", 2 * accepted]], "sum": accepted / 1000}
    families = [
        ["netring_connections_accepted", "counter", "accepted", ["pool"],
         [[["echo"], accepted]]],
        ["netring_connections_open", "gauge", "open", ["pool"], [[["echo"], open_]]],
        ["netring_io_turn_seconds", "histogram", "turns", ["pool"], [[["echo"], turns]]],
    ]
    path.write_text(json.dumps({"pid": pid, "start": start, "time": time.time(),
                                "final": final, "families": families}))


def test_workers_collector_keeps_dead_workers_counters(tmp_path: Path) -> None:
    """Without processes: one report of a live process (this one), two of
    processes that are gone (a pid that does not exist; this pid with
    another start time: a reused pid)."""
    me = os.getpid()
    start = metrics._proc_start(me)
    assert start is not None
    _report(tmp_path / "live.json", me, start[1], False, 10, 3)
    _report(tmp_path / "dead.json", 2**22 + 12345, 1, True, 5, 2)
    _report(tmp_path / "reused.json", me, start[1] + 1, False, 7, 1)
    registry = metrics.CollectorRegistry()
    collector = metrics.WorkersCollector(str(tmp_path))
    registry.register(collector)

    def scrape() -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        from prometheus_client import generate_latest
        text = generate_latest(registry).decode()
        return {(s.name, frozenset(s.labels.items())): s.value
                for f in text_string_to_metric_families(text) for s in f.samples}

    for _ in range(2):  # folded once: the second scrape says the same
        s = scrape()
        assert s[("netring_connections_accepted_total", frozenset({("pool", "echo")}))] == 22
        assert s[("netring_connections_open", frozenset({("pool", "echo")}))] == 3
        # Histograms add bucket by bucket, exited workers' kept like counters.
        assert s[("netring_io_turn_seconds_bucket",
                  frozenset({("pool", "echo"), ("le", "2e-06")}))] == 44
        assert s[("netring_io_turn_seconds_count", frozenset({("pool", "echo")}))] == 44
        assert s[("netring_io_turn_seconds_sum", frozenset({("pool", "echo")}))] == \
            pytest.approx(0.022)
        assert s[("netring_workers", frozenset())] == 1
        assert s[("netring_workers_exited_total", frozenset({("final", "true")}))] == 1
        assert s[("netring_workers_exited_total", frozenset({("final", "false")}))] == 1
        assert sorted(p.name for p in tmp_path.iterdir()) == ["live.json"]
    # The live one exits too: its counters stay, its gauges go.
    _report(tmp_path / "live.json", me, start[1] + 2, True, 12, 0)
    s = scrape()
    assert s[("netring_connections_accepted_total", frozenset({("pool", "echo")}))] == 24
    assert s[("netring_io_turn_seconds_count", frozenset({("pool", "echo")}))] == 48
    assert ("netring_connections_open", frozenset({("pool", "echo")})) not in s
    assert s[("netring_workers", frozenset())] == 0


def test_worker_metrics_arguments() -> None:
    assert metrics.WorkerMetrics.of("0.0.0.0:9100").host == "0.0.0.0"
    assert metrics.WorkerMetrics.of("[::1]:9100").host == "::1"
    assert metrics.WorkerMetrics.of(("127.0.0.1", 9100)).port == 9100
    assert metrics.WorkerMetrics.of(9100).host == "127.0.0.1"
    with pytest.raises(netring.ConfigurationError):
        metrics.WorkerMetrics.of("9100")
    with pytest.raises(TypeError):
        metrics.WorkerMetrics.of(9100.0)
    with pytest.raises(netring.ConfigurationError):
        metrics.WorkerMetrics(70000)


# -- the command line -----------------------------------------------------------------


def send_and_close(port: int, n: int) -> None:
    clients = [socket.create_connection(("127.0.0.1", port), timeout=10) for _ in range(n)]
    for c in clients:
        c.sendall(b"hello")
    for c in clients:
        assert recv_exactly(c, 5) == b"hello"
        c.close()


def test_cli_metrics_port(backend: str) -> None:
    mport = free_port()
    url = f"http://127.0.0.1:{mport}/metrics"
    with cli_server("echo", "udp-echo", backend=backend,
                    args=["--io-threads", "1", "--metrics-port", str(mport)]) as cli:
        send_and_close(cli.ports["echo"], 3)
        assert wait_until(lambda: (s := try_scrape(url)) is not None and s.value(
            "netring_connections_closed_total", pool="echo") == 3)
        s = Scrape(url)
        assert s.value("netring_connections_accepted_total", pool="echo") == 3
        assert s.value("netring_received_bytes_total", pool="echo") == 15
        assert s.value("netring_server_serving", server="echo") == 1
        assert cli.stop() == 0
    assert f"metrics on {url}" in cli.stderr


def test_cli_metrics_port_in_use(backend: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        for extra in ([], ["--processes", "2"]):
            proc = subprocess.run(
                [sys.executable, "-m", "netring", "serve", "echo", "--port", "0",
                 "--backend", backend, "--metrics-port", str(port), *extra],
                capture_output=True, text=True, timeout=30)
            assert proc.returncode == 2, proc.stderr
            assert "cannot serve metrics" in proc.stderr


def children(pid: int) -> set[int]:
    try:
        return {int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def test_cli_processes_combine_every_worker(backend: str) -> None:
    mport = free_port()
    url = f"http://127.0.0.1:{mport}/metrics"
    with cli_server("echo", backend=backend,
                    args=["--io-threads", "1", "--processes", "2",
                          "--metrics-port", str(mport)]) as cli:
        port = cli.ports["echo"]

        def figures(accepted: int, drained: int, killed: int) -> Callable[[], bool]:
            def check() -> bool:
                s = try_scrape(url)
                return (s is not None
                        and s.value("netring_connections_accepted_total",
                                    pool="echo") == accepted
                        and s.value("netring_connections_closed_total",
                                    pool="echo") == accepted
                        and s.value("netring_workers") == 2
                        and s.value("netring_workers_exited_total", final="true") == drained
                        and s.value("netring_workers_exited_total", final="false") == killed)
            return check

        # Both workers' figures: 40 connections spread by the kernel over
        # two accept queues, counted once each, and each worker's IO thread.
        send_and_close(port, 40)
        assert wait_until(figures(40, 0, 0), timeout=15), Scrape(url).text
        s = Scrape(url)
        assert s.value("netring_io_threads", pool="echo") == 2
        assert s.value("netring_pool_info", pool="echo", backend=backend,
                       backend_fallback_reason="") == 2
        assert s.value("netring_server_serving", server="echo") == 2
        assert s.value("netring_received_bytes_total", pool="echo") == 40 * 5
        assert s.families["netring_io_turn_seconds"].type == "histogram"
        assert s.value("netring_io_turn_seconds_count", pool="echo") > 0
        assert s.value("netring_workers_report_age_seconds") < 5

        # A killed worker: its counters stay in the totals, its replacement adds.
        workers = children(cli.proc.pid)
        assert len(workers) == 2
        os.kill(min(workers), signal.SIGKILL)
        assert wait_until(lambda: len(children(cli.proc.pid) - workers) == 1, timeout=15)
        assert wait_until(figures(40, 0, 1), timeout=15), Scrape(url).text
        send_and_close(port, 10)
        assert wait_until(figures(50, 0, 1), timeout=15), Scrape(url).text

        # SIGHUP: both replaced one at a time; the drained ones report their
        # final figures; nothing lost, nothing counted twice.
        before = children(cli.proc.pid)
        cli.proc.send_signal(signal.SIGHUP)
        assert wait_until(lambda: not children(cli.proc.pid) & before
                          and len(children(cli.proc.pid)) == 2, timeout=30)
        assert wait_until(figures(50, 2, 1), timeout=15), Scrape(url).text
        send_and_close(port, 10)
        assert wait_until(figures(60, 2, 1), timeout=15), Scrape(url).text
        assert cli.stop() == 0
    assert f"metrics of the worker processes on {url}" in cli.stderr
    # The reports' directory went with the run.
    assert not list(Path("/dev/shm").glob(f"netring-metrics-{cli.proc.pid}-*"))
