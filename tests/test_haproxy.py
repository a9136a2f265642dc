"""netring behind a real HAProxy (Debian `haproxy`) with the PROXY protocol:
`send-proxy` and `send-proxy-v2` to two netring servers that HAProxy
health-checks; a client through HAProxy sees its own address echoed back;
a worker process drained with SIGTERM while traffic goes on moves it to the
other without a failed request."""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import netring
import pytest
from conftest import serving

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None,
                                reason="haproxy not on PATH (Debian package haproxy)")


class WhoAmI(netring.Protocol):
    """Tells the client the address it came from, then echoes lines."""

    name = "?"

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        host, port = transport.get_extra_info("peername")[:2]
        transport.write(f"{host} {port} {self.name}\n".encode())

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def server_class(name: str) -> type[WhoAmI]:
    return type(f"WhoAmI_{name}", (WhoAmI,), {"name": name})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def haproxy(tmp_path: Path, backends: list[tuple[int, str]],
            greeting: bool = True) -> Iterator[int]:
    """HAProxy in TCP mode on a free port, round robin over `backends`
    ((port, "send-proxy" | "send-proxy-v2")), health-checked every 100 ms
    with a PROXY header of their own; yields its port once it answers."""
    front = free_port()
    servers = "\n".join(
        f"    server s{i} 127.0.0.1:{port} {mode} check check-send-proxy inter 100ms "
        f"fall 1 rise 1"
        for i, (port, mode) in enumerate(backends))
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(f"""
global
    maxconn 1000
defaults
    mode tcp
    timeout connect 2s
    timeout client 20s
    timeout server 20s
    retries 3
    option redispatch
frontend front
    bind 127.0.0.1:{front}
    default_backend netring
backend netring
    balance roundrobin
{servers}
""")
    proc = subprocess.Popen(["haproxy", "-db", "-f", str(cfg)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", front), timeout=2) as s:
                    if not greeting:
                        s.sendall(b"up?\n")
                    if s.recv(100):
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout else ""
                pytest.fail(f"haproxy did not come up: {out[-2000:]}")
            time.sleep(0.05)
        yield front
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        if proc.stdout is not None:
            proc.stdout.close()


def whoami(front: int) -> tuple[str, int, str, int]:
    """One request through HAProxy: (echoed host, echoed port, server, own port)."""
    with socket.create_connection(("127.0.0.1", front), timeout=10) as s, \
            s.makefile("rb") as f:
        host, port, name = f.readline().decode().split()
        s.sendall(b"ping\n")
        assert f.readline() == b"ping\n"
        return host, int(port), name, s.getsockname()[1]


def test_clients_through_haproxy_see_their_own_address(backend: str, tmp_path: Path) -> None:
    local = ["127.0.0.0/8"]
    with serving(server_class("a"), backend, proxy_protocol="v1", trusted_proxies=local) as a, \
            serving(server_class("b"), backend, proxy_protocol="v2",
                    trusted_proxies=local) as b, \
            haproxy(tmp_path, [(a.port, "send-proxy"), (b.port, "send-proxy-v2")]) as front:
        seen = set()
        for _ in range(20):
            host, port, name, own_port = whoami(front)
            assert (host, port) == ("127.0.0.1", own_port), "the client's own address"
            seen.add(name)
        assert seen == {"a", "b"}, "both servers served (v1 and v2)"


def echo_through(front: int) -> None:
    """One request through HAProxy to an echo server."""
    with socket.create_connection(("127.0.0.1", front), timeout=10) as s:
        s.sendall(b"ping\n")
        got = b""
        while len(got) < 5:
            chunk = s.recv(16)
            assert chunk, f"closed after {got!r}"
            got += chunk
        assert got == b"ping\n"


@contextmanager
def worker_process(port: int, backend: str) -> Iterator[subprocess.Popen[bytes]]:
    """``python -m netring serve echo`` as one supervised worker process
    behind the PROXY protocol, ready when this yields."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "netring", "serve", "echo", "--port", str(port),
         "--processes", "1", "--backend", backend, "--grace", "5",
         "--proxy-protocol", "v2", "--trusted-proxy", "127.0.0.0/8"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().decode()
        assert line.startswith("netring: serving echo"), line
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()


def test_a_worker_drained_with_sigterm_moves_traffic_to_the_other(
        backend: str, tmp_path: Path) -> None:
    pa, pb = free_port(), free_port()
    with worker_process(pa, backend) as a, worker_process(pb, backend), \
            haproxy(tmp_path, [(pa, "send-proxy-v2"), (pb, "send-proxy-v2")],
                    greeting=False) as front:
        stop, errors, done = threading.Event(), [], [0]

        def traffic() -> None:
            while not stop.is_set():
                try:
                    echo_through(front)
                    done[0] += 1
                except BaseException as e:  # reported below
                    errors.append(e)
                    return

        threads = [threading.Thread(target=traffic) for _ in range(4)]
        for t in threads:
            t.start()
        time.sleep(0.5)
        a.send_signal(signal.SIGTERM)  # drain: the worker finishes what it has
        assert a.wait(20) == 0
        before = done[0]
        time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(20)
        assert errors == [], errors
        assert done[0] > before, "traffic went on on the other worker"
