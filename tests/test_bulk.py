"""Bulk data (#17): large writes sent from the caller's own objects, reads of
a stream joined into large ``data_received`` calls, large packets."""

from __future__ import annotations

import os
import socket
import struct
import sys
import threading
import time
from typing import Any, ClassVar

import netring
import pytest
from conftest import connect, recv_exactly, serving, wait_until

MIB = 1 << 20


def pattern(n: int, seed: int) -> bytes:
    """n bytes that differ with the seed and the position (catches reordering)."""
    block = bytes((seed * 131 + i * 7) & 0xFF for i in range(4093))
    return (block * (n // len(block) + 1))[:n]


class Sender(netring.Protocol):
    """Writes `plan` (a list of objects for write/writelines/send_packet) on connect."""

    plan: ClassVar[list] = []

    def connection_made(self, transport: netring.Transport) -> None:
        for kind, obj in self.plan:
            if kind == "write":
                transport.write(obj)
            elif kind == "writelines":
                transport.writelines(obj)
            else:
                transport.send_packet(obj)
        transport.close()


def test_large_writes_arrive_intact_and_in_order(backend: str) -> None:
    big = pattern(5 * MIB, 1)
    base = pattern(3 * MIB, 2)
    view = memoryview(base)[100 : 100 + 2 * MIB]  # a slice of a bytes: sent in place
    arr = bytearray(pattern(64 * 1024, 3))  # mutable: copied
    small = [b"a" * 10, pattern(20_000, 4), b"b" * 7]
    plan = [
        ("write", b"head"),
        ("write", big),
        ("write", view),
        ("write", arr),
        ("writelines", small),
        ("write", memoryview(big)[::2]),  # strided: copied
    ]
    expect = b"head" + big + bytes(view) + bytes(arr) + b"".join(small) + big[::2]

    class Plan(Sender):
        pass

    Plan.plan = plan
    with serving(Plan, backend) as server:
        with connect(server) as c:
            got = recv_exactly(c, len(expect))
            assert c.recv(1) == b""
    assert got == expect


def test_large_packets_are_framed_around_the_payload(backend: str) -> None:
    payloads = [pattern(n, i) for i, n in enumerate([1, 9000, MIB, 3 * MIB + 5, 0])]

    class Packets(Sender):
        pass

    Packets.plan = [("packet", p) for p in payloads]
    Packets.plan.insert(2, ("packet", memoryview(payloads[3])[5:]))
    expect_payloads = [*payloads[:2], payloads[3][5:], *payloads[2:]]
    framing = netring.LengthPrefixed(header_size=4)
    with serving(Packets, backend, framing=framing) as server:
        with connect(server) as c:
            for want in expect_payloads:
                (n,) = struct.unpack(">I", recv_exactly(c, 4))
                assert n == len(want)
                assert recv_exactly(c, n) == want


ZEROCOPY = [None, 64 * 1024]


@pytest.mark.parametrize("zerocopy", ZEROCOPY)
def test_written_bytes_are_released_once_sent(backend: str, zerocopy: int | None) -> None:
    """A large bytes is queued by reference; the reference goes once sent
    (zero-copy: once the kernel's notification says it is done with it)."""
    payload = os.urandom(4 * MIB)
    before = sys.getrefcount(payload)
    during: list[int] = []

    class Once(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:
            transport.write(payload)
            during.append(sys.getrefcount(payload))

    with serving(Once, backend, zerocopy_threshold=zerocopy) as server:
        with connect(server) as c:
            assert wait_until(lambda: during)
            assert during[0] > before, "the engine holds no reference: it copied"
            assert recv_exactly(c, len(payload)) == payload
            # Released by the IO thread after the last byte went; the decref
            # itself runs the next time a thread enters netring.
            # stats() enters netring, where pending decrefs run.
            assert wait_until(lambda: bool(server.stats()) and sys.getrefcount(payload) == before)


@pytest.mark.parametrize("zerocopy", ZEROCOPY)
def test_aborted_connection_releases_queued_bytes(backend: str, zerocopy: int | None) -> None:
    payload = os.urandom(8 * MIB)
    before = sys.getrefcount(payload)
    transports: list[netring.Transport] = []

    class Stuck(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:
            transports.append(transport)
            transport.set_write_buffer_limits(high=64 * MIB)
            transport.write(payload)  # the client never reads: most stays queued

    with serving(Stuck, backend, zerocopy_threshold=zerocopy) as server:
        with connect(server) as c:
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            assert wait_until(lambda: transports)
            assert sys.getrefcount(payload) > before
            transports[0].abort()
            # stats() enters netring, where pending decrefs run.
            assert wait_until(lambda: bool(server.stats()) and sys.getrefcount(payload) == before)


def test_zero_copy_sends_arrive_intact_and_stop_where_the_kernel_copies(backend: str) -> None:
    """With zerocopy_threshold, large sends go zero-copy (io_uring's SEND_ZC,
    epoll's MSG_ZEROCOPY); on loopback the kernel copies anyway and says so, and each connection
    then sends normally. Every byte arrives, in order, on every connection."""
    payloads = [pattern(3 * MIB + i * 1000, i) for i in range(4)]
    expect = b"".join(payloads) + b"end"

    class Many(Sender):
        pass

    Many.plan = [*(("write", p) for p in payloads), ("write", b"end")]
    conns = 6
    with serving(Many, backend, zerocopy_threshold=64 * 1024) as server:
        got: list[bytes] = []

        def fetch() -> None:
            with connect(server) as c:
                got.append(recv_exactly(c, len(expect)))
                assert c.recv(1) == b""

        threads = [threading.Thread(target=fetch) for _ in range(conns)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert got == [expect] * conns
        stats = server.stats()
        assert wait_until(lambda: server.stats()["connections_open"] == 0)
        stats = server.stats()
    zc = stats["zerocopy_sends"] + stats["zerocopy_copied"]
    assert zc > 0


def test_a_connection_whose_zero_copy_send_was_copied_sends_normally(backend: str) -> None:
    """The notification of a send the kernel copied (loopback: always)
    turns zero-copy off for that connection: later sends are plain."""
    first, rest = pattern(2 * MIB, 1), [pattern(3 * MIB, i) for i in range(2, 5)]

    class Phases(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:
            self.transport = transport
            transport.write(first)

        def data_received(self, data: bytes) -> None:
            for p in rest:
                self.transport.write(p)

    def counted() -> int:
        s = server.stats()
        return int(s["zerocopy_sends"] + s["zerocopy_copied"])

    def steady() -> bool:
        before = counted()
        time.sleep(0.1)
        return counted() == before

    with serving(Phases, backend, zerocopy_threshold=64 * 1024) as server:
        with connect(server) as c:
            assert recv_exactly(c, len(first)) == first
            # Read: the kernel copied it, and says so.
            assert wait_until(lambda: server.stats()["zerocopy_copied"] >= 1)
            assert wait_until(steady)  # every notification of those sends is in
            settled = counted()
            c.sendall(b"next")
            assert recv_exactly(c, 9 * MIB) == b"".join(rest)
        assert wait_until(lambda: server.stats()["connections_open"] == 0)
        assert counted() == settled, "9 MiB more, and not one zero-copy send"


def test_a_connection_closed_with_zero_copy_sends_unread_delivers_them_then_releases(
    backend: str,
) -> None:
    """The connection ends (its close is over: the peer half-closed) while
    the kernel still holds zero-copy sends the peer has not read: every
    byte still arrives, then the EOF, and the written bytes are released
    once the kernel is done with them (epoll keeps the socket open for
    their notifications; io_uring gets them without it)."""
    payload = pattern(1 * MIB, 3)
    before = sys.getrefcount(payload)
    lost: list[bool] = []

    class CloseEarly(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:
            sock = transport.get_extra_info("socket")
            # Room in the kernel for all of it: the engine's queue empties
            # and the close goes on while the peer has read nothing.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 * MIB)
            transport.write(payload)
            transport.close()

        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(True)

    with serving(CloseEarly, backend, zerocopy_threshold=64 * 1024) as server:
        with socket.socket() as c:
            # Small enough that most of the payload waits in the server's
            # kernel; not so small that the window crawls (silly-window
            # avoidance paces a 4 KiB one at ~2 KiB per 200 ms).
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
            c.settimeout(10)
            c.connect(server.address)
            assert wait_until(lambda: lost)
            c.shutdown(socket.SHUT_WR)  # the engine's lingering close ends
            assert wait_until(lambda: server.stats()["connections_open"] == 0)
            assert sys.getrefcount(payload) > before, "released before the kernel was done"
            assert recv_exactly(c, len(payload)) == payload
            assert c.recv(1) == b""
        assert wait_until(lambda: bool(server.stats()) and sys.getrefcount(payload) == before)
        stats = server.stats()
        assert stats["zerocopy_sends"] + stats["zerocopy_copied"] >= 1


def test_a_unix_socket_refuses_zero_copy_and_sends_normally(backend: str, tmp_path: Any) -> None:
    """SEND_ZC is TCP's and UDP's: a Unix socket refuses it (EOPNOTSUPP),
    and the engine sends again, normally, instead of failing the
    connection."""
    payload = pattern(4 * MIB, 9)

    class Big(Sender):
        pass

    Big.plan = [("write", payload), ("write", payload)]
    path = str(tmp_path / "zc.sock")
    server = netring.Server(Big, path=path, backend=backend, zerocopy_threshold=64 * 1024)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(path)
            assert recv_exactly(c, 2 * len(payload)) == payload * 2
            assert c.recv(1) == b""
        assert server.stats()["zerocopy_sends"] == 0
    finally:
        server.shutdown(2.0)


def test_zerocopy_threshold_is_checked() -> None:
    with pytest.raises(netring.ConfigurationError, match="zerocopy_threshold"):
        netring.IOPool(1, zerocopy_threshold=100)
    with pytest.raises(TypeError):
        netring.Server(netring.Protocol, zerocopy_threshold="64k")  # type: ignore[arg-type]


@pytest.mark.parametrize("size", [MIB, 8 * MIB])
def test_a_stream_is_delivered_in_large_reads(backend: str, size: int) -> None:
    """Reads that arrive together reach data_received as one bytes (up to
    256 KiB), not one call per 16 KiB receive buffer."""
    sizes: list[int] = []
    chunks: list[bytes] = []
    data = pattern(size, 5)

    class Counter(netring.Protocol):
        def data_received(self, chunk: bytes) -> None:
            sizes.append(len(chunk))
            chunks.append(chunk)

    with serving(Counter, backend) as server:
        with connect(server) as c:
            sender = threading.Thread(target=c.sendall, args=(data,))
            sender.start()
            assert wait_until(lambda: sum(sizes) >= size)
            sender.join()
    assert b"".join(chunks) == data
    assert max(sizes) <= 256 * 1024
    if size >= 8 * MIB:
        assert max(sizes) > 16 * 1024, "no read was joined"
        assert len(sizes) < size // (16 * 1024), sizes[:20]
