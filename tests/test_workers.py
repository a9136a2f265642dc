"""WorkerPool: blocking handlers off the IO threads, per-connection order,
priority, backpressure, isolation, shutdown, timers (every test on each
backend)."""

from __future__ import annotations

import json
import logging
import random
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from typing import Any

import netring
import pytest
from conftest import cli_server, connect, factory_of, recv_exactly, recv_until_eof, wait_until
from netring.servers.echo import Echo

LINES = netring.Delimited(b"\r\n")


@pytest.fixture
def iopool(backend: str) -> Any:
    with netring.IOPool(io_threads=1, backend=backend) as p:
        yield p


def recv_lines(sock: socket.socket, n: int, buf: bytearray | None = None) -> list[bytes]:
    """Read exactly ``n`` CRLF lines (``buf`` carries what is left over)."""
    buf = bytearray() if buf is None else buf
    lines: list[bytes] = []
    while len(lines) < n:
        cut = buf.find(b"\r\n")
        if cut < 0:
            chunk = sock.recv(1 << 16)
            if not chunk:
                raise EOFError(f"closed after {len(lines)} of {n} lines")
            buf += chunk
            continue
        lines.append(bytes(buf[:cut]))
        del buf[:cut + 2]
    return lines


def is_worker(name: str, pool: netring.WorkerPool | None = None) -> bool:
    prefix = pool.name if pool is not None else "netring-worker"
    return name.startswith(prefix + "-")


# -- the IO threads stay responsive ----------------------------------------------


class Blocker(netring.Protocol):
    """Each line blocks its thread until ``release`` is set (GIL released)."""

    release = threading.Event()
    entered = threading.Semaphore(0)

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, packet: bytes) -> None:
        Blocker.entered.release()
        Blocker.release.wait(10)
        self.transport.send_packet(packet)


def round_trips(sock: socket.socket, n: int) -> list[float]:
    out = []
    for i in range(n):
        msg = b"%06d" % i
        t0 = time.perf_counter()
        sock.sendall(msg)
        assert recv_exactly(sock, len(msg)) == msg
        out.append(time.perf_counter() - t0)
    return out


@pytest.mark.parametrize("use_workers", [True, False], ids=["workers", "no-workers"])
def test_io_thread_stays_responsive_while_every_worker_blocks(
        iopool: netring.IOPool, use_workers: bool) -> None:
    threads = 4
    Blocker.release = threading.Event()
    Blocker.entered = threading.Semaphore(0)
    wp = netring.WorkerPool(threads) if use_workers else None
    blocking = netring.Server(Blocker, pool=iopool, framing=LINES, workers=wp)
    echo = netring.Server(Echo, pool=iopool)
    blocking.start()
    echo.start()
    clients = [connect(blocking) for _ in range(threads if use_workers else 1)]
    try:
        with connect(echo) as e:
            round_trips(e, 20)  # warm
            for c in clients:
                c.sendall(b"block\r\n")
            for _ in clients:
                assert Blocker.entered.acquire(timeout=10)
            if use_workers:
                assert wp is not None
                assert wp.stats()["busy_workers"] == threads
                times = sorted(round_trips(e, 300))
                p99 = times[int(len(times) * 0.99) - 1]
                assert wp.stats()["busy_workers"] == threads  # still all blocked
                assert p99 < 0.010, f"p99 {p99 * 1e3:.1f} ms with every worker blocked"
            else:
                # The handler blocks the only IO thread: the echo server stalls
                # until it is released.
                threading.Timer(0.5, Blocker.release.set).start()
                t0 = time.perf_counter()
                round_trips(e, 1)
                assert time.perf_counter() - t0 >= 0.3, "no stall without workers?"
            Blocker.release.set()
            for c in clients:
                assert recv_exactly(c, 7) == b"block\r\n"
    finally:
        Blocker.release.set()
        for c in clients:
            c.close()
        echo.shutdown(1.0)
        blocking.shutdown(1.0)
        if wp is not None:
            wp.close(1.0)


# -- ordering ------------------------------------------------------------------------


