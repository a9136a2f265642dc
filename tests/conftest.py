"""Fixtures shared by the suite: every test runs once per available backend.

Servers bind 127.0.0.1 port 0 and report their port after ``start()``;
nothing sleeps before connecting. The ``backend`` fixture skips a backend
that cannot run on this machine, saying why.
"""

from __future__ import annotations

import contextlib
import os
import resource
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

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


def thread_count() -> int:
    return len(os.listdir("/proc/self/task"))
