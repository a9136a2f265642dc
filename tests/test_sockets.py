"""Sockets from outside and address families, on both backends:
`Server(sock=)` / `fd=` for an already-bound socket, systemd socket
activation (with Debian's `systemd-socket-activate`), IPv6 and dual-stack
`::` (IPv4 clients reported as asyncio reports them)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import netring
import pytest
from conftest import has_ipv6_loopback, recv_exactly, serving, wait_until
from netring.servers.echo import Echo


def echo_once(address: tuple, payload: bytes = b"hello", family: int = socket.AF_INET) -> None:
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.settimeout(10)
        s.connect(address)
        s.sendall(payload)
        assert recv_exactly(s, len(payload)) == payload


def test_a_bound_socket_from_outside(backend: str) -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    with serving(Echo, backend, sock=sock) as server:
        sock.close()  # the server serves its own duplicate
        assert server.port == port
        echo_once(("127.0.0.1", port))
    # fd= with a socket already listening (as systemd passes them).
    listening = socket.create_server(("127.0.0.1", 0))
    with serving(Echo, backend, fd=listening.fileno()) as server:
        assert server.port == listening.getsockname()[1]
        echo_once(server.address)
    listening.close()


def test_sockets_that_cannot_be_served_are_refused() -> None:
    closed = socket.socket()
    closed.close()
    with pytest.raises(netring.ConfigurationError, match="closed"):
        netring.Server(Echo, sock=closed)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, \
            pytest.raises(netring.ConfigurationError, match="stream socket"):
        netring.Server(Echo, sock=udp)
    with socket.socket(socket.AF_UNIX) as unix, \
            pytest.raises(netring.ConfigurationError, match="not bound"):
        netring.Server(Echo, sock=unix)
    with socket.socket() as s, pytest.raises(netring.ConfigurationError, match="one, not both"):
        netring.Server(Echo, sock=s, fd=s.fileno())
    r, w = os.pipe()
    try:
        with pytest.raises(netring.ConfigurationError, match=r"not an open socket|stream socket"):
            netring.Server(Echo, fd=r)
    finally:
        os.close(r)
        os.close(w)


@contextlib.contextmanager
def served(factory: Any, backend: str, host: str) -> Iterator[netring.Server]:
    server = netring.Server(factory, host, 0, backend=backend, io_threads=1)
    server.start()
    try:
        yield server
    finally:
        server.shutdown(2.0)


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_ipv6_and_dual_stack(backend: str) -> None:
    peers: list[object] = []

    class Recording(Echo):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            peers.append(transport.get_extra_info("peername"))
            super().connection_made(transport)

    with served(Recording, backend, "::1") as server:
        echo_once(("::1", server.port), family=socket.AF_INET6)
        # ::1 is IPv6 only.
        with pytest.raises(OSError):
            echo_once(("127.0.0.1", server.port))
    assert peers[0][0] == "::1" and len(peers[0]) == 4  # type: ignore[index]
    peers.clear()
    with served(Recording, backend, "::") as server:
        echo_once(("::1", server.port), family=socket.AF_INET6)
        echo_once(("127.0.0.1", server.port))  # dual-stack
    assert peers[1][0] == "::ffff:127.0.0.1", peers  # type: ignore[index]
    assert len(peers[1]) == 4  # type: ignore[arg-type]


def first_connection_starts(proc: subprocess.Popen[bytes], port: int,
                            timeout: float = 10.0) -> None:
    """Under systemd-socket-activate the first connection starts the
    service, which takes the socket and prints its ready line."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            echo_once(("127.0.0.1", port), b"activated")
            break
        except OSError:
            if time.monotonic() > deadline or proc.poll() is not None:
                raise
            time.sleep(0.05)
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    assert line.startswith(f"netring: serving echo on 127.0.0.1:{port} "), line


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate not on PATH (Debian package systemd)")
def test_systemd_socket_activation(backend: str) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = dict(os.environ, NETRING_BACKEND=backend)
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=echo",
         sys.executable, "-m", "netring", "serve", "echo", "--port", "1", "--backend", backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        first_connection_starts(proc, port)
        echo_once(("127.0.0.1", port), b"again")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
    assert wait_until(lambda: proc.returncode is not None, 1)


