"""The rest of asyncio's protocol API, on IO threads (`netring.Server`,
`IOPool.connect`) and inside asyncio (`netring.aio`), on both backends:
`asyncio.BufferedProtocol` (the engine copies received bytes into the
protocol's own buffer), `transport.set_protocol()` / `get_protocol()`, and
`transport.get_extra_info("socket")` (socket options on a duplicate of the
engine's descriptor that can never reach another connection)."""

from __future__ import annotations

import asyncio
import functools
import gc
import os
import re
import socket
import threading
from collections.abc import Callable
from typing import Any

import netring
import netring.aio as aio
import pytest
from conftest import (
    connect,
    fd_count,
    recv_exactly,
    recv_until_eof,
    serving,
    uvicorn_while,
    wait_until,
)
from netring.servers.echo import Echo

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB, every byte value, position-dependent


class Lifecycle:
    """What every test protocol records: its transport, its end."""

    def __init__(self) -> None:
        self.transport: Any = None
        self.lost = threading.Event()
        self.exc: BaseException | None = None
        self.calls: list[str] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def connection_lost(self, exc: BaseException | None) -> None:
        self.exc = exc
        self.lost.set()


class BufferedEcho(Lifecycle, asyncio.BufferedProtocol):
    """Echoes through a small buffer of its own (several get_buffer calls per
    received chunk)."""

    size = 7

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray(self.size)
        self.hints: list[int] = []

    def get_buffer(self, sizehint: int) -> Any:
        self.hints.append(sizehint)
        return memoryview(self.buf)

    def buffer_updated(self, nbytes: int) -> None:
        self.transport.write(bytes(self.buf[:nbytes]))


def collect(cls: Callable[[], Any]) -> tuple[list[Any], Callable[[], Any]]:
    made: list[Any] = []
    lock = threading.Lock()

    def factory() -> Any:
        p = cls()
        with lock:
            made.append(p)
        return p
    return made, factory


def echo_round_trip(address: tuple[str, int], data: bytes = PAYLOAD) -> None:
    with socket.create_connection(address, timeout=10) as c:
        sender = threading.Thread(target=c.sendall, args=(data,))
        sender.start()
        assert recv_exactly(c, len(data)) == data
        sender.join(10)


# -- BufferedProtocol on IO threads ------------------------------------------------


def test_a_buffered_protocol_gets_every_byte_in_order(backend: str) -> None:
    made, factory = collect(BufferedEcho)
    with serving(factory, backend) as server:
        echo_round_trip(server.address)
        assert made[0].lost.wait(5) and made[0].exc is None
    p = made[0]
    # The hint is what is left of the chunk; a 7-byte buffer takes 7 at a time.
    assert max(p.hints) > BufferedEcho.size
    assert min(p.hints) >= 1


class BigBuffer(Lifecycle, asyncio.BufferedProtocol):
    """A buffer larger than any chunk: one get_buffer per chunk."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray(1 << 20)
        self.got = bytearray()
        self.hints: list[int] = []
        self.sizes: list[int] = []

    def get_buffer(self, sizehint: int) -> Any:
        self.hints.append(sizehint)
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.sizes.append(nbytes)
        self.got += self.buf[:nbytes]


def test_a_large_buffer_takes_each_chunk_at_once(backend: str) -> None:
    made, factory = collect(BigBuffer)
    with serving(factory, backend) as server:
        with connect(server) as c:
            c.sendall(PAYLOAD)
        assert wait_until(lambda: bool(made) and made[0].lost.is_set())
    p = made[0]
    assert bytes(p.got) == PAYLOAD
    assert p.hints == p.sizes, "each chunk fitted whole: the hint was its size"


class PlainBuffered(netring.Protocol):
    """A netring.Protocol with a buffer and no data_received of its own."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = bytearray(5)

    def get_buffer(self, sizehint: int) -> Any:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.transport.write(self.buf[:nbytes].upper())


