"""Low resources, floods and faults (issue #7): the server never goes
unresponsive.

- 10,000 concurrent connections each echo, then descriptors return to
  baseline;
- a child server with a low ``RLIMIT_NOFILE`` under twice that many clients
  idles while exhausted and serves again once descriptors free up;
- shutdown with thousands of busy connections: stops accepting, delivers
  every byte written before the close, finishes within grace + 1 s (in
  process with ``shutdown(grace)``, and SIGTERM to ``python -m netring serve``);
- an exception from any callback or the factory closes at most its
  connection, is logged once, and the server goes on.

The host's hard ``RLIMIT_NOFILE`` may be too low to hold both ends of 10,000
connections in one process (20,000 here, and no ``CAP_SYS_RESOURCE`` to raise
it), so the many-connection clients run in a child process (``CLIENT``
below): each process then needs one descriptor per connection.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import resource
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import netring
import pytest
from conftest import (
    cli_server,
    connect,
    fd_count,
    recv_exactly,
    serving,
    thread_ids,
    wait_until,
)
from netring.servers.echo import Echo

HOST = "127.0.0.1"
MANY = 10_000
#: Busy connections for the shutdown tests: 10,000 when descriptors allow.
BUSY_MIN = 2_000

_SOFT, _HARD = resource.getrlimit(resource.RLIMIT_NOFILE)


def _room_for(n: int) -> int:
    """Connections one process can hold at its soft limit, with slack."""
    return min(n, resource.getrlimit(resource.RLIMIT_NOFILE)[0] - 512)


# A many-connection client, run in a child process (``python -c CLIENT``).
#   echo N: open N connections (at most 256 connecting at once), each sends a
#     16-byte message and reads it back; prints "OPEN n"; on a line from stdin
#     closes them all and prints "CLOSED".
#   busy N: open N connections, then keep up to 2 KiB outstanding on each,
#     checking every byte that comes back; prints "OPEN n" once all have had
#     an echo; runs until every connection saw EOF or a reset (or stdin says
#     "stop"), then prints one JSON line
#     {"live": n, "conns": {i: [sent, received, end, bad, local_port]}}.
CLIENT = r"""
import errno, json, os, selectors, socket, sys, threading, time
mode, host, port, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
addr = (host, port)
deadline = time.monotonic() + float(sys.argv[5])
PERIOD = 251
BIG = bytes((i * 7 + 3) % PERIOD for i in range(PERIOD + 8192))
sel = selectors.DefaultSelector()
socks = [None] * n
state = {}  # i -> [sent, received, end, bad]
def expect(i, off, data):
    s = (i * 13 + off) % PERIOD
    return BIG[s:s + len(data)] == data
def chunk(i, off, size):
    s = (i * 13 + off) % PERIOD
    return BIG[s:s + size]
def die(msg):
    print("ERROR " + msg, flush=True)
    os._exit(3)
started = opened = 0
pending = 0
while opened < n:
    while started < n and pending < 256:
        for attempt in range(300):  # EADDRNOTAVAIL: ports in TIME_WAIT, retry
            s = socket.socket()
            s.setblocking(False)
            err = s.connect_ex(addr)
            if err != errno.EADDRNOTAVAIL:
                break
            s.close()
            time.sleep(0.01)
        if err not in (0, errno.EINPROGRESS):
            die(f"connect {started}: {os.strerror(err)}")
        socks[started] = s
        state[started] = [0, 0, None, False, None]
        sel.register(s, selectors.EVENT_WRITE, started)
        started += 1
        pending += 1
    for key, ev in sel.select(1.0):
        i, s = key.data, key.fileobj
        st = state[i]
        if ev & selectors.EVENT_WRITE:
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                die(f"connect {i}: {os.strerror(err)}")
            st[4] = s.getsockname()[1]
            msg = chunk(i, 0, 16)
            s.send(msg)
            st[0] = 16
            sel.modify(s, selectors.EVENT_READ, i)
            continue
        data = s.recv(64)
        if not data:
            die(f"connection {i} closed before its echo")
        if not expect(i, st[1], data):
            die(f"connection {i}: wrong echo")
        st[1] += len(data)
        if st[1] == 16:
            sel.unregister(s)
            opened += 1
            pending -= 1
    if time.monotonic() > deadline:
        die(f"only {opened} of {n} connections echoed in time")