def test_servers_sharing_one_socket_take_connections_in_turn(backend: str) -> None:
    """Two engines (as two worker processes would) serve one listening
    socket: on io_uring each accepts one connection at a time and queues
    again behind the other, so they alternate (a multishot accept would stay
    first in the socket's wait queue and take every connection)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    counts = [0, 0]

    def counting(i: int) -> type[netring.Protocol]:
        class Counting(Echo):
            def connection_made(self, transport: Any) -> None:
                counts[i] += 1
                super().connection_made(transport)
        return Counting

    with serving(counting(0), backend, sock=sock, io_threads=1), \
            serving(counting(1), backend, sock=sock, io_threads=1):
        for i in range(40):
            echo_once(sock.getsockname(), f"c{i}".encode())
        assert wait_until(lambda: sum(counts) == 40)
    sock.close()
    if backend == "io_uring":
        assert min(counts) >= 15, counts
    else:  # epoll wakes both: whichever accepts first takes it
        assert sum(counts) == 40


def _children(pid: int) -> set[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return {int(c) for c in f.read().split()}
    except OSError:
        return set()


@pytest.mark.skipif(shutil.which("systemd-socket-activate") is None,
                    reason="systemd-socket-activate not on PATH (Debian package systemd)")
def test_systemd_socket_activation_with_worker_processes(backend: str) -> None:
    """Two worker processes accept from systemd's one socket; SIGHUP
    replaces them one at a time while a client connects over and over, and
    every connection is answered at once: none waits in the shared queue
    without a wake-up (the one a draining worker's cancelled accept took)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen(
        ["systemd-socket-activate", "-l", f"127.0.0.1:{port}", "--fdname=echo",
         sys.executable, "-m", "netring", "serve", "echo", "--port", "1", "--processes", "2",
         "--io-threads", "1", "--backend", backend],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    stop = threading.Event()
    served: list[int] = []
    failures: list[str] = []

    def client() -> None:
        i = 0
        while not stop.is_set():
            payload = f"hello {i}".encode()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=3) as s:
                    s.sendall(payload)
                    assert recv_exactly(s, len(payload)) == payload
                served.append(i)
            except (OSError, EOFError, AssertionError) as e:
                failures.append(f"connection {i}: {e!r}")
            i += 1

    try:
        first_connection_starts(proc, port, timeout=15)
        assert wait_until(lambda: len(_children(proc.pid)) == 2, 10)
        thread = threading.Thread(target=client)
        thread.start()
        try:
            for _ in range(3):
                before = _children(proc.pid)
                proc.send_signal(signal.SIGHUP)
                assert wait_until(lambda b=before: not _children(proc.pid) & b  # type: ignore[misc]
                                  and len(_children(proc.pid)) == 2, 30)
                time.sleep(0.2)
        finally:
            stop.set()
            thread.join(10)
        assert not failures, failures[:5]
        assert len(served) > 20, len(served)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
    finally:
        stop.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_listen_fds_reads_only_our_own(monkeypatch: pytest.MonkeyPatch) -> None:
    from netring.systemd import listen_fds

    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert listen_fds() == []
    assert "LISTEN_FDS" not in os.environ
    monkeypatch.setenv("LISTEN_PID", "garbage")
    assert listen_fds() == []


class Client(netring.Protocol):
    def __init__(self) -> None:
        self.got = b""
        self.done = threading.Event()

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got += data
        if self.got.endswith(b"!"):
            self.done.set()


def test_unix_domain_sockets(backend: str, tmp_path: Any) -> None:
    path = str(tmp_path / "echo.sock")
    peers: list[object] = []

    class Recording(Echo):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            peers.append(transport.get_extra_info("peername"))
            super().connection_made(transport)

    server = netring.Server(Recording, path=path, path_mode=0o660, backend=backend,
                            io_threads=1)
    server.start()
    try:
        assert server.host == path and os.stat(path).st_mode & 0o777 == 0o660
        echo_once(path, b"over unix", family=socket.AF_UNIX)
        client = Client()
        with netring.IOPool(1, backend=backend) as pool:
            transport, _ = pool.connect(lambda: client, path=path).result(10)
            transport.write(b"from netring!")
            assert client.done.wait(10) and client.got == b"from netring!"
            transport.close()
        # A second server on a live server's path is refused; the file stays.
        with pytest.raises(OSError, match="listening"):
            netring.Server(Echo, path=path, backend=backend).start()
        assert os.path.exists(path)
    finally:
        server.shutdown(2.0)
    assert not os.path.exists(path), "removed at shutdown"
    assert peers[0] is None
    # A stale socket file (its server died without cleaning up) is replaced.
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(path)
    stale.close()
    with serving(Echo, backend, path=path) as server:
        echo_once(path, b"after stale", family=socket.AF_UNIX)
    # Anything that is not a socket is never removed.
    with open(path, "w") as f:
        f.write("precious")
    with pytest.raises(OSError, match="not a socket"):
        netring.Server(Echo, path=path, backend=backend).start()
    with open(path) as f:
        assert f.read() == "precious"


def test_abstract_unix_names(backend: str) -> None:
    name = f"\0netring-test-{os.getpid()}-{backend}"
    with serving(Echo, backend, path=name):
        echo_once(name, b"abstract", family=socket.AF_UNIX)
        with netring.IOPool(1, backend=backend) as pool:
            client = Client()
            transport, _ = pool.connect(lambda: client, path=name).result(10)
            transport.write(b"abstract!")
            assert client.done.wait(10)
            transport.close()
    with pytest.raises(netring.ConfigurationError, match="abstract"):
        netring.Server(Echo, path=name, path_mode=0o600)
    with netring.IOPool(1, backend=backend) as pool:
        with pytest.raises(ConnectionRefusedError):
            pool.connect(Client, path=name + "-nobody").result(10)
        with pytest.raises(netring.ConfigurationError, match="not both"):
            pool.connect(Client, "127.0.0.1", 80, path=name)