class OwnDataReceived(netring.Protocol):
    """Both kinds of callbacks, not an asyncio.BufferedProtocol: its own
    data_received wins."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"data:" + data)

    def get_buffer(self, sizehint: int) -> Any:
        raise AssertionError("not fed through a buffer")

    def buffer_updated(self, nbytes: int) -> None:
        raise AssertionError("not fed through a buffer")


class AsyncioBufferedWithData(asyncio.BufferedProtocol):
    """An asyncio.BufferedProtocol is fed through its buffer, as asyncio
    does, even with a data_received."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.buf = bytearray(64)

    def data_received(self, data: bytes) -> None:
        raise AssertionError("asyncio feeds a BufferedProtocol through its buffer")

    def get_buffer(self, sizehint: int) -> Any:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.transport.write(b"buf:" + self.buf[:nbytes])


@pytest.mark.parametrize(("cls", "reply"), [
    (PlainBuffered, b"HELLO"),
    (OwnDataReceived, b"data:hello"),
    (AsyncioBufferedWithData, b"buf:hello"),
])
def test_which_protocols_are_fed_through_their_buffer(backend: str, cls: type,
                                                      reply: bytes) -> None:
    with serving(cls, backend) as server, connect(server) as c:
        c.sendall(b"hello")
        assert recv_exactly(c, len(reply)) == reply


def test_an_instance_with_its_own_buffer_methods_is_fed_through_them(backend: str) -> None:
    class Holder(netring.BaseProtocol):
        pass

    def factory() -> Any:
        p = Holder()
        buf = bytearray(3)

        def made(transport: Any) -> None:
            p.transport = transport  # type: ignore[attr-defined]

        p.connection_made = made  # type: ignore[method-assign]
        p.get_buffer = lambda hint: buf  # type: ignore[attr-defined]
        p.buffer_updated = lambda n: p.transport.write(bytes(buf[:n]))  # type: ignore
        return p

    with serving(factory, backend) as server:
        echo_round_trip(server.address, b"instance attributes " * 1000)


class BadBuffer(Lifecycle, asyncio.BufferedProtocol):
    kind = "empty"

    def get_buffer(self, sizehint: int) -> Any:
        if self.kind == "empty":
            return bytearray()
        if self.kind == "readonly":
            return b"read-only bytes"
        if self.kind == "not a buffer":
            return 42
        raise ValueError("get_buffer failed")

    def buffer_updated(self, nbytes: int) -> None:
        raise AssertionError("never reached")


class FailingUpdate(Lifecycle, asyncio.BufferedProtocol):
    def get_buffer(self, sizehint: int) -> Any:
        return bytearray(100)

    def buffer_updated(self, nbytes: int) -> None:
        raise KeyError("buffer_updated failed")


