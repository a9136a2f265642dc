"""Echo end to end: many connections, large and many writes, asyncio protocols."""

from __future__ import annotations

import asyncio
import socket
import struct
import threading

import netring
from conftest import connect, recv_exactly, recv_until_eof, serving
from netring.servers.echo import Echo


def test_thousand_connections_each_echo_hundred_messages(backend: str) -> None:
    n_conns, n_msgs = 1000, 100

    async def client(i: int, port: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        for m in range(n_msgs):
            msg = struct.pack(">II", i, m) + bytes([m % 256]) * (m % 50)
            writer.write(msg)
            got = await reader.readexactly(len(msg))
            assert got == msg, (i, m)
        writer.close()
        await writer.wait_closed()

    async def main(port: int) -> None:
        await asyncio.wait_for(asyncio.gather(*(client(i, port) for i in range(n_conns))), 60)

    with serving(Echo, backend) as server:
        asyncio.run(main(server.port))
        stats = server.stats()
        assert stats["connections_accepted"] == n_conns
        assert stats["bytes_in"] == stats["bytes_out"] > n_conns * n_msgs * 8


class BigWriter(netring.Protocol):
    size = 64 * 1024 * 1024

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        payload = bytes(range(256)) * (self.size // 256)
        transport.write(payload)
        transport.close()


def test_64_mib_write_arrives_whole_and_in_order(backend: str) -> None:
    with serving(BigWriter, backend) as server, connect(server, timeout=30) as s:
        got = recv_until_eof(s)
    assert len(got) == BigWriter.size
    assert got == bytes(range(256)) * (BigWriter.size // 256)


class ManySmall(netring.Protocol):
    count = 100_000

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        for i in range(self.count):
            transport.write(struct.pack(">I", i))
        transport.close()


def test_hundred_thousand_small_writes_keep_their_order(backend: str) -> None:
    with serving(ManySmall, backend) as server, connect(server) as s:
        got = recv_until_eof(s)
    assert len(got) == 4 * ManySmall.count
    numbers = struct.unpack(f">{ManySmall.count}I", got)
    assert numbers == tuple(range(ManySmall.count))


class TwoWriters(netring.Protocol):
    """The IO thread writes 'A' records on data; a second thread writes
    'B' records; each stream must arrive complete and in its own order."""

    n = 20_000

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.sent_a = 0
        self.worker = threading.Thread(target=self._write_b)
        self.worker.start()

    def _write_b(self) -> None:
        for i in range(self.n):
            self.transport.write(b"B" + struct.pack(">I", i))

    def data_received(self, data: bytes) -> None:
        for _ in data:
            if self.sent_a < self.n:
                self.transport.write(b"A" + struct.pack(">I", self.sent_a))
                self.sent_a += 1


def test_writes_from_another_thread_interleave_without_loss(backend: str) -> None:
    with serving(TwoWriters, backend) as server, connect(server) as s:
        got = b""
        sent = 0
        while len(got) < 2 * TwoWriters.n * 5:
            if sent < TwoWriters.n:
                step = min(1000, TwoWriters.n - sent)
                s.sendall(b"x" * step)
                sent += step
            s.settimeout(10)
            got += s.recv(1 << 16)
    records = [got[i:i + 5] for i in range(0, len(got), 5)]
    a = [struct.unpack(">I", r[1:])[0] for r in records if r[:1] == b"A"]
    b = [struct.unpack(">I", r[1:])[0] for r in records if r[:1] == b"B"]
    assert a == list(range(TwoWriters.n))
    assert b == list(range(TwoWriters.n))


class AsyncioEcho(asyncio.Protocol):
    """A plain asyncio protocol, unaware of netring."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        assert isinstance(transport.get_extra_info("peername"), tuple)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data.upper())  # type: ignore[attr-defined]

    def eof_received(self) -> bool:
        self.transport.write(b"BYE")  # type: ignore[attr-defined]
        return False


def test_stdlib_asyncio_protocol_serves_unchanged(backend: str) -> None:
    with serving(AsyncioEcho, backend) as server, connect(server) as s:
        s.sendall(b"hello")
        assert recv_exactly(s, 5) == b"HELLO"
        s.shutdown(socket.SHUT_WR)
        assert recv_until_eof(s) == b"BYE"
