"""Fixtures shared by the suite: every test runs once per available backend.

Servers bind 127.0.0.1 port 0 and report their port after ``start()``;
nothing sleeps before connecting. The ``backend`` fixture skips a backend
that cannot run on this machine, saying why. ``cli_server`` runs
``python -m netring serve`` the same way: port 0, ready once it printed its
ready lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import queue
import re
import resource
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import IO, Any

import netring
import pytest

BACKENDS = ["io_uring", "epoll"]

# Thousands of loopback connections need two descriptors each.
_soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (max(_soft, min(_hard, 65536)), _hard))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    probe = netring.Server(netring.Protocol, "127.0.0.1", 0, backend=name, io_threads=1)
    try:
        probe.start()
    except netring.BackendUnavailableError as e:
        pytest.skip(f"{name} unavailable here: {e}")
    finally:
        probe.shutdown(0)
    return name


@contextlib.contextmanager
def serving(factory: Callable[[], Any], backend: str, **kwargs: Any) -> Iterator[netring.Server]:
    """A started server on 127.0.0.1:0, shut down on exit."""
    kwargs.setdefault("io_threads", 2)
    server = netring.Server(factory, "127.0.0.1", 0, backend=backend, **kwargs)
    server.start()
    try:
        yield server
    finally:
        server.shutdown(2.0)


def connect(server: netring.Server, timeout: float = 10.0) -> socket.socket:
    """A blocking client socket with a timeout."""
    s = socket.create_connection(server.address, timeout=timeout)
    return s


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(min(n, 1 << 20))
        if not chunk:
            raise EOFError(f"connection closed with {n} bytes still expected")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_until_eof(sock: socket.socket) -> bytes:
    chunks = []
    while True:
        chunk = sock.recv(1 << 20)
        if not chunk:
            return b"".join(chunks)
        chunks.append(chunk)


class Recorder(netring.Protocol):
    """Records its lifecycle and asserts the order of callbacks
    (INITIAL → CONNECTED → (EOF) → CLOSED)."""

    instances: list[Recorder]

    def __init__(self) -> None:
        self.state = "INITIAL"
        self.events: list[Any] = []
        self.data = bytearray()
        self.lost = threading.Event()
        self.exc: BaseException | None = None
        self.transport: netring.Transport
        self.thread = threading.get_ident()

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        assert self.state == "INITIAL", self.state
        self.state = "CONNECTED"
        self.transport = transport
        self.events.append("made")

    def data_received(self, data: bytes) -> None:
        assert self.state == "CONNECTED", self.state
        self.data += data

    def eof_received(self) -> bool | None:
        assert self.state == "CONNECTED", self.state
        self.state = "EOF"
        self.events.append("eof")
        return None

    def pause_writing(self) -> None:
        self.events.append("pause")

    def resume_writing(self) -> None:
        self.events.append("resume")

    def connection_lost(self, exc: BaseException | None) -> None:
        assert self.state in ("CONNECTED", "EOF"), self.state
        self.state = "CLOSED"
        self.exc = exc
        self.events.append("lost")
        self.lost.set()


def factory_of(cls: type, sink: list[Any]) -> Callable[[], Any]:
    """A factory that also appends each new protocol to ``sink``."""
    lock = threading.Lock()

    def make() -> Any:
        p = cls()
        with lock:
            sink.append(p)
        return p

    return make


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    done = threading.Event()
    deadline = timeout
    step = 0.005
    while deadline > 0:
        if predicate():
            return True
        done.wait(step)
        deadline -= step
    return predicate()


def fd_count() -> int:
    return len(os.listdir("/proc/self/fd"))


def thread_ids() -> set[int]:
    """This process's threads now. Compare sets, not counts: a thread an
    earlier test left may end during a later one."""
    return {int(t) for t in os.listdir("/proc/self/task")}


# -- the command line as a child process --------------------------------------------

#: The line ``python -m netring serve`` prints per server once it accepts.
READY_LINE = re.compile(r"netring: serving (?P<name>\S+) on (?P<host>\S+):(?P<port>\d+) "
                        r"\(backend=(?P<backend>\w+), io_threads=(?P<io_threads>\d+)"
                        r"(?P<tls>, tls)?\)")


class CliServer:
    """A running ``python -m netring serve NAME...`` whose every server has
    printed its ready line.

    ``proc`` is the process, ``port`` the first server's port, ``ports`` each
    server's by name, ``ready`` the ready lines in order. ``stdout`` (what it
    printed after its ready lines) and ``stderr`` are complete once it has
    stopped (``stop()``, or leaving ``cli_server``).
    """

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc
        self.ready: list[str] = []
        self.ports: dict[str, int] = {}
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._out: list[str] = []
        self._err: list[str] = []
        assert proc.stdout is not None and proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._read, args=(proc.stdout, self._out, self._lines),
                             daemon=True),
            threading.Thread(target=self._read, args=(proc.stderr, self._err, None),
                             daemon=True),
        ]
        for t in self._readers:
            t.start()

    @staticmethod
    def _read(pipe: IO[str], sink: list[str], lines: queue.Queue[str | None] | None) -> None:
        for line in pipe:
            sink.append(line)
            if lines is not None:
                lines.put(line)
        if lines is not None:
            lines.put(None)

    def _wait_ready(self, names: Sequence[str], timeout: float) -> None:
        """Read one ready line per name, in order, within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        for name in names:
            try:
                line = self._lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no ready line for {name} within {timeout} s; "
                                     f"stderr: {self._stderr_so_far()}") from None
            if line is None:
                self.proc.wait(5)
                raise AssertionError(f"exited with {self.proc.returncode} before serving "
                                     f"{name}; stderr: {self._stderr_so_far()}")
            m = READY_LINE.fullmatch(line.strip())
            assert m and m["name"] == name, f"not {name}'s ready line: {line!r}"
            self.ready.append(line.strip())
            self.ports[name] = int(m["port"])

    def _stderr_so_far(self) -> str:
        return "".join(self._err)

    @property
    def port(self) -> int:
        """The first server's port."""
        return next(iter(self.ports.values()))

    @property
    def stdout(self) -> str:
        return "".join(self._out[len(self.ready):])

    @property
    def stderr(self) -> str:
        return "".join(self._err)

    def stop(self, sig: int | None = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send ``sig`` (None: none) unless it has exited, wait up to
        ``timeout`` seconds (then kill it), collect its output; returns its
        exit status."""
        proc = self.proc
        if proc.poll() is None and sig is not None:
            proc.send_signal(sig)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        for t in self._readers:
            t.join(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        return proc.returncode


@contextlib.contextmanager
def cli_server(*names: str, backend: str, args: Sequence[str] = (),
               ready_timeout: float = 30.0) -> Iterator[CliServer]:
    """Run ``python -m netring serve NAMES... --port 0 (once per name)
    --backend BACKEND ARGS...``; yield once every server printed its ready
    line (the CLI installs its signal handlers before that, so a signal sent
    then drains). On exit: SIGTERM if still running, killed after 10 s, its
    output collected."""
    ports = [arg for _ in names for arg in ("--port", "0")]
    proc = subprocess.Popen(
        [sys.executable, "-m", "netring", "serve", *names, *ports, "--backend", backend,
         *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cli = CliServer(proc)
    try:
        cli._wait_ready(names, ready_timeout)
        yield cli
    finally:
        cli.stop()


def has_ipv6_loopback() -> bool:
    """Whether this machine can bind ::1 (IPv6 tests skip otherwise)."""
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


async def uvicorn_while(config: Any, client: Callable[[], object]) -> dict[str, Any]:
    """Serve the uvicorn ``config`` on the running loop (a netring one)
    until ``client``, run on a thread, returns; then the loop engine's
    counters (``netring.aio.engine_stats()``, taken before uvicorn stops)."""
    import netring.aio
    import uvicorn

    server = uvicorn.Server(config)
    task = asyncio.get_running_loop().create_task(server.serve())
    while not server.started:
        await asyncio.sleep(0.01)
    thread = threading.Thread(target=client)
    thread.start()
    while thread.is_alive():
        await asyncio.sleep(0.02)
    stats = netring.aio.engine_stats()
    server.should_exit = True
    await task
    return stats
