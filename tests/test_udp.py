"""UDP endpoints on an IOPool (every test on each backend): echo without
corruption, truncation reported never cut, ICMP errors, isolation, close
flushing, pause, flow control, broadcast, multicast, argument errors, and a
pool shared with TCP servers and clients."""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import netring
import pytest
from conftest import cli_server, fd_count, recv_exactly, wait_until
from netring.servers.echo import Echo

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def pool(backend: str) -> Iterator[netring.IOPool]:
    with netring.IOPool(io_threads=1, backend=backend) as p:
        yield p


class UdpEcho(netring.DatagramProtocol):
    """Echoes each datagram to its sender and records the rest."""

    def __init__(self) -> None:
        self.errors: list[Exception] = []
        self.lost: list[BaseException | None] = []
        self.threads: set[str] = set()
        self.paused = 0
        self.resumed = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.threads.add(threading.current_thread().name)
        if data == b"boom":
            raise RuntimeError("boom")
        self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        self.errors.append(exc)

    def pause_writing(self) -> None:
        self.paused += 1

    def resume_writing(self) -> None:
        self.resumed += 1

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def open_echo(pool: netring.IOPool, **kwargs: Any) -> tuple[Any, UdpEcho, tuple[str, int]]:
    transport, protocol = pool.create_datagram_endpoint(
        UdpEcho, ("127.0.0.1", 0), **kwargs).result(5)
    return transport, protocol, transport.get_extra_info("sockname")


def client(timeout: float = 5.0) -> socket.socket:
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    c.bind(("127.0.0.1", 0))
    c.settimeout(timeout)
    return c