class Ordered(netring.Protocol):
    """Lines ``conn:seq[:prio]``: checks order and exclusivity, works a random
    0-50 µs, replies the line."""

    errors: list[str]

    def __init__(self) -> None:
        self.expect = 0
        self.active = False

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        if self.active:
            Ordered.errors.append("two callbacks of one connection at once")
        self.active = True
        seq = int(line.split(b":")[1])
        if seq != self.expect:
            Ordered.errors.append(f"{line!r} after {self.expect - 1}")
        self.expect = seq + 1
        work = random.random() * 50e-6
        if work > 25e-6:
            time.sleep(work)
        self.active = False
        self.transport.send_packet(line)


def flood_and_check(server: netring.Server, conns: int, packets: int,
                    prio: bool = False) -> None:
    socks = [connect(server, timeout=30) for _ in range(conns)]
    try:
        sent = []
        for c, s in enumerate(socks):
            lines = [b"%d:%d:%d" % (c, i, random.randrange(10) if prio else 0)
                     for i in range(packets)]
            sent.append(lines)
            s.sendall(b"".join(line + b"\r\n" for line in lines))
        for c, s in enumerate(socks):
            assert recv_lines(s, packets) == sent[c]
    finally:
        for s in socks:
            s.close()


def test_per_connection_order_100_connections_x_1000_packets(iopool: netring.IOPool) -> None:
    Ordered.errors = []
    with netring.WorkerPool(16) as wp:
        server = netring.Server(Ordered, pool=iopool, framing=LINES, workers=wp)
        with server:
            flood_and_check(server, 100, 1000)
        assert Ordered.errors == []
        stats = wp.stats()
        assert stats["completed"] >= 100_000
        assert stats["queued_packets"] == 0 and stats["queued_bytes"] == 0


def test_per_connection_order_holds_in_a_priority_pool(iopool: netring.IOPool) -> None:
    Ordered.errors = []
    with netring.WorkerPool(8, queue="priority") as wp:
        server = netring.Server(Ordered, pool=iopool, framing=LINES, workers=wp,
                                priority=lambda line: int(line.rsplit(b":", 1)[1]))
        with server:
            flood_and_check(server, 20, 300, prio=True)
        assert Ordered.errors == []


class Recording(netring.Protocol):
    order: list[bytes]

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        Recording.order.append(line)
        self.transport.send_packet(line)


def test_priority_order_across_connections(iopool: netring.IOPool) -> None:
    Recording.order = []
    gate = threading.Event()
    with netring.WorkerPool(1, queue="priority") as wp:
        server = netring.Server(Recording, pool=iopool, framing=LINES, workers=wp,
                                priority=lambda line: int(line.split(b":")[1]))
        with server:
            blocked = wp.submit(gate.wait, 10)  # hold the only worker
            prios = list(range(30))
            random.shuffle(prios)
            socks = [connect(server) for _ in prios]
            hol = connect(server)
            try:
                for s, p in zip(socks, prios, strict=True):
                    s.sendall(b"c:%d\r\n" % p)
                # Head of line: -1 waits behind its own connection's 50.
                hol.sendall(b"h:50\r\n")
                assert wait_until(lambda: wp.stats()["queued_packets"] == 31)
                hol.sendall(b"h:-1\r\n")
                assert wait_until(lambda: wp.stats()["queued_packets"] == 32)
                gate.set()
                assert blocked.result(5) is True
                for s, p in zip(socks, prios, strict=True):
                    assert recv_lines(s, 1) == [b"c:%d" % p]
                assert recv_lines(hol, 2) == [b"h:50", b"h:-1"]
            finally:
                gate.set()
                for s in [*socks, hol]:
                    s.close()
    got = [int(line.split(b":")[1]) for line in Recording.order]
    assert got == [*range(30), 50, -1]


# -- backpressure: a flood against a slow pool, in a subprocess to measure RSS ---------