@pytest.mark.parametrize(("kind", "error", "match"), [
    ("empty", RuntimeError, "get_buffer\\(\\) returned an empty buffer"),
    ("readonly", TypeError, "writable.*not bytes"),
    ("not a buffer", TypeError, "writable.*not int"),
    ("raises", ValueError, "get_buffer failed"),
    ("update raises", KeyError, "buffer_updated failed"),
])
def test_a_bad_buffer_closes_that_connection_only(backend: str, kind: str, error: type,
                                                  match: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    class Bad(BadBuffer):
        pass
    Bad.kind = kind
    made, factory = collect(FailingUpdate if kind == "update raises" else Bad)
    _, healthy_factory = collect(BufferedEcho)
    with serving(factory, backend) as bad_server, serving(healthy_factory, backend) as good:
        with connect(good) as g, connect(bad_server) as c:
            c.sendall(b"some bytes")
            assert recv_until_eof(c) == b""
            assert made[0].lost.wait(5)
            g.sendall(b"still served")
            assert recv_exactly(g, 12) == b"still served"
    assert isinstance(made[0].exc, error)
    assert re.search(match, str(made[0].exc))
    callback = "buffer_updated" if kind == "update raises" else "get_buffer"
    assert f"exception in {callback}" in caplog.text


class Pauser(Lifecycle, asyncio.BufferedProtocol):
    """Takes 4 bytes, pauses reading; the rest of the chunk waits for
    resume_reading (get_buffer is not called while paused)."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray(4)
        self.got = bytearray()
        self.paused = False

    def get_buffer(self, sizehint: int) -> Any:
        assert not self.paused, "get_buffer while reading is paused"
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.got += self.buf[:nbytes]
        if len(self.got) == 4:
            self.paused = True
            self.transport.pause_reading()


def test_pause_reading_mid_chunk_holds_the_rest(backend: str) -> None:
    made, factory = collect(Pauser)
    with serving(factory, backend) as server, connect(server) as c:
        c.sendall(b"0123456789abcdef")
        assert wait_until(lambda: bool(made) and len(made[0].got) == 4)
        p = made[0]
        assert not p.transport.is_reading()
        threading.Event().wait(0.1)
        assert bytes(p.got) == b"0123", "nothing delivered while paused"
        p.paused = False
        p.transport.resume_reading()  # from this thread: through the mailbox
        assert wait_until(lambda: len(p.got) == 16)
        assert bytes(p.got) == b"0123456789abcdef"


class CloseMidChunk(Lifecycle, asyncio.BufferedProtocol):
    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray(4)
        self.updates = 0

    def get_buffer(self, sizehint: int) -> Any:
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.updates += 1
        self.transport.write(b"bye")
        self.transport.close()


def test_close_mid_chunk_drops_the_rest(backend: str) -> None:
    made, factory = collect(CloseMidChunk)
    with serving(factory, backend) as server, connect(server) as c:
        c.sendall(b"0123456789abcdef")
        assert recv_until_eof(c) == b"bye"
        assert made[0].lost.wait(5) and made[0].exc is None
        assert made[0].updates == 1


class FramedWithBuffer(Lifecycle, asyncio.BufferedProtocol):
    """Framed connections deliver packets whatever else a protocol has."""

    def get_buffer(self, sizehint: int) -> Any:
        raise AssertionError("framed connections are not fed through a buffer")

    def buffer_updated(self, nbytes: int) -> None:
        raise AssertionError("framed connections are not fed through a buffer")

    def packet_received(self, packet: bytes) -> None:
        self.transport.send_packet(packet[::-1])


def test_framed_connections_are_unaffected(backend: str) -> None:
    with serving(FramedWithBuffer, backend, framing=netring.Delimited(b"\n")) as server:
        with connect(server) as c:
            c.sendall(b"abc\ndef\n")
            assert recv_exactly(c, 8) == b"cba\nfed\n"


def test_a_buffered_client_from_the_pool(backend: str) -> None:
    with netring.IOPool(io_threads=1, backend=backend) as pool:
        server = netring.Server(Echo, pool=pool)
        server.start()
        transport, protocol = pool.connect(BigBuffer, "127.0.0.1", server.port).result(5)
        transport.write(b"x" * 100_000)
        assert wait_until(lambda: len(protocol.got) == 100_000)
        transport.close()
        assert protocol.lost.wait(5)
        server.shutdown(1)


# -- set_protocol ------------------------------------------------------------------


class Second(Lifecycle, netring.Protocol):
    def __init__(self) -> None:
        super().__init__()
        self.got = bytearray()
        self.eof = False

    def data_received(self, data: bytes) -> None:
        self.got += data
        self.transport.write(b"2:" + data)

    def eof_received(self) -> bool:
        self.eof = True
        self.transport.write(b"2:eof")
        return False

    def pause_writing(self) -> None:
        self.calls.append("pause")

    def resume_writing(self) -> None:
        self.calls.append("resume")


class First(Lifecycle, netring.Protocol):
    """Answers one line, then hands the connection to a `Second`."""

    seconds: list[Second]

    def data_received(self, data: bytes) -> None:
        assert self.transport.get_protocol() is self
        self.transport.write(b"1:" + data)
        nxt = Second()
        nxt.connection_made(self.transport)
        self.transport.set_protocol(nxt)
        assert self.transport.get_protocol() is nxt
        First.seconds.append(nxt)

    def connection_lost(self, exc: BaseException | None) -> None:
        raise AssertionError("connection_lost goes to the new protocol")


def test_set_protocol_sends_later_callbacks_to_the_new_protocol(backend: str) -> None:
    First.seconds = []
    with serving(First, backend) as server, connect(server) as c:
        c.sendall(b"hello")
        assert recv_exactly(c, 7) == b"1:hello"
        c.sendall(b"world")
        assert recv_exactly(c, 7) == b"2:world"
        c.shutdown(socket.SHUT_WR)
        assert recv_until_eof(c) == b"2:eof"
        nxt = First.seconds[0]
        assert nxt.lost.wait(5) and nxt.exc is None and nxt.eof


class Switcher(Lifecycle, asyncio.BufferedProtocol):
    """A buffered protocol that switches to `Second` after 4 bytes, in the
    middle of a chunk: the rest of that chunk goes to `Second`."""

    def __init__(self) -> None:
        super().__init__()
        self.buf = bytearray(4)
        self.head = b""
        self.next = Second()

    def get_buffer(self, sizehint: int) -> Any:
        assert not self.head, "the old protocol is not asked again"
        return self.buf

    def buffer_updated(self, nbytes: int) -> None:
        self.head = bytes(self.buf[:nbytes])
        self.next.connection_made(self.transport)
        self.transport.set_protocol(self.next)


def test_set_protocol_mid_chunk_hands_over_the_rest(backend: str) -> None:
    made, factory = collect(Switcher)
    with serving(factory, backend) as server, connect(server) as c:
        c.sendall(b"HEADbody in the same chunk")
        got = recv_exactly(c, 2 + len(b"body in the same chunk"))
        p = made[0]
        assert p.head == b"HEAD"
        assert got == b"2:body in the same chunk"
        c.close()
        assert p.next.lost.wait(5)
        assert not p.lost.is_set()


class ToBuffered(Lifecycle, netring.Protocol):
    """A data_received protocol that switches to a buffered one (uvicorn's
    upgrade to websockets is this shape)."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"ok")
        echo = BufferedEcho()
        echo.connection_made(self.transport)
        self.transport.set_protocol(echo)


def test_set_protocol_switches_between_kinds(backend: str) -> None:
    with serving(ToBuffered, backend) as server, connect(server) as c:
        c.sendall(b"upgrade")
        assert recv_exactly(c, 2) == b"ok"
        for _ in range(3):
            c.sendall(b"through the buffer")
            assert recv_exactly(c, 18) == b"through the buffer"


def test_pause_writing_goes_to_the_new_protocol(backend: str) -> None:
    class Producer(Lifecycle, netring.Protocol):
        def data_received(self, data: bytes) -> None:
            nxt = Second()
            nxt.connection_made(self.transport)
            self.transport.set_protocol(nxt)
            First.seconds.append(nxt)
            self.transport.set_write_buffer_limits(high=1024)
            self.transport.write(b"x" * 100_000)  # past the high-water mark

    First.seconds = []
    with serving(Producer, backend) as server, connect(server) as c:
        c.sendall(b"go")
        assert recv_exactly(c, 100_000) == b"x" * 100_000
        assert wait_until(lambda: First.seconds[0].calls == ["pause", "resume"])


def test_set_protocol_needs_a_protocol(backend: str) -> None:
    errors: list[BaseException] = []

    class NoneGiven(Lifecycle, netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            try:
                transport.set_protocol(None)
            except TypeError as e:
                errors.append(e)
            transport.close()

    with serving(NoneGiven, backend) as server, connect(server) as c:
        assert recv_until_eof(c) == b""
    assert wait_until(lambda: len(errors) == 1)


# -- get_extra_info("socket") ------------------------------------------------------


class Options(Lifecycle, netring.Protocol):
    """Sets socket options in connection_made, as uvicorn and aiohttp do."""

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        self.sock = sock
        self.seen = {
            "same": transport.get_extra_info("socket") is sock,
            "nodelay": sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY),
            "keepalive": sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE),
            "family": sock.family, "type": sock.type, "proto": sock.proto,
            "sockname": sock.getsockname(), "peername": sock.getpeername(),
            "fileno": sock.fileno(),
        }

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.fileno_in_lost = self.sock.fileno()  # usable in connection_lost
        super().connection_lost(exc)


