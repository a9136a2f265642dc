"""IOPool: several servers on one pool, timers on the IO threads, idle
timeouts (every test on each backend)."""

from __future__ import annotations

import itertools
import logging
import shutil
import socket
import struct
import subprocess
import threading
import time
from typing import Any

import netring
import pytest
from conftest import (
    Recorder,
    connect,
    factory_of,
    recv_exactly,
    recv_until_eof,
    thread_ids,
    wait_until,
)
from netring.servers import SERVERS
from netring.servers.echo import Echo


@pytest.fixture
def pool(backend: str) -> Any:
    with netring.IOPool(io_threads=2, backend=backend) as p:
        yield p


def test_servers_share_one_pool_and_stop_independently(pool: netring.IOPool) -> None:
    echo = netring.Server(Echo, pool=pool)
    packets = SERVERS["packet-echo"]
    packet = netring.Server(packets.factory, pool=pool, **packets.options)
    echo.start()
    packet.start()
    with connect(echo) as a, connect(packet) as b:
        a.sendall(b"raw")
        assert recv_exactly(a, 3) == b"raw"
        b.sendall(struct.pack(">I", 2) + b"pk")
        assert recv_exactly(b, 6) == struct.pack(">I", 2) + b"pk"
        assert pool.stats()["connections_accepted"] == 2
        assert echo.stats()["server_connections_open"] == 1
        echo.shutdown(1.0)
        assert recv_until_eof(a) == b""
        assert not echo.is_serving()
        # The other server, on the same threads, is unaffected.
        b.sendall(struct.pack(">I", 1) + b"z")
        assert recv_exactly(b, 5) == struct.pack(">I", 1) + b"z"
        assert packet.is_serving()
    packet.shutdown(1.0)
    assert not pool.is_closed()


def test_pool_arguments_belong_to_the_pool(pool: netring.IOPool) -> None:
    with pytest.raises(ValueError, match="io_threads"):
        netring.Server(Echo, pool=pool, io_threads=2)
    with pytest.raises(TypeError, match="pool"):
        netring.Server(Echo, pool="shared")  # type: ignore[arg-type]


def test_call_later_runs_once_on_an_io_thread_after_the_delay(pool: netring.IOPool) -> None:
    fired: list[tuple[float, int, tuple[Any, ...]]] = []
    done = threading.Event()
    t0 = time.monotonic()

    def cb(*args: Any) -> None:
        fired.append((time.monotonic(), threading.get_ident(), args))
        done.set()

    handle = pool.call_later(0.05, cb, 1, "two")
    assert done.wait(5)
    time.sleep(0.1)
    assert len(fired) == 1
    at, ident, args = fired[0]
    assert at - t0 >= 0.05
    assert ident != threading.get_ident()
    assert args == (1, "two")
    assert handle.when() == pytest.approx(t0 + 0.05, abs=0.05)


def test_cancelled_timers_never_fire(pool: netring.IOPool) -> None:
    fired: list[int] = []
    handles = [pool.call_later(0.05, fired.append, i) for i in range(100)]
    for h in handles[::2]:
        h.cancel()
    assert wait_until(lambda: len(fired) == 50, 5)
    time.sleep(0.1)
    assert sorted(fired) == list(range(1, 100, 2))
    assert handles[0].cancelled() and not handles[1].cancelled()


def test_call_every_repeats_until_cancelled_and_survives_exceptions(
        pool: netring.IOPool, caplog: pytest.LogCaptureFixture) -> None:
    ticks: list[float] = []

    def tick() -> None:
        ticks.append(time.monotonic())
        if len(ticks) == 2:
            raise RuntimeError("tick failed")

    with caplog.at_level(logging.ERROR, logger="netring"):
        handle = pool.call_every(0.02, tick)
        assert wait_until(lambda: len(ticks) >= 5, 5)
        handle.cancel()
    n = len(ticks)
    time.sleep(0.1)
    assert len(ticks) <= n + 1
    gaps = [b - a for a, b in itertools.pairwise(ticks)]
    assert min(gaps) >= 0.01
    assert any("timer callback" in r.getMessage() for r in caplog.records)


