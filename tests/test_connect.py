"""Outbound TCP from the pool's IO threads: success, refused, timed out,
resolving a name; nothing leaks (every test on each backend)."""

from __future__ import annotations

import socket
import time
from typing import Any

import netring
import pytest
from conftest import Recorder, fd_count, recv_exactly, wait_until
from netring.servers.echo import Echo


@pytest.fixture
def pool(backend: str) -> Any:
    with netring.IOPool(io_threads=2, backend=backend) as p:
        yield p


class Client(Recorder):
    pass


def fill_backlog(listener: socket.socket) -> list[socket.socket]:
    """Queue connections that are never accepted: further SYNs are dropped."""
    fillers = []
    for _ in range(8):
        c = socket.socket()
        c.setblocking(False)
        c.connect_ex(listener.getsockname())
        fillers.append(c)
    time.sleep(0.2)
    return fillers


def test_connect_to_a_server_on_the_same_pool(pool: netring.IOPool) -> None:
    server = netring.Server(Echo, pool=pool)
    server.start()
    transport, protocol = pool.connect(Client, "127.0.0.1", server.port).result(5)
    assert isinstance(protocol, Client) and protocol.transport is transport
    assert transport.get_extra_info("peername") == ("127.0.0.1", server.port)
    transport.write(b"round trip")
    assert wait_until(lambda: protocol.data == b"round trip")
    transport.close()
    assert protocol.lost.wait(5) and protocol.exc is None
    assert pool.stats()["connections_connected"] == 1
    server.shutdown(1)


def test_connect_with_framing_behaves_as_an_accepted_connection(pool: netring.IOPool) -> None:
    got: list[bytes] = []

    class Lines(Recorder):
        def packet_received(self, packet: bytes) -> None:
            got.append(packet)

    with socket.create_server(("127.0.0.1", 0)) as listener:
        fut = pool.connect(Lines, "127.0.0.1", listener.getsockname()[1],
                           framing=netring.Delimited(b"\n"))
        peer, _ = listener.accept()
        with peer:
            transport, _ = fut.result(5)
            peer.sendall(b"one\ntw")
            peer.sendall(b"o\n")
            assert wait_until(lambda: got == [b"one", b"two"])
            transport.send_packet(b"reply")
            peer.settimeout(5)
            assert recv_exactly(peer, 6) == b"reply\n"


def test_refused_connect_fails_the_future_and_leaks_nothing(pool: netring.IOPool) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, not listening: connects are refused
        fds = fd_count()
        fut = pool.connect(Client, "127.0.0.1", port)
        with pytest.raises(ConnectionRefusedError):
            fut.result(5)
        assert wait_until(lambda: fd_count() == fds, 5)
        assert pool.stats()["connections_open"] == 0


def test_connect_times_out_against_a_full_backlog(pool: netring.IOPool) -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = fill_backlog(listener)
        fds = fd_count()
        t0 = time.monotonic()
        fut = pool.connect(Client, *listener.getsockname(), timeout=0.3)
        with pytest.raises(TimeoutError):
            fut.result(5)
        assert 0.25 <= time.monotonic() - t0 < 3
        assert wait_until(lambda: fd_count() == fds, 5)
        for c in fillers:
            c.close()


def test_connect_resolves_localhost_off_the_io_threads(pool: netring.IOPool) -> None:
    server = netring.Server(Echo, pool=pool)
    server.start()
    transport, protocol = pool.connect(Client, "localhost", server.port).result(5)
    transport.write(b"name")
    assert wait_until(lambda: protocol.data == b"name")
    transport.close()
    server.shutdown(1)


def test_unresolvable_name_fails_the_future(pool: netring.IOPool) -> None:
    with pytest.raises(socket.gaierror):
        pool.connect(Client, "no-such-host.invalid", 80).result(10)


def test_connect_arguments_are_checked(pool: netring.IOPool) -> None:
    with pytest.raises(ValueError, match="port"):
        pool.connect(Client, "127.0.0.1", 0)
    with pytest.raises(ValueError, match="timeout"):
        pool.connect(Client, "127.0.0.1", 80, timeout=-1)
    with pytest.raises(TypeError, match="framing"):
        pool.connect(Client, "127.0.0.1", 80, framing="lines")
    with pytest.raises(ValueError, match="local_addr"):
        pool.connect(Client, "127.0.0.1", 80, local_addr=("localhost", 0))


def test_pending_connect_fails_when_the_pool_closes(backend: str) -> None:
    pool = netring.IOPool(io_threads=1, backend=backend)
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        fillers = fill_backlog(listener)
        fut = pool.connect(Client, *listener.getsockname())
        pool.close(0.5)
        with pytest.raises(ConnectionAbortedError):
            fut.result(5)
        for c in fillers:
            c.close()
