"""Configuration errors, stats, extra info, the CLI."""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
from typing import Any

import netring
import pytest
from conftest import (
    Recorder,
    cli_server,
    connect,
    factory_of,
    has_ipv6_loopback,
    recv_exactly,
    serving,
    wait_until,
)
from netring.servers.echo import Echo


@pytest.mark.parametrize(
    ("kwargs", "exc", "name"),
    [
        ({"port": 70000}, ValueError, "port"),
        ({"port": "80"}, TypeError, "port"),
        ({"io_threads": 0}, ValueError, "io_threads"),
        ({"backlog": -1}, ValueError, "backlog"),
        ({"backend": "kqueue"}, ValueError, "backend"),
        ({"buffers_per_thread": 1000}, ValueError, "buffers_per_thread"),
        ({"buffer_size": 10}, ValueError, "buffer_size"),
        ({"reuse_port": "yes"}, TypeError, "reuse_port"),
        ({"host": "no such host.invalid"}, ValueError, "host"),
        ({"idle_timeout": 1e300}, ValueError, "idle_timeout"),
        ({"frame_timeout": float("nan")}, ValueError, "frame_timeout"),
        ({"keepalive": (1e300, 1, 1)}, ValueError, "keepalive idle"),
    ],
)
def test_wrong_arguments_fail_at_construction_naming_the_argument(
        kwargs: dict[str, Any], exc: type[Exception], name: str) -> None:
    with pytest.raises(exc, match=name):
        netring.Server(Echo, **kwargs)


def test_factory_must_be_callable() -> None:
    with pytest.raises(TypeError, match="protocol_factory"):
        netring.Server(42)  # type: ignore[arg-type]


@pytest.mark.skipif(not has_ipv6_loopback(), reason="no IPv6 loopback here")
def test_extra_info_over_ipv6(backend: str) -> None:
    # IPv4 addresses are kept inline in the transport, others boxed: both
    # must read back exactly as the socket module reports them.
    protos: list[Any] = []
    server = netring.Server(factory_of(Recorder, protos), "::1", 0, backend=backend,
                            io_threads=1)
    server.start()
    try:
        with socket.create_connection(server.address[:2], timeout=10) as s:
            assert wait_until(lambda: len(protos) == 1)
            t = protos[0].transport
            assert t.get_extra_info("peername") == s.getsockname()
            assert t.get_extra_info("sockname") == s.getpeername()
            assert "::1" in repr(t)
            t.write(b"v6")
            assert recv_exactly(s, 2) == b"v6"
    finally:
        server.shutdown(2.0)


def test_stats_and_extra_info(backend: str) -> None:
    protos: list[Any] = []
    with serving(factory_of(Recorder, protos), backend) as server, connect(server) as s:
        assert wait_until(lambda: len(protos) == 1)
        t = protos[0].transport
        assert t.get_extra_info("peername") == s.getsockname()
        assert t.get_extra_info("sockname") == s.getpeername()
        assert t.get_extra_info("nonsense", "dflt") == "dflt"
        t.write(b"12345")
        assert recv_exactly(s, 5) == b"12345"
        s.sendall(b"abc")
        assert wait_until(lambda: protos[0].data == b"abc")
        stats = server.stats()
        assert stats["backend"] == backend
        assert stats["connections_open"] == 1
        assert stats["connections_accepted"] == 1
        assert stats["bytes_in"] == 3
        assert stats["bytes_out"] == 5
        with pytest.raises(TypeError, match="bytes-like"):
            t.write("text")  # type: ignore[arg-type]
        with pytest.raises(ValueError):
            t.set_write_buffer_limits(high=10, low=20)
        t.set_write_buffer_limits(low=100)
        assert t.get_write_buffer_limits() == (100, 400)


def test_backend_info_names_a_backend() -> None:
    info = netring.backend_info()
    assert info["backend"] in ("io_uring", "epoll")


def test_cli_prints_one_ready_line_and_exits_zero_on_sigterm(backend: str) -> None:
    with cli_server("echo", backend=backend, args=["--io-threads", "1"]) as cli:
        assert cli.ready == [
            f"netring: serving echo on 127.0.0.1:{cli.port} (backend={backend}, io_threads=1)"]
        with socket.create_connection(("127.0.0.1", cli.port), timeout=5) as s:
            s.sendall(b"cli")
            assert recv_exactly(s, 3) == b"cli"
        assert cli.stop(signal.SIGTERM) == 0
        assert cli.stdout == ""


def test_context_manager_starts_and_stops(backend: str) -> None:
    with netring.Server(Echo, "127.0.0.1", 0, backend=backend, io_threads=1) as server:
        assert server.is_serving()
        with connect(server) as s:
            s.sendall(b"ctx")
            assert recv_exactly(s, 3) == b"ctx"
    assert not server.is_serving()


def test_the_netring_command_reports_its_version() -> None:
    run = subprocess.run([sys.executable, "-m", "netring", "--version"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 0 and run.stdout.strip() == f"netring {netring.__version__}"
    from netring.cli import _host_port

    assert _host_port("0.0.0.0:9100") == ("0.0.0.0", 9100)
    assert _host_port("[::1]:9100") == ("::1", 9100)
    assert _host_port(":9100") == ("127.0.0.1", 9100)