def test_echo_of_10000_datagrams_without_corruption(pool: netring.IOPool) -> None:
    _transport, protocol, addr = open_echo(pool)
    c = client()
    for i in range(10_000):
        size = (i * 131) % 1500
        msg = (i.to_bytes(4, "big") * (size // 4 + 1))[:size]
        c.sendto(msg, addr)
        data, src = c.recvfrom(4096)
        assert src == addr
        assert data == msg, f"datagram {i} corrupted"
    assert pool.stats()["datagrams_in"] >= 10_000
    assert protocol.threads and all(not t.startswith("MainThread") for t in protocol.threads)
    c.close()


def test_oversize_datagram_is_reported_truncated_never_cut(backend: str) -> None:
    with netring.IOPool(io_threads=1, backend=backend, buffer_size=1024) as pool:
        _transport, protocol, addr = open_echo(pool)
        limit = 1024 - netring._native.DATAGRAM_HEADROOM_BYTES
        c = client()
        c.sendto(b"x" * limit, addr)  # exactly the limit: whole
        assert c.recvfrom(4096)[0] == b"x" * limit
        c.sendto(b"y" * (limit + 1), addr)  # one byte over: reported
        assert wait_until(lambda: protocol.errors, 5)
        err = protocol.errors[0]
        assert isinstance(err, netring.DatagramTruncatedError)
        assert (err.size, err.limit, err.addr) == (limit + 1, limit, c.getsockname())
        c.sendto(b"after", addr)
        assert c.recvfrom(64)[0] == b"after"
        c.settimeout(0.2)
        with pytest.raises(TimeoutError):
            c.recvfrom(4096)  # nothing of the oversize one was echoed
        assert pool.stats()["datagrams_truncated"] == 1
        c.close()


def test_icmp_refusal_reaches_error_received_and_the_endpoint_goes_on(
        pool: netring.IOPool) -> None:
    gone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    gone.bind(("127.0.0.1", 0))
    gone_addr = gone.getsockname()
    gone.close()
    transport, protocol = pool.create_datagram_endpoint(
        UdpEcho, remote_addr=gone_addr).result(5)
    assert transport.get_extra_info("peername") == gone_addr
    for _ in range(3):
        transport.sendto(b"anyone?")
        time.sleep(0.02)
    assert wait_until(lambda: any(isinstance(e, ConnectionRefusedError)
                                  for e in protocol.errors), 5)
    assert not transport.is_closing() and protocol.lost == []


def test_exception_in_datagram_received_is_logged_and_isolated(
        pool: netring.IOPool, caplog: pytest.LogCaptureFixture) -> None:
    transport, _protocol, addr = open_echo(pool)
    c = client()
    with caplog.at_level(logging.ERROR, logger="netring"):
        c.sendto(b"boom", addr)
        c.sendto(b"still here", addr)
        assert c.recvfrom(64)[0] == b"still here"
    assert any("datagram_received" in r.getMessage() and str(c.getsockname()[1]) in
               r.getMessage() for r in caplog.records)
    assert not transport.is_closing()
    c.close()


def test_close_flushes_sends_from_another_thread_then_connection_lost(
        pool: netring.IOPool) -> None:
    fds = fd_count()
    c = client()
    transport, protocol = pool.create_datagram_endpoint(
        UdpEcho, ("127.0.0.1", 0), remote_addr=c.getsockname()).result(5)
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.extend(c.recv(64) for _ in range(200)))
    reader.start()
    for i in range(200):  # this thread is not an IO thread: via the mailbox
        transport.sendto(i.to_bytes(4, "big"))
        if i % 50 == 49:
            time.sleep(0.002)
    transport.close()
    reader.join(10)
    assert got == [i.to_bytes(4, "big") for i in range(200)]
    assert wait_until(lambda: protocol.lost == [None], 5)
    transport.sendto(b"after close")  # a no-op, never an error
    c.close()
    assert wait_until(lambda: fd_count() == fds, 5)


def test_pause_reading_holds_datagrams_in_the_kernel(pool: netring.IOPool) -> None:
    transport, _protocol, addr = open_echo(pool)
    c = client(timeout=0.3)
    transport.pause_reading()
    assert not transport.is_reading()
    time.sleep(0.05)
    c.sendto(b"held", addr)
    with pytest.raises(TimeoutError):
        c.recvfrom(64)
    transport.resume_reading()
    c.settimeout(5)
    assert c.recvfrom(64)[0] == b"held"
    c.close()


class Burst(UdpEcho):
    """Sends `n` datagrams per received one, from the IO thread."""

    n = 10

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        for _ in range(self.n):
            self.transport.sendto(data, addr)


def test_send_queue_water_marks_and_cap(pool: netring.IOPool) -> None:
    transport, protocol = pool.create_datagram_endpoint(
        Burst, ("127.0.0.1", 0), max_send_queue=250).result(5)
    transport.set_write_buffer_limits(high=100, low=0)
    addr = transport.get_extra_info("sockname")
    c = client()
    c.sendto(b"x" * 50, addr)
    # Inside one callback nothing reaches the kernel: 5 fit under the cap
    # of 250 bytes, 5 are dropped; crossing 100 bytes paused writing at once.
    for _ in range(5):
        assert c.recvfrom(64)[0] == b"x" * 50
    assert wait_until(lambda: pool.stats()["datagrams_dropped"] == 5, 5)
    assert protocol.paused == 1
    assert wait_until(lambda: protocol.resumed == 1, 5)
    c.close()


def test_broadcast_needs_allow_broadcast(pool: netring.IOPool) -> None:
    receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    receiver.bind(("0.0.0.0", 0))
    receiver.settimeout(5)
    target = ("127.255.255.255", receiver.getsockname()[1])
    plain, p1 = pool.create_datagram_endpoint(UdpEcho, ("127.0.0.1", 0)).result(5)
    plain.sendto(b"denied", target)
    assert wait_until(lambda: any(isinstance(e, PermissionError) for e in p1.errors), 5)
    bcast, _ = pool.create_datagram_endpoint(
        UdpEcho, ("127.0.0.1", 0), allow_broadcast=True).result(5)
    bcast.sendto(b"to all", target)
    assert receiver.recvfrom(64)[0] == b"to all"
    receiver.close()


def test_multicast_group_join(pool: netring.IOPool) -> None:
    group = "239.77.1.2"
    transport, _protocol = pool.create_datagram_endpoint(
        UdpEcho, ("0.0.0.0", 0), multicast_groups=[(group, "127.0.0.1")],
        multicast_loop=True).result(5)
    port = transport.get_extra_info("sockname")[1]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                      socket.inet_aton("127.0.0.1"))
    sender.bind(("127.0.0.1", 0))
    sender.settimeout(5)
    sender.sendto(b"to the group", (group, port))
    data, _ = sender.recvfrom(64)  # echoed back to the sender's address
    assert data == b"to the group"
    sender.close()


