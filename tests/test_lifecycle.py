"""Connection lifecycle: half-close, reset, close vs abort, flow control,
callback exceptions, shutdown hygiene."""

from __future__ import annotations

import logging
import socket
import struct
import threading
from typing import Any, ClassVar

import netring
import pytest
from conftest import (
    Recorder,
    connect,
    factory_of,
    fd_count,
    recv_exactly,
    recv_until_eof,
    serving,
    thread_ids,
    wait_until,
)
from netring.servers.echo import Echo


class HalfClose(Recorder):
    def eof_received(self) -> bool:
        super().eof_received()
        self.transport.write(b"got:" + bytes(self.data))
        self.transport.close()
        return True


def test_peer_half_close_calls_eof_received_and_server_can_still_write(backend: str) -> None:
    protos: list[Any] = []
    with serving(factory_of(HalfClose, protos), backend) as server, connect(server) as s:
        s.sendall(b"abc")
        s.shutdown(socket.SHUT_WR)
        assert recv_until_eof(s) == b"got:abc"
        assert protos[0].lost.wait(5)
    assert protos[0].events == ["made", "eof", "lost"]
    assert protos[0].exc is None


def test_peer_reset_reports_connection_reset_error(backend: str) -> None:
    protos: list[Any] = []
    with serving(factory_of(Recorder, protos), backend) as server:
        s = connect(server)
        s.sendall(b"x")
        assert wait_until(lambda: bool(protos) and protos[0].data == b"x")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        s.close()
        assert protos[0].lost.wait(5)
    assert isinstance(protos[0].exc, ConnectionResetError)


class WriteThen(netring.Protocol):
    """On the client's first byte, queues 8 MiB and then closes (or aborts)."""

    size = 8 * 1024 * 1024
    how = "close"

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"z" * self.size)
        getattr(self.transport, self.how)()


def test_close_delivers_everything_queued_before_fin(backend: str) -> None:
    with serving(WriteThen, backend) as server, connect(server) as s:
        s.sendall(b"go")
        assert recv_until_eof(s) == b"z" * WriteThen.size


class WriteThenAbort(WriteThen):
    how = "abort"


def test_abort_drops_the_queue(backend: str) -> None:
    with serving(WriteThenAbort, backend) as server, connect(server) as s:
        s.sendall(b"go")
        got = b""
        with pytest.raises(ConnectionResetError):
            while chunk := s.recv(1 << 20):
                got += chunk
            raise AssertionError("closed with FIN, not reset")
    assert len(got) < WriteThen.size


class Flood(Recorder):
    """Writes 16 MiB in 16 KiB pieces at once: far more than the kernel's
    socket buffers hold, so the queue stays above the high-water mark until
    the client reads."""

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.sizes_at_pause: list[int] = []
        for _ in range(1024):
            transport.write(b"f" * 16384)

    def pause_writing(self) -> None:
        super().pause_writing()
        self.sizes_at_pause.append(self.transport.get_write_buffer_size())


def test_pause_writing_at_high_water_and_resume_when_drained(backend: str) -> None:
    protos: list[Any] = []
    with serving(factory_of(Flood, protos), backend) as server, socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(server.address)
        assert wait_until(lambda: bool(protos) and "pause" in protos[0].events)
        p = protos[0]
        assert p.sizes_at_pause[0] > 64 * 1024
        assert "resume" not in p.events
        # Now read everything: the queue drains and resume_writing fires.
        recv_exactly(s, 1024 * 16384)
        assert wait_until(lambda: "resume" in p.events)
        assert p.transport.get_write_buffer_size() <= 16 * 1024
    assert p.events.index("pause") < p.events.index("resume")


class Exploding(Recorder):
    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if b"boom" in data:
            raise RuntimeError("handler bug")
        self.transport.write(data)


def test_exception_in_callback_closes_only_that_connection(
        backend: str, caplog: pytest.LogCaptureFixture) -> None:
    protos: list[Any] = []
    with serving(factory_of(Exploding, protos), backend) as server:
        good, bad = connect(server), connect(server)
        good.sendall(b"ping")
        assert recv_exactly(good, 4) == b"ping"
        with caplog.at_level(logging.ERROR, logger="netring"):
            bad.sendall(b"boom")
            assert recv_until_eof(bad) == b""
            assert wait_until(lambda: any(p.exc for p in protos))
        failed = [p for p in protos if p.exc is not None]
        assert len(failed) == 1 and isinstance(failed[0].exc, RuntimeError)
        good.sendall(b"still here")
        assert recv_exactly(good, 10) == b"still here"
        good.close()
        bad.close()
    assert any("data_received" in r.getMessage() and "127.0.0.1" in r.getMessage()
               for r in caplog.records)