FLOOD_SERVER = r"""
import json, sys, threading, time, zlib, struct
import netring

def rss_kib(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])

class Slow(netring.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.seq = 0
    def packet_received(self, packet):
        time.sleep(0.0005)
        self.transport.send_packet(struct.pack(">II", self.seq, zlib.crc32(packet)))
        self.seq += 1

wp = netring.WorkerPool(4, max_queued=1000, max_queued_bytes=4 << 20)
server = netring.Server(Slow, backend=sys.argv[1], io_threads=1, workers=wp,
                        framing=netring.LengthPrefixed(header_size=4, max_packet=1 << 20))
server.start()
peak = {"queued_bytes": 0, "paused": 0}
done = threading.Event()
def sample():
    while not done.wait(0.002):
        st = wp.stats()
        peak["queued_bytes"] = max(peak["queued_bytes"], st["queued_bytes"])
        peak["paused"] = max(peak["paused"], st["paused_connections"])
threading.Thread(target=sample, daemon=True).start()
print("READY", server.port, flush=True)
assert sys.stdin.readline().strip() == "base"
base = rss_kib("VmRSS")
print("BASE", base, flush=True)
sys.stdin.readline()  # the flood is over
done.set()
st = wp.stats()
print(json.dumps({"base_kib": base, "hwm_kib": rss_kib("VmHWM"), "peak": peak,
                  "completed": st["completed"]}), flush=True)
server.shutdown(1.0)
wp.close(1.0)
"""