def test_the_socket_object_sets_options_on_the_connection(backend: str) -> None:
    made, factory = collect(Options)
    with serving(factory, backend) as server, connect(server) as c:
        c.sendall(b"ping")
        assert recv_exactly(c, 4) == b"ping"
        p = made[0]
        assert p.seen["same"]
        assert p.seen["nodelay"] != 0 and p.seen["keepalive"] != 0
        assert p.seen["family"] == socket.AF_INET
        assert p.seen["type"] == socket.SOCK_STREAM
        assert p.seen["proto"] == socket.IPPROTO_TCP
        assert p.seen["sockname"] == c.getpeername()
        assert p.seen["peername"] == c.getsockname()
        assert isinstance(p.sock, asyncio.trsock.TransportSocket)
        assert not hasattr(p.sock, "close") and not hasattr(p.sock, "recv")
        c.close()
        assert p.lost.wait(5)
        assert p.fileno_in_lost == p.seen["fileno"]
        # Closed right after connection_lost: nothing to reach any more.
        assert wait_until(lambda: p.sock.fileno() == -1)
        with pytest.raises(OSError):
            p.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
        assert p.transport.get_extra_info("socket") is p.sock


def test_the_socket_object_never_reaches_a_later_connection(backend: str) -> None:
    """The first connection's object, kept past its close, cannot touch the
    connection that comes next (whose engine descriptor may well have the
    number the first one's had)."""
    made, factory = collect(Options)
    with serving(factory, backend, io_threads=1) as server:
        with connect(server) as c:
            c.sendall(b"1")
            assert recv_exactly(c, 1) == b"1"
        assert wait_until(lambda: made[0].sock.fileno() == -1)  # after connection_lost
        old = made[0].sock
        with connect(server) as c:
            c.sendall(b"2")
            assert recv_exactly(c, 1) == b"2"
            new = made[1].sock
            new.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 0)
            with pytest.raises(OSError):
                old.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            assert new.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 0