def test_argument_errors_are_precise(pool: netring.IOPool) -> None:
    cdep = pool.create_datagram_endpoint
    with pytest.raises(netring.ConfigurationError, match="local_addr"):
        cdep(UdpEcho)
    with pytest.raises(TypeError, match="local_addr"):
        cdep(UdpEcho, "127.0.0.1:0")  # type: ignore[arg-type]
    with pytest.raises(netring.ConfigurationError, match="remote_addr: port"):
        cdep(UdpEcho, remote_addr=("127.0.0.1", 0))
    with pytest.raises(netring.ConfigurationError, match="not a multicast address"):
        cdep(UdpEcho, ("0.0.0.0", 0), multicast_groups=["10.0.0.1"])
    with pytest.raises(TypeError, match="allow_broadcast"):
        cdep(UdpEcho, ("127.0.0.1", 0), allow_broadcast=1)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="protocol_factory"):
        cdep(None, ("127.0.0.1", 0))  # type: ignore[arg-type]
    taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    taken.bind(("127.0.0.1", 0))
    with pytest.raises(OSError):  # EADDRINUSE, raised at the call
        cdep(UdpEcho, taken.getsockname())
    taken.close()
    transport, _, _ = open_echo(pool)
    with pytest.raises(ValueError, match="addr: required"):
        transport.sendto(b"x")
    with pytest.raises(ValueError, match="not an IP address"):
        transport.sendto(b"x", ("localhost", 9))
    with pytest.raises(TypeError, match="addr"):
        transport.sendto(b"x", "127.0.0.1:9")
    with pytest.raises(TypeError, match="bytes-like"):
        transport.sendto("text", ("127.0.0.1", 9))
    c = client()
    connected, _ = cdep(UdpEcho, remote_addr=c.getsockname()).result(5)
    with pytest.raises(ValueError, match="must be None or"):
        connected.sendto(b"x", ("127.0.0.1", 9))
    c.close()


def test_a_host_name_is_resolved_off_the_io_threads(pool: netring.IOPool) -> None:
    c = client()
    transport, _ = pool.create_datagram_endpoint(
        UdpEcho, ("localhost", 0), remote_addr=("localhost", c.getsockname()[1])).result(5)
    transport.sendto(b"by name")
    assert c.recvfrom(64)[0] == b"by name"
    c.close()


def test_tcp_servers_clients_and_udp_share_one_pool_and_close_together(backend: str) -> None:
    fds = fd_count()
    pool = netring.IOPool(io_threads=2, backend=backend)
    tcp = netring.Server(Echo, pool=pool)
    tcp.start()
    _udp_t, udp_p, udp_addr = open_echo(pool)
    _udp_t2, _, udp_addr2 = open_echo(pool)

    class Client(netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport
            self.got = b""

        def data_received(self, data: bytes) -> None:
            self.got += data

    ct, cp = pool.connect(Client, "127.0.0.1", tcp.port).result(5)
    ct.write(b"via the pool")
    c = client()
    tc = socket.create_connection(tcp.address, timeout=5)
    for i in range(100):  # all at once
        c.sendto(b"u%d" % i, udp_addr if i % 2 else udp_addr2)
        assert c.recvfrom(64)[0] == b"u%d" % i
        tc.sendall(struct.pack(">I", i))
        assert recv_exactly(tc, 4) == struct.pack(">I", i)
    assert wait_until(lambda: cp.got == b"via the pool", 5)
    tc.close()
    c.close()
    pool.close(1.0)
    assert udp_p.lost == [None]
    assert wait_until(lambda: fd_count() == fds, 5)


def test_cli_serves_echo_packet_echo_and_udp_echo_in_one_process(backend: str) -> None:
    import signal

    names = ("echo", "packet-echo", "udp-echo")
    with cli_server(*names, backend=backend) as cli:
        ports = cli.ports
        assert cli.ready == [f"netring: serving {name} on 127.0.0.1:{ports[name]} "
                             f"(backend={backend}, io_threads=1)" for name in names]
        with socket.create_connection(("127.0.0.1", ports["echo"]), timeout=5) as s:
            s.sendall(b"tcp")
            assert recv_exactly(s, 3) == b"tcp"
        with socket.create_connection(("127.0.0.1", ports["packet-echo"]), timeout=5) as s:
            s.sendall(struct.pack(">I", 6) + b"packet")
            assert recv_exactly(s, 10) == struct.pack(">I", 6) + b"packet"
        c = client()
        c.sendto(b"datagram", ("127.0.0.1", ports["udp-echo"]))
        assert c.recvfrom(64)[0] == b"datagram"
        c.close()
        assert cli.stop(signal.SIGTERM) == 0


def test_many_senders_past_the_address_cache(pool: netring.IOPool) -> None:
    """Replies go to the right sender whatever the number of senders (the
    endpoint's address cache starts over past 1,024 of them)."""
    _transport, _protocol, addr = open_echo(pool)
    clients = [client() for _ in range(1100)]
    for rounds in range(2):
        for start in range(0, len(clients), 50):  # 50 at a time: no kernel drops
            batch = list(enumerate(clients))[start:start + 50]
            for i, c in batch:
                c.sendto(b"%d/%d" % (rounds, i), addr)
            for i, c in batch:
                assert c.recvfrom(64)[0] == b"%d/%d" % (rounds, i)
    for c in clients:
        c.close()