print(f"OPEN {opened}", flush=True)
if mode == "echo":
    sys.stdin.readline()
    for s in socks:
        s.close()
    print("CLOSED", flush=True)
    sys.exit(0)
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
live = n
for i, s in enumerate(socks):
    sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
while live and not stop.is_set() and time.monotonic() < deadline:
    for key, ev in sel.select(0.5):
        i, s = key.data, key.fileobj
        st = state[i]
        if ev & selectors.EVENT_READ:
            try:
                data = s.recv(65536)
            except ConnectionResetError:
                data = None
            if not data:
                st[2] = "eof" if data == b"" else "reset"
                sel.unregister(s)
                s.close()
                live -= 1
                continue
            if not st[3] and not expect(i, st[1], data):
                st[3] = True
            st[1] += len(data)
        if ev & selectors.EVENT_WRITE and st[0] - st[1] < 2048:
            try:
                st[0] += s.send(chunk(i, st[0], 512))
            except (BlockingIOError, BrokenPipeError, ConnectionResetError):
                pass
            if st[0] - st[1] >= 2048:
                sel.modify(s, selectors.EVENT_READ, i)
        elif ev & selectors.EVENT_READ and st[0] - st[1] < 2048:
            sel.modify(s, selectors.EVENT_READ | selectors.EVENT_WRITE, i)
for i, s in enumerate(socks):
    if state[i][2] is None:
        s.close()
