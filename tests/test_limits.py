"""Limits that keep one peer (or a flood) from taking the server: connection
limits under a connect burst, the hard write cap for peers that never read,
and frame_timeout against slowloris. Every test on each backend."""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from typing import Any, ClassVar

import netring
import pytest
from conftest import connect, recv_exactly, serving, wait_until

pytestmark = pytest.mark.timeout(90)

IP_BIND_ADDRESS_NO_PORT = 24  # linux/in.h


class Counting(netring.Protocol):
    """Echoes; counts connections open at once across all instances."""

    lock = threading.Lock()
    open = 0
    peak = 0
    made = 0

    @classmethod
    def reset(cls) -> None:
        cls.open = cls.peak = cls.made = 0

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        cls = type(self)
        with cls.lock:
            cls.open += 1
            cls.made += 1
            cls.peak = max(cls.peak, cls.open)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        cls = type(self)
        with cls.lock:
            cls.open -= 1


def burst(port: int, n: int, *, echo: bool, deadline: float = 60.0,
          sources: tuple[str, ...] = ("127.0.0.1",)) -> tuple[int, int]:
    """Open ``n`` connections at once (non-blocking); with ``echo`` each sends
    one byte, waits for it back and closes. Returns (echoed, closed by the
    server without an echo)."""
    sel = selectors.DefaultSelector()
    socks = []
    for i in range(n):
        s = socket.socket()
        s.setblocking(False)
        if len(sources) > 1:
            # Pick the port at connect time, not bind time (no exhaustion).
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind((sources[i % len(sources)], 0))
        s.connect_ex(("127.0.0.1", port))
        sel.register(s, selectors.EVENT_WRITE)
        socks.append(s)
    echoed = refused = 0
    sent: set[socket.socket] = set()
    end = time.monotonic() + deadline
    while sel.get_map() and time.monotonic() < end:
        for key, events in sel.select(0.5):
            s = key.fileobj
            assert isinstance(s, socket.socket)
            if events & selectors.EVENT_WRITE and s not in sent:
                if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                    refused += 1
                    sel.unregister(s)
                    s.close()
                    continue
                sent.add(s)
                if echo:
                    try:
                        s.send(b"x")
                    except OSError:
                        refused += 1
                        sel.unregister(s)
                        s.close()
                        continue
                sel.modify(s, selectors.EVENT_READ)
                continue
            try:
                data = s.recv(16)
            except OSError:
                data = b""
            if data == b"x":
                echoed += 1
            else:
                refused += 1
            sel.unregister(s)
            s.close()
    for s in socks:
        s.close()
    return echoed, refused


def test_max_connections_holds_exactly_under_a_burst_of_5000(backend: str) -> None:
    Counting.reset()
    with serving(Counting, backend, io_threads=2, max_connections=50,
                 backlog=4096) as server:
        echoed, refused = burst(server.port, 5000, echo=True)
        assert (echoed, refused) == (5000, 0)  # everyone served, in turn
        assert Counting.peak == 50  # never more at once, and the limit was reached
        assert server.stats()["connections_refused"] == 0


class Holding(Counting):
    """Keeps connections open and says nothing."""

    def data_received(self, data: bytes) -> None:
        pass


def test_overflow_close_accepts_and_closes_the_extra_ones(backend: str) -> None:
    Holding.reset()
    with serving(Holding, backend, max_connections=50, overflow="close",
                 backlog=4096) as server:
        result: list[tuple[int, int]] = []
        t = threading.Thread(target=lambda: result.append(
            burst(server.port, 2000, echo=False, deadline=8.0)))
        t.start()
        assert wait_until(lambda: server.stats()["connections_refused"] == 1950, 30)
        assert Holding.made == 50 and Holding.peak == 50
        t.join(30)
        assert result[0][1] == 1950  # closed by the server; 50 stay open


def test_max_connections_per_ip_closes_extra_ones_from_that_address(backend: str) -> None:
    Holding.reset()
    with serving(Holding, backend, max_connections_per_ip=3) as server:
        clients = [socket.create_connection(server.address, timeout=5,
                                            source_address=(src, 0))
                   for src in ("127.0.0.1", "127.0.0.2") for _ in range(5)]
        closed = 0
        try:
            assert wait_until(lambda: server.stats()["connections_refused"] == 4, 10)
            # NOTE: refusals are counted where the listener accepts; the
            # admitted connections' connection_made runs on the IO thread
            # each was handed to, possibly a moment later.
            assert wait_until(lambda: Holding.made == 6, 5), Holding.made
            for c in clients:
                c.settimeout(0.5)
                try:
                    closed += c.recv(1) == b""
                except TimeoutError:
                    pass
                except ConnectionResetError:
                    closed += 1
        finally:
            for c in clients:
                c.close()
        assert closed == 4
        # Room again once they close.
        assert wait_until(lambda: Holding.open == 0, 10)
        with socket.create_connection(server.address, timeout=5) as c:
            assert wait_until(lambda: Holding.made == 7, 5)