def test_asking_from_another_thread_first_gives_none(backend: str) -> None:
    made, factory = collect(Second)
    with serving(factory, backend) as server, connect(server) as c:
        c.sendall(b"x")
        assert recv_exactly(c, 3) == b"2:x"
        t = made[0].transport
        assert t.get_extra_info("socket") is None  # not the IO thread
        assert t.get_extra_info("socket", "dflt") == "dflt"


class AbortsWithSocket(Lifecycle, netring.Protocol):
    def data_received(self, data: bytes) -> None:
        self.transport.get_extra_info("socket")
        if data == b"abort":
            self.transport.abort()
        else:
            self.transport.write(b"bye")
            self.transport.close()


def test_close_and_abort_reach_the_peer_with_a_socket_object_out(backend: str) -> None:
    with serving(AbortsWithSocket, backend) as server:
        with connect(server) as c:
            c.sendall(b"close")
            assert recv_until_eof(c) == b"bye"
        with connect(server) as c:
            c.sendall(b"abort")
            with pytest.raises(ConnectionResetError):
                recv_until_eof(c)


def test_socket_objects_leave_no_descriptor_behind(backend: str) -> None:
    made, factory = collect(Options)
    with serving(factory, backend) as server:
        echo_round_trip(server.address, b"warm-up")
        assert wait_until(lambda: made[0].lost.is_set())
        gc.collect()
        before = fd_count()
        for _ in range(50):
            echo_round_trip(server.address, b"x")
        assert wait_until(lambda: len(made) == 51 and all(p.lost.is_set() for p in made))
        assert wait_until(lambda: fd_count() <= before), os.listdir("/proc/self/fd")
        assert all(p.sock.fileno() == -1 for p in made)