print(json.dumps({"live": live, "conns": state}), flush=True)
"""


@contextlib.contextmanager
def client_process(mode: str, port: int, n: int, limit: float = 50.0
                   ) -> Iterator[subprocess.Popen[str]]:
    proc = subprocess.Popen(
        [sys.executable, "-c", CLIENT, mode, HOST, str(port), str(n), str(limit)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        assert proc.stdin is not None and proc.stdout is not None
        proc.stdin.close()
        proc.stdout.close()


def read_line(proc: subprocess.Popen[str]) -> str:
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    assert not line.startswith("ERROR"), line
    return line


def tell(proc: subprocess.Popen[str], line: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(line + "\n")
    proc.stdin.flush()


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    # fields[0] is the state (field 3): utime and stime are fields 14 and 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- 10,000 concurrent connections -----------------------------------------


def _settled_fd_count() -> int:
    """This process's descriptors once earlier tests' garbage is gone (a
    socket or pool dropped by an earlier test closes when collected)."""
    import gc

    gc.collect()
    last = fd_count()
    for _ in range(50):
        time.sleep(0.02)
        now = fd_count()
        if now == last:
            return now
        last = now
    return last


@pytest.mark.timeout(90)
def test_ten_thousand_concurrent_connections_echo_and_release_descriptors(
        backend: str) -> None:
    if _HARD < MANY + 512:
        pytest.skip(f"RLIMIT_NOFILE hard limit {_HARD} < {MANY + 512}: "
                    "cannot hold 10,000 connections")
    fds_before, threads_before = _settled_fd_count(), thread_ids()
    with serving(Echo, backend) as server:
        # Settled before the client starts; its two pipes add two descriptors.
        base = _settled_fd_count() + 2
        with client_process("echo", server.port, MANY) as proc:
            assert read_line(proc) == f"OPEN {MANY}"
            assert wait_until(lambda: server.stats()["connections_open"] == MANY, 10), \
                server.stats()
            assert fd_count() == base + MANY
            # Still serving while holding them all.
            with connect(server) as s:
                s.sendall(b"one more")
                assert recv_exactly(s, 8) == b"one more"
            tell(proc, "close")
            assert read_line(proc) == "CLOSED"
            assert wait_until(lambda: server.stats()["connections_open"] == 0, 20), \
                server.stats()
            assert wait_until(lambda: fd_count() == base, 5), (fd_count(), base)
            assert proc.wait(10) == 0
        stats = server.stats()
        assert stats["connections_accepted"] == MANY + 1
        assert stats["connections_closed"] == MANY + 1
    assert fd_count() == fds_before
    assert wait_until(lambda: not thread_ids() - threads_before, 5)


# --- descriptor exhaustion in a child server -------------------------------

# A child server: RLIMIT_NOFILE lowered to argv[2] before netring starts.
EXHAUSTED_SERVER = r"""
import resource, sys
limit = int(sys.argv[2])
resource.setrlimit(resource.RLIMIT_NOFILE, (limit, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))
import netring
from netring.servers.echo import Echo
server = netring.Server(Echo, "127.0.0.1", 0, backend=sys.argv[1], io_threads=1)
server.start()
print(server.port, flush=True)
server.serve_forever(grace=1.0)
"""

LOW_LIMIT = 128


def _backoff_lines(log_path: str) -> int:
    """Warnings about the failing accept (the errno's text is in each)."""
    with open(log_path) as f:
        return sum("Too many open files" in line for line in f)


@contextlib.contextmanager
def exhausted_server(backend: str, log_path: str
                     ) -> Iterator[tuple[subprocess.Popen[str], int, list[socket.socket]]]:
    """A child server at LOW_LIMIT descriptors with 2 * LOW_LIMIT clients
    connected to it; yields (process, port, clients) once it has run out
    (its accept failed: it logged the warning). Its stderr goes to
    ``log_path``."""
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-c", EXHAUSTED_SERVER, backend, str(LOW_LIMIT)],
            stdout=subprocess.PIPE, stderr=log, text=True)
    clients: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline())
        for _ in range(2 * LOW_LIMIT):
            clients.append(socket.create_connection((HOST, port), timeout=5))
        # Wait for the server to run out: its first failed accept logs a warning.
        assert wait_until(lambda: _backoff_lines(log_path) >= 1, 10), \
            f"no failed accept logged; the server holds {proc_fds(proc.pid)} descriptors"
        fds = proc_fds(proc.pid)
        assert fds >= LOW_LIMIT - 2, f"server holds {fds} descriptors, limit {LOW_LIMIT}"
        yield proc, port, clients
    finally:
        for c in clients:
            c.close()
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        assert proc.stdout is not None
        proc.stdout.close()


def _serve_new_client_after_close(port: int, clients: list[socket.socket]) -> float:
    """Close every client, then time a new client's echo."""
    for c in clients:
        c.close()
    clients.clear()
    t0 = time.monotonic()
    with socket.create_connection((HOST, port), timeout=10) as s:
        s.sendall(b"back")
        assert recv_exactly(s, 4) == b"back"
    return time.monotonic() - t0


@pytest.mark.timeout(60)
def test_descriptor_exhaustion_idles_and_recovers(backend: str, tmp_path: Any) -> None:
    log = str(tmp_path / "server.log")
    with exhausted_server(backend, log) as (proc, port, clients):
        # Exhausted: 2 s of the server's CPU time (every thread).
        # NOTE: a measurement over time, not a wait for a condition.
        cpu0, t0 = proc_cpu_seconds(proc.pid), time.monotonic()
        time.sleep(2.0)
        share = (proc_cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0)
        assert share < 0.10, f"exhausted server used {share:.0%} of a core"
        # One warning for the episode, not one per attempt.
        assert _backoff_lines(log) == 1, open(log).read()
        # Connections accepted before exhaustion are still served.
        clients[0].sendall(b"alive")
        assert recv_exactly(clients[0], 5) == b"alive"
        # Descriptors free up: served again, within the backoff's 1 s cap.
        elapsed = _serve_new_client_after_close(port, clients)
        assert elapsed < 2.5, f"new client served {elapsed:.2f} s after the others closed"
        # Draining the backlog near the limit, accepts flip between working
        # and failing: still the same episode, still one warning.
        time.sleep(0.5)
        assert _backoff_lines(log) == 1, open(log).read()
    assert proc.returncode == 0, open(log).read()