def test_call_at_uses_the_monotonic_clock(pool: netring.IOPool) -> None:
    done = threading.Event()
    when = time.monotonic() + 0.05
    pool.call_at(when, done.set)
    assert done.wait(5)
    assert time.monotonic() >= when


def test_thousands_of_timers_cost_no_threads(pool: netring.IOPool) -> None:
    threads = thread_ids()
    count = [0]
    lock = threading.Lock()

    def cb() -> None:
        with lock:
            count[0] += 1

    for i in range(5000):
        pool.call_later(0.001 * (i % 50), cb)
    assert not thread_ids() - threads
    assert wait_until(lambda: count[0] == 5000, 10)


def test_timer_arguments_are_checked(pool: netring.IOPool) -> None:
    with pytest.raises(ValueError, match="delay"):
        pool.call_later(-1, print)
    with pytest.raises(ValueError, match="delay"):
        pool.call_later(1e300, print)  # beyond the engine's clock
    with pytest.raises(ValueError, match="interval"):
        pool.call_every(0, print)
    with pytest.raises(TypeError, match="callback"):
        pool.call_later(1, "print")  # type: ignore[arg-type]


def test_idle_connection_is_closed_after_idle_timeout(backend: str) -> None:
    protos: list[Any] = []
    server = netring.Server(factory_of(Recorder, protos), backend=backend, idle_timeout=0.2)
    with server, connect(server) as silent, connect(server) as chatty:
        t0 = time.monotonic()
        for _ in range(8):
            chatty.sendall(b".")
            time.sleep(0.05)
        assert recv_until_eof(silent) == b""
        assert time.monotonic() - t0 >= 0.19
        assert wait_until(lambda: sum(p.lost.is_set() for p in protos) == 1)
        chatty.sendall(b"still here")
        assert wait_until(lambda: any(p.data.endswith(b"still here") for p in protos))


class Pinger(Recorder):
    """Keeps the connection: pings on each idle period instead of closing."""

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        transport.set_idle_timeout(0.05)

    def timeout_received(self) -> None:
        self.transport.write(b"ping\n")


def test_timeout_received_can_keep_the_connection_and_fires_again(backend: str) -> None:
    with netring.Server(Pinger, backend=backend) as server, connect(server) as s:
        assert recv_exactly(s, 15) == b"ping\nping\nping\n"


def test_idle_timeout_must_be_positive() -> None:
    with pytest.raises(ValueError, match="idle_timeout"):
        netring.Server(Echo, idle_timeout=0)


def keepalive_timer(port_filter: str) -> str:
    """The kernel's timer column for established sockets matching the
    filter (``ss -tno``): 'keepalive' appears only when SO_KEEPALIVE is on."""
    out = subprocess.run(["ss", "-tnoH", "state", "established", port_filter],
                         capture_output=True, text=True, timeout=10, check=True).stdout
    return out


@pytest.mark.skipif(shutil.which("ss") is None, reason="ss (iproute2) not installed")
def test_keepalive_is_set_on_accepted_and_outbound_sockets(backend: str) -> None:
    with netring.IOPool(io_threads=1, backend=backend) as pool:
        server = netring.Server(Recorder, pool=pool, keepalive=(30, 5, 4))
        plain = netring.Server(Recorder, pool=pool)
        server.start()
        plain.start()
        with connect(server), connect(plain):
            assert wait_until(lambda: pool.stats()["connections_open"] == 2)
            assert "keepalive" in keepalive_timer(f"( sport = :{server.port} )")
            assert "keepalive" not in keepalive_timer(f"( sport = :{plain.port} )")
        with socket.create_server(("127.0.0.1", 0)) as listener:
            port = listener.getsockname()[1]
            fut = pool.connect(Recorder, "127.0.0.1", port, keepalive=(20, 3, 2))
            peer, _ = listener.accept()
            with peer:
                fut.result(5)
                assert "keepalive" in keepalive_timer(f"( dport = :{port} )")
    with pytest.raises(TypeError, match="keepalive"):
        netring.Server(Echo, keepalive=30)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keepalive"):
        netring.Server(Echo, keepalive=(0.5, 1, 3))