class FailsOnConnect(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        raise ValueError("bad connect")


def test_exception_in_connection_made_closes_that_connection(backend: str) -> None:
    with serving(FailsOnConnect, backend) as server, connect(server) as s:
        assert recv_until_eof(s) == b""
        assert server.stats()["connections_accepted"] == 1


def test_writes_after_close_are_ignored_and_never_reach_another_connection(backend: str) -> None:
    protos: list[Any] = []
    with serving(factory_of(Recorder, protos), backend) as server:
        a = connect(server)
        assert wait_until(lambda: len(protos) == 1)
        a.close()
        assert protos[0].lost.wait(5)
        stale = protos[0].transport
        b = connect(server)
        assert wait_until(lambda: len(protos) == 2)
        stale.write(b"stale")  # no-op: the connection is gone
        stale.close()
        stale.abort()
        assert stale.is_closing()
        protos[1].transport.write(b"fresh")
        assert recv_exactly(b, 5) == b"fresh"
        b.close()


def test_shutdown_leaves_no_descriptors_or_threads(backend: str) -> None:
    fds, threads = fd_count(), thread_ids()
    server = netring.Server(Echo, "127.0.0.1", 0, backend=backend, io_threads=2)
    server.start()
    clients = [connect(server) for _ in range(20)]
    for c in clients:
        c.sendall(b"hi")
        assert recv_exactly(c, 2) == b"hi"
    server.shutdown(1.0)
    assert not server.is_serving()
    for c in clients:
        assert recv_until_eof(c) == b""
        c.close()
    assert fd_count() == fds
    assert wait_until(lambda: not thread_ids() - threads, 5)


def test_shutdown_flushes_and_calls_connection_lost(backend: str) -> None:
    protos: list[Any] = []
    server = netring.Server(factory_of(Recorder, protos), "127.0.0.1", 0, backend=backend)
    server.start()
    with connect(server) as s:
        assert wait_until(lambda: len(protos) == 1)
        protos[0].transport.write(b"last words")
        server.shutdown(2.0)
        assert protos[0].lost.is_set()
        assert recv_until_eof(s) == b"last words"


def test_pause_reading_holds_data_until_resume(backend: str) -> None:
    protos: list[Any] = []
    with serving(factory_of(Recorder, protos), backend) as server, connect(server) as s:
        assert wait_until(lambda: len(protos) == 1)
        p = protos[0]
        p.transport.pause_reading()
        assert not p.transport.is_reading()
        s.sendall(b"held")
        threading.Event().wait(0.2)
        assert p.data == b""
        p.transport.resume_reading()
        assert wait_until(lambda: p.data == b"held")


def test_shutdown_from_inside_a_callback_does_not_deadlock(backend: str) -> None:
    holder: list[netring.Server] = []

    class Quitter(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(b"bye")
            holder[0].shutdown(1.0)

    server = netring.Server(Quitter, "127.0.0.1", 0, backend=backend, io_threads=2)
    holder.append(server)
    server.start()
    with connect(server) as s:
        s.sendall(b"quit")
        assert recv_until_eof(s) == b"bye"
    server.shutdown(1.0)
    assert not server.is_serving()


def test_dropping_a_running_server_stops_it_without_deadlock(backend: str) -> None:
    import gc

    threads = thread_ids()
    protos: list[Any] = []
    server = netring.Server(factory_of(Recorder, protos), "127.0.0.1", 0, backend=backend)
    server.start()
    s = connect(server)
    assert wait_until(lambda: len(protos) == 1)
    del server
    gc.collect()
    assert protos[0].lost.is_set()
    with s:  # dropped without shutdown(): grace 0, so the close may be a reset
        try:
            assert recv_until_eof(s) == b""
        except ConnectionResetError:
            pass
    assert wait_until(lambda: not thread_ids() - threads, 5)


# --- how data callbacks are found ------------------------------------------------
# The dispatcher caches a class's data callbacks; these check that what the
# protocol object itself would answer to is what runs.


class Tagged(netring.Protocol):
    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"class:" + data)


class InstanceOverride(Tagged):
    def __init__(self) -> None:
        self.data_received = self.instance_data  # type: ignore[method-assign]

    def instance_data(self, data: bytes) -> None:
        self.transport.write(b"instance:" + data)


class CallableObject(Tagged):
    class _Reply:
        def __call__(self, protocol: Any, data: bytes) -> None:
            protocol.transport.write(b"object:" + data)

    _reply = _Reply()

    def __init__(self) -> None:
        self.data_received = lambda data: self._reply(self, data)  # type: ignore[method-assign]


class Static(Tagged):
    seen: ClassVar[list[bytes]] = []

    @staticmethod
    def data_received(data: bytes) -> None:  # type: ignore[override]
        Static.seen.append(data)


@pytest.mark.parametrize(
    ("factory", "expect"),
    [
        (Tagged, b"class:ping"),
        (InstanceOverride, b"instance:ping"),
        (CallableObject, b"object:ping"),
    ],
)
def test_data_callbacks_are_what_the_protocol_object_answers_to(
    backend: str, factory: Any, expect: bytes
) -> None:
    # Each class twice in a row: the second connection uses the cached class.
    with serving(factory, backend) as server:
        for _ in range(2):
            with connect(server) as c:
                c.sendall(b"ping")
                assert recv_exactly(c, len(expect)) == expect


def test_a_staticmethod_callback_gets_only_the_data(backend: str) -> None:
    Static.seen.clear()
    with serving(Static, backend) as server:
        for i in range(2):
            with connect(server) as c:
                c.sendall(b"x%d" % i)
                wait_until(lambda n=i + 1: len(Static.seen) == n)
    assert Static.seen == [b"x0", b"x1"]


def test_classes_mixed_on_one_server_keep_their_own_callbacks(backend: str) -> None:
    # One factory alternating classes (and making fresh classes past the
    # cache's size): every connection runs its own class's callback.
    made = 0

    def factory() -> netring.Protocol:
        nonlocal made
        made += 1
        if made % 3 == 0:
            fresh = type(f"Fresh{made}", (Tagged,), {
                "data_received": lambda self, d, n=made: self.transport.write(b"fresh%d:" % n + d),
            })
            return fresh()
        return Tagged() if made % 3 == 1 else InstanceOverride()

    with serving(factory, backend, io_threads=1) as server:
        for i in range(1, 211):  # 70 fresh classes: past the cache of 64
            with connect(server) as c:
                c.sendall(b"p")
                if i % 3 == 0:
                    want = b"fresh%d:p" % i
                elif i % 3 == 1:
                    want = b"class:p"
                else:
                    want = b"instance:p"
                assert recv_exactly(c, len(want)) == want