# NOTE: the backoff's schedule (5 ms doubling to a 1 s cap) and the retry at
# once when a descriptor frees, even at the cap, are tested with injected time
# on a fake driver (netring-core's machine_tests.rs: accept_backoff_doubles_
# up_to_its_cap_and_retries_when_a_descriptor_frees); a test here slept 2.5 s
# to reach the cap. The real kernel's EMFILE path is the test above.


# --- shutdown under load ----------------------------------------------------


class CountingEcho(netring.Protocol):
    """Echo that records how many bytes it wrote, by the peer's port."""

    written: dict[int, int]
    lost: dict[int, BaseException | None]
    lock = threading.Lock()

    def __init__(self) -> None:
        self.count = 0

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.peer_port = transport.get_extra_info("peername")[1]

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
        self.count += len(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        with self.lock:
            self.written[self.peer_port] = self.count
            self.lost[self.peer_port] = exc


def _busy_count() -> int:
    n = _room_for(MANY)
    if n < BUSY_MIN:
        pytest.skip(f"RLIMIT_NOFILE allows only {n} connections per process (< {BUSY_MIN})")
    return n


def _refused(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(2)
        try:
            s.connect((HOST, port))
        except ConnectionRefusedError:
            return True
        return False


def _check_busy_report(report: dict[str, Any], n: int) -> dict[int, list[Any]]:
    """Every connection ended with a FIN, having received only its own echo.

    A reset would mean the server closed with our input unread and the kernel
    may have dropped written bytes (see
    test_close_while_the_peer_still_sends_loses_nothing); the in-process test
    also counts the bytes.
    """
    conns = {int(k): v for k, v in report["conns"].items()}
    assert len(conns) == n
    assert report["live"] == 0, f"{report['live']} connections were never closed"
    ends: dict[str, int] = {}
    for sent, received, end, bad, _port in conns.values():
        ends[str(end)] = ends.get(str(end), 0) + 1
        assert not bad, "a connection received bytes that were not its echo"
        assert received <= sent
    assert ends == {"eof": n}, f"how connections ended: {ends}"
    return conns


@pytest.mark.timeout(120)
def test_shutdown_under_load_delivers_everything_within_grace(backend: str) -> None:
    n = _busy_count()
    CountingEcho.written, CountingEcho.lost = {}, {}
    grace = 5.0
    server = netring.Server(CountingEcho, HOST, 0, backend=backend, io_threads=2)
    server.start()
    port = server.port
    try:
        with client_process("busy", port, n, limit=60) as proc:
            assert read_line(proc) == f"OPEN {n}"
            time.sleep(0.5)  # every connection busy
            before = server.stats()["bytes_out"]
            time.sleep(0.5)
            assert server.stats()["bytes_out"] > before
            t0 = time.monotonic()
            server.shutdown(grace)
            took = time.monotonic() - t0
            assert _refused(port)
            report = json.loads(read_line(proc))
            assert proc.wait(10) == 0
    finally:
        server.shutdown(0)
    assert took < grace + 1.0, f"shutdown took {took:.2f} s with grace {grace} s"
    conns = _check_busy_report(report, n)
    assert len(CountingEcho.written) == n
    assert all(exc is None for exc in CountingEcho.lost.values())
    # Every byte the server wrote before its close reached its client.
    received = {v[4]: v[1] for v in conns.values()}
    short = [(p, w, received.get(p)) for p, w in CountingEcho.written.items()
             if w != received.get(p)]
    assert not short, f"{len(short)} connections lost written bytes, e.g. {short[:3]}"


class WriteThenClose(netring.Protocol):
    """On the first bytes: write 4 MiB, then close()."""

    SIZE = 4 << 20
    outcome: list[Any]

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.done = False

    def data_received(self, data: bytes) -> None:
        if not self.done:
            self.done = True
            self.transport.write(b"z" * self.SIZE)
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.outcome.append(exc)


@pytest.mark.timeout(30)
def test_close_while_the_peer_still_sends_loses_nothing(backend: str) -> None:
    WriteThenClose.outcome = []
    stop = threading.Event()
    with serving(WriteThenClose, backend) as server, socket.socket() as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)  # a slow reader
        c.settimeout(10)
        c.connect(server.address)

        def keep_sending() -> None:  # a pipelining client: requests keep coming
            with contextlib.suppress(OSError):
                while not stop.is_set():
                    c.sendall(b"y" * 1024)
                    time.sleep(0.005)

        sender = threading.Thread(target=keep_sending)
        sender.start()
        received = 0
        try:
            with contextlib.suppress(ConnectionResetError):
                while data := c.recv(256 << 10):
                    received += len(data)
                    time.sleep(0.005)
        finally:
            stop.set()
            sender.join()
        assert wait_until(lambda: bool(WriteThenClose.outcome), 5)
    assert WriteThenClose.outcome == [None]
    assert received == WriteThenClose.SIZE, \
        f"{WriteThenClose.SIZE - received} of {WriteThenClose.SIZE} written bytes lost"


@pytest.mark.timeout(120)
def test_sigterm_under_load_drains_and_exits_within_grace(backend: str) -> None:
    n = _busy_count()
    grace = 5.0
    with cli_server("echo", backend=backend, args=["--grace", str(grace)]) as server:
        port = server.port
        with client_process("busy", port, n, limit=60) as proc:
            assert read_line(proc) == f"OPEN {n}"
            time.sleep(1.0)
            t0 = time.monotonic()
            server.proc.send_signal(signal.SIGTERM)
            assert wait_until(lambda: _refused(port), 1.0), "still accepting after SIGTERM"
            code = server.proc.wait(grace + 5)
            took = time.monotonic() - t0
            report = json.loads(read_line(proc))
            assert proc.wait(10) == 0
    assert code == 0, server.stderr
    assert took < grace + 1.0, f"exit {took:.2f} s after SIGTERM with grace {grace} s"
    # A clean FIN after the right bytes on every connection: nothing lost.
    _check_busy_report(report, n)


# --- isolation: an exception in any callback --------------------------------

TRIGGER = b"boom"


class Faulty(netring.Protocol):
    """Echoes (raw or framed); raises in ``where`` once ``TRIGGER`` arrived
    (``connection_made``: while ``fail_next`` is set)."""

    where = ""
    fail_next = False
    protos: list[Faulty]

    def __init__(self) -> None:
        self.triggered = False
        self.exc: BaseException | None = None
        self.lost_calls = 0
        self.lost = threading.Event()
        self.protos.append(self)

    def _raise(self, name: str) -> None:
        if self.triggered and self.where == name:
            raise RuntimeError(f"bug in {name}")

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        if self.where == "connection_made" and type(self).fail_next:
            type(self).fail_next = False
            self.triggered = True
            self._raise("connection_made")

    def _got(self, data: bytes, echo: Any) -> None:
        if TRIGGER in data:
            self.triggered = True
            if self.where in ("pause_writing", "resume_writing"):
                self.transport.write(b"f" * (1 << 20))
                return
            if self.where == "pause_writing:thread":  # write() from another thread
                self.where = "pause_writing"
                flood = threading.Thread(target=self.transport.write, args=(b"f" * (1 << 20),))
                flood.start()
                flood.join()
                return
        echo(data)

    def data_received(self, data: bytes) -> None:
        self._got(data, self.transport.write)
        self._raise("data_received")

    def packet_received(self, packet: bytes) -> None:
        self._got(packet, self.transport.send_packet)
        self._raise("packet_received")

    def eof_received(self) -> bool | None:
        self._raise("eof_received")
        return None

    def pause_writing(self) -> None:
        self._raise("pause_writing")

    def resume_writing(self) -> None:
        self._raise("resume_writing")

    def timeout_received(self) -> None:
        self._raise("timeout_received")  # otherwise stay open

    def connection_lost(self, exc: BaseException | None) -> None:
        self.exc = exc
        self.lost_calls += 1
        self.lost.set()
        self._raise("connection_lost")


class FaultyBatch(Faulty):
    def packets_received(self, packets: list[bytes]) -> None:
        for p in packets:
            self._got(p, self.transport.send_packet)
        self._raise("packets_received")


CALLBACKS = [
    "protocol factory", "connection_made", "data_received", "packet_received",
    "packets_received", "eof_received", "pause_writing", "pause_writing:thread",
    "resume_writing",
    "timeout_received", "connection_lost",
]


#: Callbacks whose exceptions are not yet isolated and logged once, and why
#: (none today).
XFAIL_ISOLATION: dict[str, pytest.MarkDecorator] = {
}


def _frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def _drain(sock: socket.socket, limit: float = 10.0) -> None:
    """Read until EOF or a reset."""
    sock.settimeout(limit)
    with contextlib.suppress(ConnectionResetError):
        while sock.recv(1 << 20):
            pass


@pytest.mark.timeout(30)
@pytest.mark.parametrize("where", [
    pytest.param(name, marks=XFAIL_ISOLATION[name]) if name in XFAIL_ISOLATION else name
    for name in CALLBACKS])
def test_exception_in_a_callback_is_isolated_and_logged_once(
        backend: str, where: str, caplog: pytest.LogCaptureFixture) -> None:
    framed = where in ("packet_received", "packets_received")
    cls: type[Faulty] = type("Case", (FaultyBatch if where == "packets_received" else Faulty,),
                             {"where": where, "protos": [], "fail_next": False})
    factory_fails = threading.Event()

    def factory() -> Faulty:
        if factory_fails.is_set():
            factory_fails.clear()
            raise RuntimeError("bug in the protocol factory")
        return cls()

    wrap = _frame if framed else (lambda b: b)
    options: dict[str, Any] = {}
    if framed:
        options["framing"] = netring.LengthPrefixed(header_size=4)
    if where == "timeout_received":
        options["idle_timeout"] = 0.3

    def echoes(sock: socket.socket, msg: bytes) -> None:
        sock.sendall(wrap(msg))
        assert recv_exactly(sock, len(wrap(msg))) == wrap(msg)

    with caplog.at_level(logging.ERROR, logger="netring"), \
            serving(factory, backend, **options) as server, \
            connect(server) as good, socket.socket() as bad:
        echoes(good, b"hello")
        bad.settimeout(10)
        if where == "protocol factory":
            factory_fails.set()
        elif where == "connection_made":
            cls.fail_next = True
        bad.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        bad.connect(server.address)
        callback = where.split(":")[0]
        if where not in ("protocol factory", "connection_made"):
            bad.sendall(wrap(TRIGGER))
        if where == "eof_received":
            bad.shutdown(socket.SHUT_WR)
        if where == "connection_lost":
            assert recv_exactly(bad, len(wrap(TRIGGER))) == wrap(TRIGGER)
            bad.close()
        else:
            _drain(bad, 3.0)
        if where != "protocol factory":
            victim = [p for p in cls.protos if p.triggered]
            assert len(victim) == 1
            assert victim[0].lost.wait(5), "the failing connection was not closed"
        time.sleep(0.2)  # a second log line, if any, would be out by now
        # The server goes on: the old connection and a new one both echo.
        echoes(good, b"still here")
        with connect(server) as after:
            echoes(after, b"after")
        records = [r for r in caplog.records
                   if r.name == "netring" and r.levelno >= logging.ERROR]
    assert len(records) == 1, [r.getMessage() for r in records]
    message = records[0].getMessage()
    assert callback in message and "127.0.0.1" in message, message
    if where != "protocol factory":
        p = victim[0]
        assert p.lost_calls == 1
        if where != "connection_lost":
            assert isinstance(p.exc, RuntimeError) and callback in str(p.exc), p.exc
    assert server.stats()["connections_open"] == 0
