"""netring inside asyncio (`netring.aio`): the running loop's thread drives
a hosted engine. Protocols that await, framed clients and servers, timers,
writes from tasks and from other threads, TLS, closing, and nothing left
behind — on both backends."""

from __future__ import annotations

import asyncio
import gc
import os
import ssl
import threading
from typing import Any

import netring
import netring.aio as aio
import pytest
from conftest import fd_count

trustme = pytest.importorskip("trustme")


@pytest.fixture
def hosted_backend(backend: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NETRING_BACKEND", backend)
    return backend


def run(coro: Any, timeout: float = 20.0, loop_factory: Any = None) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(bounded())


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_factory(request: pytest.FixtureRequest) -> Any:
    """The host loop: the stdlib's, or uvloop's."""
    if request.param == "asyncio":
        return None
    uvloop = pytest.importorskip("uvloop")
    return uvloop.new_event_loop


class AwaitingEcho(asyncio.Protocol):
    """Answers each chunk from a task that awaits first (on the loop)."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.loop = asyncio.get_running_loop()  # callbacks run inside the loop

    def data_received(self, data: bytes) -> None:
        async def answer() -> None:
            await asyncio.sleep(0.001)
            self.transport.write(data.upper())
        self.loop.create_task(answer())


def test_a_protocol_that_awaits_serves_asyncio_clients(hosted_backend: str,
                                                       loop_factory: Any) -> None:
    async def main() -> dict[str, Any]:
        server = await aio.create_server(AwaitingEcho, "127.0.0.1", 0)
        assert server.is_serving() and server.sockets[0].getsockname()[1] == server.port

        async def client(n: int) -> None:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            for i in range(50):
                msg = f"client {n} message {i};".encode()
                writer.write(msg)
                assert await reader.readexactly(len(msg)) == msg.upper()
            writer.close()
            await writer.wait_closed()

        await asyncio.gather(*(client(n) for n in range(10)))
        stats = aio.engine_stats()
        server.close()
        await server.wait_closed()
        assert not server.is_serving()
        return stats

    stats = run(main(), loop_factory=loop_factory)
    assert stats["backend"] == hosted_backend
    assert stats["io_threads"] == 1
    assert stats["connections_accepted"] == 10


def test_framed_client_and_server_on_the_loop(hosted_backend: str) -> None:
    framing = netring.LengthPrefixed(4)
    got: list[bytes] = []

    class Doubler(netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def packet_received(self, packet: bytes) -> None:
            self.transport.send_packet(packet * 2)

    class Client(netring.Protocol):
        def __init__(self) -> None:
            self.done = asyncio.get_running_loop().create_future()

        def packet_received(self, packet: bytes) -> None:
            got.append(packet)
            if len(got) == 100 and not self.done.done():
                self.done.set_result(None)

    async def main() -> None:
        async with await aio.create_server(Doubler, framing=framing) as server:
            client = Client()
            transport, protocol = await aio.create_connection(
                lambda: client, "127.0.0.1", server.port, framing=framing)
            assert protocol is client
            for i in range(100):
                transport.send_packet(b"%d" % i)
            await client.done
            transport.close()

    run(main())
    assert got == [b"%d" % i * 2 for i in range(100)]


def test_engine_timers_run_on_the_loop(hosted_backend: str) -> None:
    events: list[str] = []

    class Quiet(netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def timeout_received(self) -> None:
            asyncio.get_running_loop()  # inside the loop
            events.append("idle")
            self.transport.close()

    async def main() -> None:
        server = await aio.create_server(Quiet, idle_timeout=0.2)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        t0 = asyncio.get_running_loop().time()
        assert await reader.read() == b""  # closed by the idle timeout
        assert 0.15 < asyncio.get_running_loop().time() - t0 < 3
        writer.close()
        server.close()
        await server.wait_closed()

    run(main())
    assert events == ["idle"]


def test_writes_from_other_threads_and_close_flushes(hosted_backend: str) -> None:
    class Pusher(netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            def push() -> None:
                for i in range(1000):
                    transport.write(b"%06d" % i)
                transport.close()
            threading.Thread(target=push).start()

    async def main() -> bytes:
        server = await aio.create_server(Pusher)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        data = await reader.read()  # until the close
        writer.close()
        server.close()
        await server.wait_closed()
        return data

    data = run(main())
    assert data == b"".join(b"%06d" % i for i in range(1000))


def test_tls_inside_asyncio(hosted_backend: str) -> None:
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    tls = netring.TLSConfig(b"".join(p.bytes() for p in cert.cert_chain_pems),
                            cert.private_key_pem.bytes())
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)

    async def main() -> None:
        async with await aio.create_server(AwaitingEcho, tls=tls) as server:
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", server.port, ssl=ctx, server_hostname="localhost")
            writer.write(b"secret")
            assert await reader.readexactly(6) == b"SECRET"
            writer.close()
            await writer.wait_closed()

    run(main())


def test_close_waits_for_connection_lost_and_serve_forever_cancels(hosted_backend: str) -> None:
    lost: list[Any] = []

    class Tracked(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(exc)

    async def main() -> None:
        server = await aio.create_server(Tracked, grace=1.0)
        clients = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(5)]
        while aio.engine_stats()["connections_open"] < 5:
            await asyncio.sleep(0.01)
        task = asyncio.get_running_loop().create_task(server.serve_forever())
        await asyncio.sleep(0.05)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.wait_closed()
        assert len(lost) == 5, "every connection_lost ran before wait_closed returned"
        for reader, writer in clients:
            assert await reader.read() == b""
            writer.close()

    run(main())


def test_nothing_is_left_behind_when_the_loop_closes(hosted_backend: str,
                                                     loop_factory: Any) -> None:
    async def main() -> None:
        server = await aio.create_server(AwaitingEcho)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"x")
        assert await reader.readexactly(1) == b"X"
        writer.close()
        # No close(): the loop's end takes the engine, its listener and
        # connection with it.

    run(main(), loop_factory=loop_factory)  # warm-up: imports, lazy allocations
    gc.collect()
    fds, threads = fd_count(), threading.active_count()
    for _ in range(3):
        run(main(), loop_factory=loop_factory)
    gc.collect()
    assert fd_count() == fds, os.listdir("/proc/self/fd")
    assert threading.active_count() == threads


def test_options_that_do_not_apply_inside_asyncio_are_refused() -> None:
    async def main() -> None:
        with pytest.raises(netring.ConfigurationError, match="io_threads"):
            await aio.create_server(AwaitingEcho, io_threads=2)
        with pytest.raises(netring.ConfigurationError, match="backend"):
            await aio.create_server(AwaitingEcho, backend="epoll")
        with pytest.raises(netring.ConfigurationError, match=r"zerocopy_threshold.*configure"):
            await aio.create_server(AwaitingEcho, zerocopy_threshold=65536)

    run(main())


def test_configure_sets_the_engine_options_of_loops_made_after_it(backend: str) -> None:
    """netring.aio.configure: the pool's options for the loop's engine
    (checked when given), here zero-copy sends and a backend; configure()
    brings the defaults back."""
    try:
        with pytest.raises(netring.ConfigurationError, match="zerocopy_threshold"):
            aio.configure(zerocopy_threshold=100)
        with pytest.raises(netring.ConfigurationError, match="buffers_per_thread"):
            aio.configure(buffers_per_thread=3)
    finally:
        aio.configure()
    payload = os.urandom(4 << 20)

    async def main() -> dict[str, Any]:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(payload)
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert await reader.readexactly(len(payload)) == payload
        writer.close()
        server.close()
        await server.wait_closed()
        return aio.engine_stats()

    aio.configure(backend=backend, zerocopy_threshold=64 * 1024, buffer_size=8192)
    try:
        stats = run(main(), loop_factory=aio.new_event_loop)
    finally:
        aio.configure()
    assert stats["backend"] == backend
    assert stats["zerocopy_sends"] + stats["zerocopy_copied"] >= 1, stats
    assert aio._engine_options() == {
        "backend": os.environ.get("NETRING_BACKEND", "auto") or "auto"}


def test_asyncio_streams_on_the_engine(hosted_backend: str, loop_factory: Any) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert writer.get_extra_info("peername")[0] == "127.0.0.1"
        while line := await reader.readline():
            if line == b"big\n":
                writer.write(b"B" * (4 << 20))  # past the water marks: drain waits
                await writer.drain()
            else:
                writer.write(line.upper())
                await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        async with await aio.start_server(handle) as server:
            reader, writer = await aio.open_connection("127.0.0.1", server.port)
            for i in range(100):
                writer.write(b"line %d\n" % i)
                await writer.drain()
                assert await reader.readline() == b"LINE %d\n" % i
            writer.write(b"big\n")
            assert await reader.readexactly(4 << 20) == b"B" * (4 << 20)
            writer.write_eof()
            assert await reader.read() == b""
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()

    run(main(), loop_factory=loop_factory)


def test_framed_streams_read_whole_packets(hosted_backend: str) -> None:
    framing = netring.LengthPrefixed(4, max_packet=1 << 16)

    async def handle(reader: aio.PacketReader, writer: aio.PacketWriter) -> None:
        async for packet in reader:
            await asyncio.sleep(0)  # a slow consumer: the reader's limit pauses reading
            writer.send_packet(packet[::-1])
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async def main() -> None:
        async with await aio.start_packet_server(handle, framing=framing, limit=8) as server:
            reader, writer = await aio.open_packet_connection(
                "127.0.0.1", server.port, framing=framing)
            for i in range(1000):
                writer.send_packet(b"packet %d" % i)
            await writer.drain()
            for i in range(1000):
                assert await reader.read_packet() == (b"packet %d" % i)[::-1]
            writer.transport.write_eof()
            assert await reader.read_packet() is None
            assert reader.at_eof()
            writer.close()
            await writer.wait_closed()
            # A packet over max_packet breaks the connection: the reader says why.
            reader, writer = await aio.open_packet_connection(
                "127.0.0.1", server.port, framing=framing)
            writer.write(b"\xff\xff\xff\xff")
            await asyncio.sleep(0.05)
            writer.close()

    run(main())


def test_a_framed_reader_reports_a_broken_stream(hosted_backend: str) -> None:
    framing = netring.LengthPrefixed(4, max_packet=100)
    errors: list[BaseException] = []

    async def handle(reader: aio.PacketReader, writer: aio.PacketWriter) -> None:
        try:
            await reader.read_packet()
        except netring.FrameTooLargeError as e:
            errors.append(e)

    async def main() -> None:
        async with await aio.start_packet_server(handle, framing=framing) as server:
            r, w = await asyncio.open_connection("127.0.0.1", server.port)
            w.write(b"\x00\x00\x10\x00")  # 4096 bytes declared, over 100
            assert await r.read() == b""
            w.close()
            for _ in range(100):
                if errors:
                    break
                await asyncio.sleep(0.01)

    run(main())
    assert len(errors) == 1


def test_workers_run_callbacks_on_worker_threads_while_the_loop_goes_on(
        hosted_backend: str) -> None:
    loop_thread = threading.get_ident()
    ran_on: set[int] = set()
    blocked: list[int] = []
    lost: list[int] = []
    release = threading.Event()

    class Blocking(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            ran_on.add(threading.get_ident())
            blocked.append(1)
            # Blocking work: held until the loop has seen both workers in it.
            assert release.wait(10)
            self.transport.write(data.upper())

        def connection_lost(self, exc: Exception | None) -> None:
            lost.append(threading.get_ident())

    async def main() -> None:
        server = await aio.create_server(Blocking, workers=2)
        assert server.stats()["workers"]["threads"] == 2
        clients = [await asyncio.open_connection("127.0.0.1", server.port) for _ in range(2)]
        for _, writer in clients:
            writer.write(b"abc")
        # The loop keeps running while both workers block, at the same time.
        while len(blocked) < 2:
            await asyncio.sleep(0.005)
        release.set()
        replies = [await reader.readexactly(3) for reader, _ in clients]
        assert replies == [b"ABC", b"ABC"]
        assert loop_thread not in ran_on and len(ran_on) == 2
        server.close()
        await server.wait_closed()
        assert len(lost) == 2 and loop_thread not in lost
        for reader, writer in clients:
            assert await reader.read() == b""
            writer.close()
        assert not any(t.name.startswith("netring-worker") for t in threading.enumerate())

    run(main())