class AsksInLost(Lifecycle, netring.Protocol):
    """Asks for the socket first in connection_lost (asyncio gives it
    there): an object whose descriptor is closed right after, or None if
    the engine already let go of the connection."""

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    def connection_lost(self, exc: BaseException | None) -> None:
        self.sock = self.transport.get_extra_info("socket")
        if self.sock is not None:
            self.sock.getsockname()
        super().connection_lost(exc)


def test_the_socket_object_asked_for_in_connection_lost(backend: str) -> None:
    made, factory = collect(AsksInLost)
    with serving(factory, backend) as server:
        echo_round_trip(server.address, b"warm-up")
        assert wait_until(lambda: bool(made) and made[0].lost.is_set())
        gc.collect()
        before = fd_count()
        for _ in range(20):
            echo_round_trip(server.address, b"x")
        assert wait_until(lambda: len(made) == 21 and all(p.lost.is_set() for p in made))
        assert wait_until(lambda: all(p.sock is None or p.sock.fileno() == -1 for p in made))
        assert wait_until(lambda: fd_count() <= before), os.listdir("/proc/self/fd")


class UnixEcho(Lifecycle, netring.Protocol):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.sock = transport.get_extra_info("socket")
        self.sndbuf = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


def test_the_socket_object_of_a_unix_connection(backend: str, tmp_path: Any) -> None:
    made, factory = collect(UnixEcho)
    path = str(tmp_path / "echo.sock")
    server = netring.Server(factory, path=path, backend=backend, io_threads=1)
    server.start()
    try:
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(10)
            c.connect(path)
            c.sendall(b"unix")
            assert recv_exactly(c, 4) == b"unix"
            assert made[0].sock.family == socket.AF_UNIX
            assert made[0].sndbuf > 0
        assert wait_until(lambda: made[0].sock.fileno() == -1)
    finally:
        server.shutdown(2)


# -- inside asyncio ----------------------------------------------------------------


@pytest.fixture(params=["asyncio", "uvloop"])
def hosted(request: pytest.FixtureRequest, backend: str,
           monkeypatch: pytest.MonkeyPatch) -> Any:
    """The hosted engine's backend, and the loop factory (stdlib or uvloop)."""
    monkeypatch.setenv("NETRING_BACKEND", backend)
    if request.param == "asyncio":
        return None
    return pytest.importorskip("uvloop").new_event_loop


def run(coro: Any, loop_factory: Any, timeout: float = 20.0) -> Any:
    async def bounded() -> Any:
        return await asyncio.wait_for(coro, timeout)
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        result = runner.run(bounded())
    finish_loops()
    return result


def finish_loops() -> None:
    """Collect closed loops here, on the thread that ran them (a loop's
    hosted engine is closed by its finalizer, which must not run on some
    other thread's collection)."""
    gc.collect()


class LoopBuffered(BufferedEcho):
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.loop = asyncio.get_running_loop()  # inside the loop
        sock = transport.get_extra_info("socket")
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock


def test_buffered_protocols_and_socket_options_inside_asyncio(hosted: Any) -> None:
    made, factory = collect(LoopBuffered)

    async def main() -> None:
        async with await aio.create_server(factory) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(PAYLOAD)
            assert await reader.readexactly(len(PAYLOAD)) == PAYLOAD
            sock = made[0].sock
            assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
            assert sock.getpeername() == writer.get_extra_info("sockname")
            writer.close()
            await writer.wait_closed()
            while not made[0].lost.is_set():
                await asyncio.sleep(0.01)
            assert sock.fileno() == -1

    run(main(), hosted)


def test_the_socket_object_from_a_task_on_the_loop(hosted: Any) -> None:
    """Between turns, on the loop's thread, the hosted engine is reachable:
    a task may ask for the socket first; a thread of the executor may not."""
    made, factory = collect(Second)

    async def main() -> None:
        async with await aio.create_server(factory) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"x")
            assert await reader.readexactly(3) == b"2:x"
            transport = made[0].transport
            loop = asyncio.get_running_loop()
            off_loop = await loop.run_in_executor(None, transport.get_extra_info, "socket")
            assert off_loop is None
            sock = transport.get_extra_info("socket")  # this task, on the loop thread
            assert sock is not None and sock.getsockname()[1] == server.port
            writer.close()
            await writer.wait_closed()

    run(main(), hosted)