def test_flood_is_held_back_by_tcp_memory_bounded_nothing_lost(backend: str) -> None:
    packet_size, count = 64 << 10, 3000  # 192 MiB against a 4 MiB queue
    proc = subprocess.Popen([sys.executable, "-c", FLOOD_SERVER, backend],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert proc.stdin is not None and proc.stdout is not None
    try:
        port = int(proc.stdout.readline().split()[1])
        s = socket.create_connection(("127.0.0.1", port), timeout=30)
        # Warm up (engine buffers, the interpreter's heap), then take the baseline.
        s.sendall(struct.pack(">I", packet_size) + bytes(packet_size))
        recv_exactly(s, 12)
        proc.stdin.write("base\n")
        proc.stdin.flush()
        assert proc.stdout.readline().startswith("BASE")
        acks: list[tuple[int, int]] = []

        def read_acks() -> None:
            while len(acks) < count:
                length, seq, crc = struct.unpack(">III", recv_exactly(s, 12))
                assert length == 8
                acks.append((seq, crc))

        reader = threading.Thread(target=read_acks)
        reader.start()
        rng = random.Random(5)
        payloads = [rng.randbytes(64) * (packet_size // 64) for _ in range(8)]
        crcs = [zlib.crc32(p) for p in payloads]
        waits = 0  # sends that found the socket's buffer full: TCP flow control
        for i in range(count):
            waits += not select.select([], [s], [], 0)[1]
            s.sendall(struct.pack(">I", packet_size) + payloads[i % 8])
        reader.join(60)
        assert not reader.is_alive(), f"only {len(acks)} of {count} replies"
        proc.stdin.write("done\n")
        proc.stdin.flush()
        report = json.loads(proc.stdout.readline())
        s.close()
        assert proc.wait(10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.stdin.close()
        proc.stdout.close()
    # Nothing lost, nothing reordered, every byte intact.
    assert [seq for seq, _ in acks] == list(range(1, count + 1))
    assert [crc for _, crc in acks] == [crcs[i % 8] for i in range(count)]
    # The client was held back by TCP flow control; the pool paused reading.
    assert waits > 0
    assert report["peak"]["paused"] >= 1
    # The queue stayed within its limit plus one turn's reads (up to 256 KiB
    # per socket: epoll's reads per readiness, io_uring's joined buffers)
    # and a packet on each side; memory is bounded.
    assert report["peak"]["queued_bytes"] <= (4 << 20) + 2 * packet_size + (256 << 10)
    growth_mib = (report["hwm_kib"] - report["base_kib"]) / 1024
    assert growth_mib < 64, f"RSS grew {growth_mib:.0f} MiB during a 192 MiB flood"


# -- isolation ------------------------------------------------------------------------


class Fragile(netring.Protocol):
    threads: list[str]
    lost: list[tuple[Any, str]]

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        Fragile.threads.append(threading.current_thread().name)
        if line == b"boom":
            raise ValueError("boom")
        self.transport.send_packet(line)

    def connection_lost(self, exc: BaseException | None) -> None:
        Fragile.lost.append((exc, threading.current_thread().name))


def test_an_exception_in_a_worker_closes_only_that_connection(
        iopool: netring.IOPool, caplog: pytest.LogCaptureFixture) -> None:
    Fragile.threads, Fragile.lost = [], []
    with netring.WorkerPool(1) as wp, caplog.at_level(logging.ERROR, logger="netring"):
        server = netring.Server(Fragile, pool=iopool, framing=LINES, workers=wp)
        with server, connect(server) as bad, connect(server) as good:
            good.sendall(b"one\r\n")
            assert recv_lines(good, 1) == [b"one"]
            bad.sendall(b"boom\r\nnever\r\n")
            try:
                assert recv_until_eof(bad) == b""
            except ConnectionResetError:
                pass
            assert wait_until(lambda: len(Fragile.lost) == 1)
            good.sendall(b"two\r\n")
            assert recv_lines(good, 1) == [b"two"]
            peer = f"127.0.0.1:{bad.getsockname()[1]}"
        exc, where = Fragile.lost[0]
        assert isinstance(exc, ValueError) and is_worker(where, wp)
        assert b"never" not in b"".join(t.encode() for t in Fragile.threads)
        assert len(set(Fragile.threads)) == 1  # the one worker survived
        logged = [r.getMessage() for r in caplog.records]
        assert sum("exception in packet_received for " + peer in m for m in logged) == 1


# -- shutdown --------------------------------------------------------------------------


class Sleepy(netring.Protocol):
    lost = 0
    lock = threading.Lock()
    unstick = threading.Event()

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        if line == b"stuck":
            Sleepy.unstick.wait(10)
        else:
            time.sleep(0.02)
        self.transport.send_packet(line)

    def connection_lost(self, exc: BaseException | None) -> None:
        with Sleepy.lock:
            Sleepy.lost += 1


def test_shutdown_with_a_full_queue_completes_within_grace(
        iopool: netring.IOPool, caplog: pytest.LogCaptureFixture) -> None:
    Sleepy.lost = 0
    Sleepy.unstick = threading.Event()
    wp = netring.WorkerPool(2, max_queued=50, name="sleepy")
    server = netring.Server(Sleepy, pool=iopool, framing=LINES, workers=wp)
    server.start()
    socks = [connect(server) for _ in range(8)]
    try:
        socks[0].sendall(b"stuck\r\n")
        assert wait_until(lambda: wp.stats()["busy_workers"] == 1)
        for s in socks[1:]:
            s.sendall(b"work\r\n" * 200)  # 1400 x 20 ms on 2 threads: 14 s of work
        assert wait_until(lambda: wp.stats()["paused_connections"] > 0)
        with caplog.at_level(logging.WARNING, logger="netring"):
            t0 = time.monotonic()
            server.shutdown(0.5)
            took = time.monotonic() - t0
        assert took < 1.5, f"shutdown took {took:.2f} s with grace 0.5 s"
        assert not server.is_serving()
        for s in socks[1:]:
            s.settimeout(5)
            try:
                recv_until_eof(s)
            except ConnectionResetError:
                pass
        logged = " ".join(r.getMessage() for r in caplog.records)
        assert "worker thread sleepy-" in logged and "still running" in logged
        # Every connection_lost ran, except the stuck connection's (it follows
        # its callback, in order).
        assert Sleepy.lost == 7
        Sleepy.unstick.set()
        assert wait_until(lambda: Sleepy.lost == 8, 5)
        assert wp.stats()["queued_packets"] == 0
    finally:
        Sleepy.unstick.set()
        for s in socks:
            s.close()
        wp.close(2.0)
    assert not any(t.is_alive() for t in wp._threads)


def test_shutdown_lets_queued_work_finish_within_grace(iopool: netring.IOPool) -> None:
    with netring.WorkerPool(2) as wp:
        server = netring.Server(Sleepy, pool=iopool, framing=LINES, workers=wp)
        server.start()
        with connect(server) as s:
            s.sendall(b"a\r\nb\r\nc\r\n")
            assert wait_until(lambda: wp.stats()["busy_workers"] == 1)
            server.shutdown(5.0)
            # Queued work finished and was flushed before the close.
            assert recv_until_eof(s) == b"a\r\nb\r\nc\r\n"
        assert not wp.is_closed()  # a shared pool outlives the server


def test_private_pool_is_closed_with_the_server(backend: str) -> None:
    server = netring.Server(Echo, backend=backend, io_threads=1, workers=3)
    assert server.workers is None
    with server, connect(server) as s:
        wp = server.workers
        assert wp is not None and wp.threads == 3
        s.sendall(b"private")
        assert recv_exactly(s, 7) == b"private"
    assert wp.is_closed()
    assert wait_until(lambda: not any(t.is_alive() for t in wp._threads), 5)


# -- where callbacks run; eof; writes; user pauses; shared pools ------------------------------


class Where(netring.Protocol):
    seen: list[tuple[str, str]]

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        Where.seen.append(("made", threading.current_thread().name))
        transport.write(b"hello\n")  # the transport is ready on the IO thread

    def data_received(self, data: bytes) -> None:
        Where.seen.append(("data", threading.current_thread().name))
        self.transport.write(data)

    def eof_received(self) -> bool | None:
        Where.seen.append(("eof", threading.current_thread().name))
        self.transport.write(b"bye\n")  # half-open until we return
        return None

    def connection_lost(self, exc: BaseException | None) -> None:
        Where.seen.append(("lost", threading.current_thread().name))


def test_callbacks_run_where_documented_and_eof_closes_after_the_worker(
        iopool: netring.IOPool) -> None:
    Where.seen = []
    with netring.WorkerPool(2) as wp:
        server = netring.Server(Where, pool=iopool, workers=wp)
        with server, connect(server) as s:
            s.sendall(b"x")
            assert recv_exactly(s, 7) == b"hello\nx"
            s.shutdown(socket.SHUT_WR)
            assert recv_until_eof(s) == b"bye\n"
            assert wait_until(lambda: len(Where.seen) == 4)
    kinds = [k for k, _ in Where.seen]
    assert kinds == ["made", "data", "eof", "lost"]
    assert not is_worker(Where.seen[0][1]) and all(is_worker(t) for _, t in Where.seen[1:])


class KeepOpen(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def eof_received(self) -> bool:
        time.sleep(0.05)
        self.transport.write(b"still here")
        self.transport.close()
        return True


def test_eof_received_returning_true_keeps_the_connection_open_for_writing(
        iopool: netring.IOPool) -> None:
    with netring.WorkerPool(1) as wp:
        server = netring.Server(KeepOpen, pool=iopool, workers=wp)
        with server, connect(server) as s:
            s.shutdown(socket.SHUT_WR)
            assert recv_until_eof(s) == b"still here"


class Interleaved(netring.Protocol):
    """A worker writes A<i>; the IO thread then writes B<i> (a timer on the
    owning IO thread): B<i> must never overtake A<i>."""

    iopool: netring.IOPool

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        transport.write(b"M")

    def packet_received(self, line: bytes) -> None:
        self.transport.write(b"A" + line)
        Interleaved.iopool.call_later(0, self.transport.write, b"B" + line)


def test_worker_writes_keep_their_order_with_the_io_threads_writes(
        iopool: netring.IOPool) -> None:
    Interleaved.iopool = iopool
    with netring.WorkerPool(4) as wp:
        server = netring.Server(Interleaved, pool=iopool, framing=LINES, workers=wp)
        with server, connect(server) as s:
            n = 300
            s.sendall(b"".join(b"%03d\r\n" % i for i in range(n)))
            data = b"M" + recv_exactly(s, 1 + 8 * n)[1:]
    assert data[:1] == b"M"
    body = data[1:]
    tokens = [body[i:i + 4] for i in range(0, len(body), 4)]
    a = [t for t in tokens if t.startswith(b"A")]
    assert a == [b"A%03d" % i for i in range(n)]  # worker writes in order
    for i in range(n):
        assert tokens.index(b"A%03d" % i) < tokens.index(b"B%03d" % i)


class PausesItself(netring.Protocol):
    got: list[bytes]

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        PausesItself.got.append(line)
        if line == b"pause":
            self.transport.pause_reading()
            assert not self.transport.is_reading()
        elif line == b"resume-other":
            PausesItself.paused.transport.resume_reading()
        self.transport.send_packet(line)

    paused: PausesItself


class Flooder(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        time.sleep(0.0005)
        self.transport.send_packet(line)


def test_a_connection_paused_by_its_protocol_is_not_resumed_by_the_pool(
        iopool: netring.IOPool) -> None:
    PausesItself.got = []
    protos: list[Any] = []
    with netring.WorkerPool(1, max_queued=4) as wp:
        user = netring.Server(factory_of(PausesItself, protos), pool=iopool, framing=LINES,
                              workers=wp)
        flood = netring.Server(Flooder, pool=iopool, framing=LINES, workers=wp)
        with user, flood, connect(user) as u, connect(flood) as f:
            u.sendall(b"pause\r\n")
            assert recv_lines(u, 1) == [b"pause"]
            u.sendall(b"held\r\n")
            # Backpressure cycles on the pool: pause and resume many times.
            f.sendall(b"x\r\n" * 400)
            assert recv_lines(f, 400) == [b"x"] * 400
            assert wp.stats()["paused_connections"] == 0
            time.sleep(0.05)
            assert PausesItself.got == [b"pause"]  # still paused by its protocol
            PausesItself.paused = protos[0]
            with connect(user) as other:
                other.sendall(b"resume-other\r\n")
                assert recv_lines(other, 1) == [b"resume-other"]
            assert recv_lines(u, 1) == [b"held"]


def test_one_pool_shared_by_two_servers(iopool: netring.IOPool) -> None:
    with netring.WorkerPool(2) as wp:
        a = netring.Server(Echo, pool=iopool, workers=wp)
        b = netring.Server(Where, pool=iopool, workers=wp)
        Where.seen = []
        with a, b, connect(a) as sa, connect(b) as sb:
            sa.sendall(b"a")
            sb.sendall(b"b")
            assert recv_exactly(sa, 1) == b"a"
            assert recv_exactly(sb, 7) == b"hello\nb"
            a.shutdown(1.0)
            assert recv_until_eof(sa) == b""
            sb.sendall(b"c")
            assert recv_exactly(sb, 1) == b"c"
            stats = b.stats()["workers"]
            assert stats["threads"] == 2 and stats["completed"] >= 3
            assert stats["mean_wait_seconds"] >= 0 and "busy_workers" in stats


# -- timers and tasks on workers --------------------------------------------------------------


def test_timers_with_workers_run_on_a_worker_thread(
        iopool: netring.IOPool, caplog: pytest.LogCaptureFixture) -> None:
    ran: list[tuple[str, str]] = []
    with netring.WorkerPool(2, name="timers") as wp, \
            caplog.at_level(logging.ERROR, logger="netring"):
        def record(what: str) -> None:
            ran.append((what, threading.current_thread().name))

        iopool.call_later(0.01, record, "later", workers=wp)
        iopool.call_at(time.monotonic() + 0.01, record, "at", workers=wp)
        iopool.call_later(0.01, record, "io")
        ticks: list[int] = []

        def tick() -> None:
            ticks.append(1)
            record("every")
            if len(ticks) == 2:
                raise RuntimeError("tick failed")

        handle = iopool.call_every(0.01, tick, workers=wp)
        assert wait_until(lambda: len(ticks) >= 4)
        handle.cancel()
        assert wait_until(lambda: {"later", "at", "io"} <= {w for w, _ in ran})
        assert wp.submit(lambda x: x * 2, 21).result(5) == 42
        with pytest.raises(ZeroDivisionError):
            wp.submit(lambda: 1 // 0).result(5)
    for what, thread in ran:
        assert is_worker(thread, wp) == (what != "io"), (what, thread)
    assert any("timer callback" in r.getMessage() for r in caplog.records)
    with pytest.raises(TypeError, match="workers"):
        iopool.call_later(1, print, workers=4)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        iopool.call_later(1, print, workers=wp)  # closed


def test_a_slow_repeating_timer_on_workers_skips_beats(iopool: netring.IOPool) -> None:
    runs: list[float] = []
    with netring.WorkerPool(4) as wp:
        def slow() -> None:
            runs.append(time.monotonic())
            time.sleep(0.1)

        handle = iopool.call_every(0.005, slow, workers=wp)
        time.sleep(0.35)
        handle.cancel()
        assert 2 <= len(runs) <= 5  # one at a time, missed beats skipped
        assert wp.stats()["busy_workers"] <= 1


# -- arguments and the CLI ---------------------------------------------------------------------


def test_worker_arguments_are_checked() -> None:
    with pytest.raises(TypeError, match="threads"):
        netring.WorkerPool("4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        netring.WorkerPool(0)
    with pytest.raises(ValueError, match="queue"):
        netring.WorkerPool(1, queue="lifo")
    with pytest.raises(ValueError, match="max_queued"):
        netring.WorkerPool(1, max_queued=0)
    with pytest.raises(ValueError, match="max_queued_bytes"):
        netring.WorkerPool(1, max_queued_bytes=0)
    with pytest.raises(TypeError, match="workers"):
        netring.Server(Echo, workers="many")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="workers"):
        netring.Server(Echo, workers=0)
    with pytest.raises(ValueError, match="priority"):
        netring.Server(Echo, priority=len)
    with pytest.raises(TypeError, match="priority"):
        netring.Server(Echo, workers=1, priority=3)  # type: ignore[arg-type]
    with netring.WorkerPool(1) as fifo:
        with pytest.raises(ValueError, match="priority"):
            netring.Server(Echo, workers=fifo, priority=len)
        with pytest.raises(TypeError, match="fn"):
            fifo.submit(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="closed"):
        netring.Server(Echo, workers=fifo)
    with pytest.raises(RuntimeError, match="closed"):
        fifo.submit(print)
    with netring.WorkerPool(1, queue="priority") as prio:
        server = netring.Server(Echo, workers=prio, priority=len)
        assert server.workers is prio
    server = netring.Server(Echo, workers=2, priority=len)  # a private priority pool
    server.start()
    try:
        assert server.workers is not None and server.workers.queue == "priority"
    finally:
        server.shutdown(1.0)


def test_set_framing_with_workers_only_in_connection_made(iopool: netring.IOPool) -> None:
    errors: list[BaseException] = []

    class Switcher(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            self.transport = transport
            transport.set_framing(LINES)  # on the IO thread, before any byte: fine

        def packet_received(self, line: bytes) -> None:
            try:
                self.transport.set_framing(netring.Raw())
            except RuntimeError as e:
                errors.append(e)
            self.transport.send_packet(line)

    with netring.WorkerPool(1) as wp:
        server = netring.Server(Switcher, pool=iopool, workers=wp)
        with server, connect(server) as s:
            s.sendall(b"one\r\ntwo\r\n")
            assert recv_lines(s, 2) == [b"one", b"two"]
    assert len(errors) == 2 and "connection_made" in str(errors[0])


def test_cli_serves_line_workers(backend: str) -> None:
    args = ["--io-threads", "1", "--workers", "2", "--work-ms", "1"]
    with cli_server("line-workers", backend=backend, args=args) as cli:
        assert cli.ready == [f"netring: serving line-workers on 127.0.0.1:{cli.port} "
                             f"(backend={backend}, io_threads=1)"]
        with socket.create_connection(("127.0.0.1", cli.port), timeout=5) as s:
            s.sendall(b"GET 42\r\nCOUNT alpha-0001\r\nPING\r\nan echo\r\nGET x\r\nQUIT\r\n")
            assert recv_until_eof(s).split(b"\r\n") == [
                b"OK 42 charlie-00042 598", b"OK 1", b"PONG", b"an echo",
                b"GET x", b"BYE", b""]
        assert cli.stop(signal.SIGTERM) == 0