class Flooder(netring.Protocol):
    """Writes `total` bytes to a peer that never reads, ignoring
    pause_writing (a handler bug the hard cap must contain)."""

    lost: ClassVar[list[BaseException | None]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if data.startswith(b"flood"):
            chunk = b"f" * (1 << 20)
            for _ in range(32):
                self.transport.write(chunk)
        else:
            self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        Flooder.lost.append(exc)


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


def test_a_peer_that_never_reads_is_aborted_at_max_write_buffer(
        backend: str, caplog: pytest.LogCaptureFixture) -> None:
    Flooder.lost = []
    limit = 4 << 20
    with serving(Flooder, backend, max_write_buffer=limit) as server:
        rss0 = rss_bytes()
        stuck = connect(server)
        stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
        stuck.sendall(b"flood")
        assert wait_until(lambda: Flooder.lost, 10)
        assert isinstance(Flooder.lost[0], netring.WriteBufferLimitError)
        assert "max_write_buffer" in caplog.text
        # The peer gets nothing beyond what the kernel already had: far less
        # than the 32 MiB written.
        got = 0
        stuck.settimeout(2)
        try:
            while chunk := stuck.recv(1 << 20):
                got += len(chunk)
        except (ConnectionResetError, TimeoutError):
            pass
        assert got < limit
        assert rss_bytes() - rss0 < 3 * limit + (16 << 20)
        # Another connection is unaffected.
        with connect(server) as other:
            other.sendall(b"fine")
            assert recv_exactly(other, 4) == b"fine"
        stuck.close()


class Lines(netring.Protocol):
    lost: ClassVar[list[BaseException | None]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def packet_received(self, packet: bytes) -> None:
        self.transport.send_packet(packet)

    def connection_lost(self, exc: BaseException | None) -> None:
        Lines.lost.append(exc)


@pytest.mark.parametrize("framing", [
    netring.LengthPrefixed(header_size=4), netring.Delimited(b"\r\n")])
def test_slowloris_is_closed_at_frame_timeout(backend: str, framing: Any) -> None:
    Lines.lost = []
    with serving(Lines, backend, framing=framing, frame_timeout=0.5) as server:
        whole = (struct.pack(">I", 4) + b"ping" if isinstance(framing, netring.LengthPrefixed)
                 else b"ping\r\n")
        # A slow but honest client: whole packets, far apart, stays open.
        honest = connect(server)
        for _ in range(3):
            honest.sendall(whole)
            assert recv_exactly(honest, len(whole)) == whole
            time.sleep(0.4)
        # A slowloris: one byte of a packet every 100 ms.
        slow = connect(server)
        started = time.monotonic()
        closed_after = None
        for b in whole[:-1] * 4:
            try:
                slow.sendall(bytes([b]))
            except OSError:
                closed_after = time.monotonic() - started
                break
            if wait_until(lambda: len(Lines.lost) == 1, 0.1):
                closed_after = time.monotonic() - started
                break
        assert closed_after is not None and 0.45 <= closed_after < 1.5, closed_after
        assert isinstance(Lines.lost[0], netring.FrameTimeoutError)
        honest.sendall(whole)
        assert recv_exactly(honest, len(whole)) == whole
        honest.close()
        slow.close()


def test_limit_arguments_are_checked_at_construction() -> None:
    with pytest.raises(netring.ConfigurationError, match="max_connections"):
        netring.Server(Counting, max_connections=0)
    with pytest.raises(TypeError, match="max_connections_per_ip"):
        netring.Server(Counting, max_connections_per_ip="3")  # type: ignore[arg-type]
    with pytest.raises(netring.ConfigurationError, match="overflow"):
        netring.Server(Counting, max_connections=3, overflow="drop")
    with pytest.raises(netring.ConfigurationError, match="max_write_buffer"):
        netring.Server(Counting, max_write_buffer=0)
    with pytest.raises(netring.ConfigurationError, match="frame_timeout"):
        netring.Server(Counting, frame_timeout=0)


def test_outbound_connections_take_the_same_limits(backend: str) -> None:
    Flooder.lost = []
    with netring.IOPool(io_threads=1, backend=backend) as pool:
        listener = socket.socket()
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        future = pool.connect(Flooder, "127.0.0.1", listener.getsockname()[1],
                              max_write_buffer=1 << 20, frame_timeout=5.0)
        peer, _ = listener.accept()  # never reads
        _transport, protocol = future.result(5)
        protocol.data_received(b"flood")  # from this thread: via the mailbox
        assert wait_until(lambda: Flooder.lost, 10)
        assert isinstance(Flooder.lost[0], netring.WriteBufferLimitError)
        with pytest.raises(netring.ConfigurationError, match="max_write_buffer"):
            pool.connect(Flooder, "127.0.0.1", 9, max_write_buffer=0)
        peer.close()
        listener.close()


class Mirror(netring.Protocol):
    """Echoes without ever pausing (relies on the engine's memory cap)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def _send_all(sock: socket.socket, data: bytes) -> None:
    with contextlib.suppress(OSError):  # closed by a failing test's cleanup
        sock.sendall(data)


def test_max_buffer_memory_pauses_readers_and_the_server_stays_responsive(
        backend: str) -> None:
    cap = 2 << 20
    size = 16 << 20  # more than the kernel buffers both ways hold
    # What may still arrive after the cap is crossed is what the receive
    # buffers hold (received, not yet delivered): at most all of them, on
    # each IO thread, for the turn that crosses and the one that pauses.
    buffers, buffer_size, threads = 16, 16 << 10, 2
    in_flight = 2 * threads * buffers * buffer_size
    with serving(Mirror, backend, max_buffer_memory=cap, io_threads=threads,
                 buffers_per_thread=buffers, buffer_size=buffer_size) as server:
        clients = []
        for _ in range(8):
            c = socket.socket()
            c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32768)  # before connect
            c.settimeout(30)
            c.connect(server.address)
            clients.append(c)
        try:
            payloads = [bytes([i]) * size for i in range(len(clients))]
            senders = [threading.Thread(target=_send_all, args=(c, p))
                       for c, p in zip(clients, payloads, strict=True)]
            for t in senders:
                t.start()
            # Nobody reads: the engine buffers up to the cap, then stops reading
            # those peers (TCP flow control holds the rest in the clients).
            samples = []
            for _ in range(20):
                time.sleep(0.05)
                samples.append(server.stats()["buffer_memory"])
            assert max(samples) >= cap // 2, samples  # it did fill up
            # ... and stopped near it: over by at most what was in flight.
            assert max(samples) <= cap + in_flight, samples
            assert all(t.is_alive() for t in senders)  # the senders are held back
            # A client holding nothing is still served.
            with connect(server) as fresh:
                fresh.sendall(b"still here")
                assert recv_exactly(fresh, 10) == b"still here"
            # Everyone reads: every byte comes back, in order, and memory drains.
            results: list[bool] = [False] * len(clients)

            def read_all(i: int) -> None:
                results[i] = recv_exactly(clients[i], size) == payloads[i]

            readers = [threading.Thread(target=read_all, args=(i,)) for i in range(len(clients))]
            for t in readers:
                t.start()
            for t in senders + readers:
                t.join(60)
            assert all(results)
            assert wait_until(lambda: server.stats()["buffer_memory"] == 0, 10)
        finally:
            for c in clients:
                c.close()


def test_frame_errors_timeouts_and_write_aborts_are_counted(backend: str) -> None:
    class Silent(netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def packet_received(self, packet: bytes) -> None:
            if packet == b"flood":
                self.transport.write(b"x" * 200_000)  # over max_write_buffer at once

    framing = netring.LengthPrefixed(4, max_packet=100)
    with serving(Silent, backend, framing=framing, frame_timeout=0.2,
                 max_write_buffer=100_000) as server:
        for payload in (b"\x00\x00\x10\x00",                  # 4096 declared: oversize
                        b"\x00\x00\x00\x05ab",                # then silence: frame timeout
                        b"\x00\x00\x00\x05flood"):            # a write over the cap
            with socket.create_connection(server.address, timeout=10) as s:
                s.sendall(payload)
                try:
                    while s.recv(65536):
                        pass
                except ConnectionResetError:
                    pass
        stats = server.stats()
    assert stats["frame_errors_oversize"] == 1
    assert stats["frame_timeouts"] == 1
    assert stats["write_buffer_aborts"] == 1
    assert stats["frame_errors_malformed"] == 0