class Upgrade(Lifecycle, asyncio.Protocol):
    """A line, then the connection becomes a buffered echo (a protocol
    switch inside asyncio, as uvicorn's upgrade to websockets)."""

    def data_received(self, data: bytes) -> None:
        line, _, rest = data.partition(b"\n")
        self.transport.write(b"upgraded " + line + b"\n")
        echo = LoopBuffered()
        echo.connection_made(self.transport)
        self.transport.set_protocol(echo)
        assert not rest, "the client waits for the reply"


def test_set_protocol_inside_asyncio(hosted: Any) -> None:
    async def main() -> None:
        async with await aio.create_server(Upgrade) as server:
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(b"HELLO\n")
            assert await reader.readline() == b"upgraded HELLO\n"
            writer.write(PAYLOAD)
            assert await reader.readexactly(len(PAYLOAD)) == PAYLOAD
            writer.close()
            await writer.wait_closed()

    run(main(), hosted)


def test_a_buffered_client_inside_asyncio(hosted: Any) -> None:
    async def main() -> None:
        async with await aio.create_server(BufferedEcho) as server:
            transport, protocol = await aio.create_connection(BigBuffer, "127.0.0.1",
                                                              server.port)
            assert transport.get_protocol() is protocol
            transport.write(PAYLOAD)
            while len(protocol.got) < len(PAYLOAD):
                await asyncio.sleep(0.005)
            assert bytes(protocol.got) == PAYLOAD
            transport.close()
            while not protocol.lost.is_set():
                await asyncio.sleep(0.005)

    run(main(), hosted)


def test_uvicorn_websockets_upgrade_on_the_engine(hosted: Any) -> None:
    """uvicorn switches protocols (set_protocol) when a request upgrades to
    a websocket, and sets TCP_NODELAY through get_extra_info("socket")."""
    uvicorn = pytest.importorskip("uvicorn")
    sync_client = pytest.importorskip("websockets.sync.client")
    loop_kind = "asyncio" if hosted is None else "uvloop"

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        assert scope["type"] == "websocket"
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        while True:
            message = await receive()
            if message["type"] == "websocket.disconnect":
                return
            await send({"type": "websocket.send", "text": message["text"].upper()})

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out: dict[str, Any] = {}

    def client() -> None:
        try:
            with sync_client.connect(f"ws://127.0.0.1:{port}", open_timeout=10) as ws:
                for i in range(20):
                    ws.send(f"message {i}")
                    assert ws.recv(timeout=10) == f"MESSAGE {i}"
            out["ok"] = True
        except BaseException as e:  # reported by the test
            out["error"] = e

    async def main() -> dict[str, Any]:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none",
                                ws="websockets-sansio", lifespan="off", log_level="warning")
        return await uvicorn_while(config, client)

    with asyncio.Runner(loop_factory=functools.partial(aio.new_event_loop, loop_kind)) as r:
        stats = r.run(asyncio.wait_for(main(), 30))
    finish_loops()
    assert out.get("ok"), out.get("error")
    assert stats["connections_accepted"] == 1, "served by netring"


# -- on a worker pool (Server(workers=...)) ---------------------------------------


def test_buffered_protocols_and_set_protocol_on_workers(backend: str) -> None:
    First.seconds = []
    with serving(BufferedEcho, backend, workers=2) as server:
        echo_round_trip(server.address, PAYLOAD[:200_000])
    with serving(First, backend, workers=2) as server, connect(server) as c:
        c.sendall(b"hello")
        assert recv_exactly(c, 7) == b"1:hello"
        c.sendall(b"world")
        assert recv_exactly(c, 7) == b"2:world"
        c.shutdown(socket.SHUT_WR)
        assert recv_until_eof(c) == b"2:eof"
        nxt = First.seconds[0]
        assert nxt.lost.wait(5) and nxt.exc is None
        assert nxt.transport.get_protocol() is nxt
