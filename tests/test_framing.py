"""Framing end to end: packet, line and large-packet servers, switching rules
mid-stream, limits, batches, bad input (every test on each backend)."""

from __future__ import annotations

import socket
import struct
import threading
from typing import Any

import netring
import pytest
from conftest import (
    Recorder,
    connect,
    factory_of,
    recv_exactly,
    recv_until_eof,
    serving,
    wait_until,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netring.servers import LARGE_PACKET_MAX, SERVERS
from netring.servers.echo import Echo


def example(name: str, backend: str, **extra: Any) -> Any:
    ex = SERVERS[name]
    return serving(ex.factory, backend, **{**ex.options, **extra})


def lp(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


def test_packets_of_every_size_from_0_to_70000_round_trip(backend: str) -> None:
    sizes = range(70_001)
    with example("packet-echo", backend) as server, connect(server, timeout=60) as s:
        def writer() -> None:
            block = bytes(range(256)) * 274
            batch: list[bytes] = []
            for n in sizes:
                batch.append(struct.pack(">I", n) + block[n % 256:n % 256 + n])
                if len(batch) == 64:
                    s.sendall(b"".join(batch))
                    batch.clear()
            s.sendall(b"".join(batch))

        t = threading.Thread(target=writer)
        t.start()
        block = bytes(range(256)) * 274
        buf = bytearray()
        for n in sizes:
            while len(buf) < 4 + n:
                chunk = s.recv(1 << 20)
                assert chunk, f"closed while waiting for packet of {n} bytes"
                buf += chunk
            assert struct.unpack(">I", buf[:4])[0] == n
            assert buf[4:4 + n] == block[n % 256:n % 256 + n], n
            del buf[:4 + n]
        t.join()


def test_16_mib_packet_through_1_kib_buffers(backend: str) -> None:
    payload = bytes(range(251)) * (LARGE_PACKET_MAX // 251)
    with example("large-packet-echo", backend) as server, connect(server, timeout=60) as s:
        t = threading.Thread(target=s.sendall, args=(lp(payload),))
        t.start()
        header = recv_exactly(s, 4)
        assert struct.unpack(">I", header)[0] == len(payload)
        assert recv_exactly(s, len(payload)) == payload
        t.join()


def test_lines_echo_with_their_delimiter(backend: str) -> None:
    with example("line", backend) as server, connect(server) as s:
        s.sendall(b"HELO x\r\nMAIL FROM:<a@b>\r")
        s.sendall(b"\nNOOP\r\n")
        assert recv_exactly(s, 31) == b"HELO x\r\nMAIL FROM:<a@b>\r\nNOOP\r\n"


class Batches(Recorder):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.calls: list[list[bytes]] = []

    def packets_received(self, packets: list[bytes]) -> None:
        self.calls.append(packets)


def test_packets_received_gets_every_packet_of_one_read(backend: str) -> None:
    protos: list[Any] = []
    framing = netring.LengthPrefixed(header_size=2)
    with serving(factory_of(Batches, protos), backend, framing=framing) as server, \
            connect(server) as s:
        s.sendall(b"".join(struct.pack(">H", 3) + b"%03d" % i for i in range(200)))
        assert wait_until(lambda: bool(protos) and sum(map(len, protos[0].calls)) == 200)
        flat = [p for call in protos[0].calls for p in call]
        assert flat == [b"%03d" % i for i in range(200)]
        assert len(protos[0].calls) < 200, "packets of one read were not batched"


class Switcher(netring.Protocol):
    """Lines; 'DATA n' switches to Exactly(n) for one body, then back."""

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, packet: bytes) -> None:
        exact = getattr(self, "_exact", False)
        if exact:
            self._exact = False
            self.transport.set_framing(netring.Delimited(b"\r\n"))
            self.transport.write(b"BODY[" + packet + b"]\r\n")
        elif packet.startswith(b"DATA "):
            self._exact = True
            self.transport.set_framing(netring.Exactly(int(packet[5:])))
        else:
            self.transport.send_packet(b"LINE[" + packet + b"]")


@pytest.mark.parametrize("split", [None, 1, 3, 7, 20])
def test_switching_framing_mid_stream_reframes_buffered_bytes(backend: str,
                                                              split: int | None) -> None:
    stream = b"HELO\r\nDATA 11\r\nhello\r\nbodyQUIT\r\nDATA 3\r\nxyzEND\r\n"
    expect = b"LINE[HELO]\r\nBODY[hello\r\nbody]\r\nLINE[QUIT]\r\nBODY[xyz]\r\nLINE[END]\r\n"
    with serving(Switcher, backend, framing=netring.Delimited(b"\r\n")) as server, \
            connect(server) as s:
        if split is None:
            s.sendall(stream)
        else:
            for i in range(0, len(stream), split):
                s.sendall(stream[i:i + split])
        assert recv_exactly(s, len(expect)) == expect


@pytest.mark.parametrize(
    ("framing", "junk"),
    [
        (netring.LengthPrefixed(header_size=4), b"\xff\xff\xff\xff" + b"x" * 100),
        (netring.LengthPrefixed(header_size=8), struct.pack(">Q", 1 << 63)),
        (netring.LengthPrefixed(header_size=2, max_packet=1000), struct.pack(">H", 1001)),
        (netring.Delimited(b"\r\n", max_line=64), b"y" * 64),
        (netring.Delimited(b"\n", max_line=1024), bytes(range(256)).replace(b"\n", b"") * 5),
    ],
)
def test_oversize_frames_close_only_that_connection(backend: str, framing: Any,
                                                    junk: bytes) -> None:
    protos: list[Any] = []

    class Keep(Recorder):
        def packet_received(self, packet: bytes) -> None:
            self.transport.send_packet(packet)

    with serving(factory_of(Keep, protos), backend, framing=framing) as server:
        good, bad = connect(server), connect(server)
        with good, bad:
            bad.sendall(junk)
            assert recv_until_eof(bad) == b""
            assert wait_until(lambda: any(p.exc is not None for p in protos))
            failed = [p for p in protos if p.exc is not None]
            assert len(failed) == 1
            assert isinstance(failed[0].exc, netring.FrameTooLargeError)
            assert "max_" in str(failed[0].exc)
            good.sendall(netring_frame(framing, b"still fine"))
            got = recv_exactly(good, len(netring_frame(framing, b"still fine")))
            assert got == netring_frame(framing, b"still fine")


def netring_frame(framing: Any, payload: bytes) -> bytes:
    if isinstance(framing, netring.LengthPrefixed):
        return len(payload).to_bytes(framing.header_size, framing.byteorder) + payload
    return payload + framing.delimiter


def test_zero_length_header_is_an_empty_packet(backend: str) -> None:
    with example("packet-echo", backend) as server, connect(server) as s:
        s.sendall(lp(b"") + lp(b"a") + lp(b""))
        assert recv_exactly(s, 13) == lp(b"") + lp(b"a") + lp(b"")


def test_send_packet_refuses_what_the_header_cannot_hold(backend: str) -> None:
    protos: list[Any] = []
    framing = netring.LengthPrefixed(header_size=1)
    with serving(factory_of(Recorder, protos), backend, framing=framing) as server, \
            connect(server):
        assert wait_until(lambda: len(protos) == 1)
        with pytest.raises(ValueError, match="1-byte length header"):
            protos[0].transport.send_packet(b"x" * 256)


@pytest.mark.parametrize("framing, wire", [
    (netring.LengthPrefixed(header_size=2, byteorder="little"),
     b"\x01\x00a\x00\x00\x03\x00bcd"),
    (netring.Delimited(b"\r\n"), b"a\r\n\r\nbcd\r\n"),
])
def test_send_packets_frames_a_batch_in_one_call(backend: str, framing: Any, wire: bytes) -> None:
    protos: list[Any] = []
    with serving(factory_of(Recorder, protos), backend, framing=framing) as server, \
            connect(server) as s:
        assert wait_until(lambda: len(protos) == 1)
        t = protos[0].transport
        t.send_packets([b"a", b"", bytearray(b"bcd")])
        assert recv_exactly(s, len(wire)) == wire
        t.send_packets((b"a", b"", b"bcd"))  # all bytes: one engine write
        assert recv_exactly(s, len(wire)) == wire
        with pytest.raises(TypeError, match="bytes-like"):
            t.send_packets([b"ok", "text"])
        t.write_eof()
        with pytest.raises(RuntimeError, match="send_packets"):
            t.send_packets([b"late"])


@pytest.mark.parametrize("framing, frame", [
    (netring.LengthPrefixed(header_size=1), lambda p: bytes([len(p)]) + p),
    (netring.Delimited(b"\r\n"), lambda p: p + b"\r\n"),
])
def test_send_packets_keeps_order_across_chunks_types_and_failures(
        backend: str, framing: Any, frame: Any) -> None:
    # On the IO thread (inside a callback): lists and tuples are framed in
    # chunks per engine write, other iterables item by item; order holds
    # across all of them, a bytearray in the middle included, and a packet
    # the header cannot hold stops the batch there.
    payloads = [bytes([65 + i % 26]) * (i % 7) for i in range(100)]
    mixed: list[Any] = [bytearray(p) if i % 33 == 5 else p for i, p in enumerate(payloads)]
    errors: list[Exception] = []

    class Sender(netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def packet_received(self, packet: bytes) -> None:
            self.t.send_packets(mixed)
            self.t.send_packets(tuple(mixed))
            self.t.send_packets(p for p in mixed)
            self.t.send_packets(payloads)
            self.t.send_packets(tuple(payloads))
            if isinstance(framing, netring.LengthPrefixed):
                try:
                    self.t.send_packets([b"x", b"y" * 256, b"z"])
                except ValueError as e:
                    errors.append(e)
            self.t.send_packet(b"end")

    with serving(Sender, backend, framing=framing) as server, connect(server) as s:
        s.sendall(frame(b"go"))
        expected = b"".join(frame(p) for p in payloads) * 5
        if isinstance(framing, netring.LengthPrefixed):
            expected += frame(b"x")
        expected += frame(b"end")
        assert recv_exactly(s, len(expected)) == expected
        if isinstance(framing, netring.LengthPrefixed):
            assert len(errors) == 1 and "1-byte length header" in str(errors[0])


@pytest.mark.parametrize("as_list", [True, False])
def test_send_packets_that_crosses_high_water_then_fails_still_pauses(
        backend: str, as_list: bool) -> None:
    # The packets before an unframeable one are queued; if they crossed the
    # high-water mark, pause_writing() is called before the error is raised
    # (no event would follow to tell the protocol otherwise).
    calls: list[str] = []

    class Sender(netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport
            transport.set_write_buffer_limits(high=16)

        def pause_writing(self) -> None:
            calls.append("pause")

        def packet_received(self, packet: bytes) -> None:
            batch = [b"x" * 100, b"y" * 256, b"z"]
            try:
                self.t.send_packets(batch if as_list else iter(batch))
            except ValueError:
                calls.append("error")
            self.t.send_packet(b"end")

    with serving(Sender, backend, framing=netring.LengthPrefixed(header_size=1)) as server, \
            connect(server) as s:
        s.sendall(b"\x02go")
        assert recv_exactly(s, 101 + 4) == b"\x64" + b"x" * 100 + b"\x03end"
        assert calls == ["pause", "error"]


def test_send_packets_from_a_generator_that_uses_the_transport(backend: str) -> None:
    # The generator runs Python code while send_packets iterates: it may use
    # the same transport (and another thread may take the GIL meanwhile);
    # nothing may be locked across it.
    class Sender(netring.Protocol):
        def connection_made(self, transport: Any) -> None:
            self.t = transport

        def items(self) -> Any:
            for i in range(3):
                assert self.t.get_protocol() is self
                assert not self.t.is_closing()
                yield b"%d" % i

        def packet_received(self, packet: bytes) -> None:
            self.t.send_packets(self.items())

    with serving(Sender, backend, framing=netring.Delimited(b"\n")) as server, \
            connect(server, timeout=5) as s:
        s.sendall(b"go\n")
        assert recv_exactly(s, 6) == b"0\n1\n2\n"


def test_framing_arguments_are_checked_at_construction() -> None:
    with pytest.raises(ValueError, match="header_size"):
        netring.LengthPrefixed(header_size=3)
    with pytest.raises(ValueError, match="delimiter"):
        netring.Delimited(b"")
    with pytest.raises(ValueError, match="delimiter"):
        netring.Delimited(b"x" * 17)
    with pytest.raises(ValueError, match="byteorder"):
        netring.LengthPrefixed(byteorder="middle")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="n"):
        netring.Exactly(0)
    with pytest.raises(TypeError, match="framing"):
        netring.Server(Echo, framing="lines")  # type: ignore[arg-type]


def test_protocol_without_packet_received_closes_with_a_clear_error(backend: str) -> None:
    protos: list[Any] = []
    with serving(factory_of(Recorder, protos), backend,
                 framing=netring.Delimited(b"\n")) as server, connect(server) as s:
        s.sendall(b"hello\n")
        assert recv_until_eof(s) == b""
        assert wait_until(lambda: bool(protos) and protos[0].exc is not None)
        assert isinstance(protos[0].exc, NotImplementedError)


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(packets=st.lists(st.binary(max_size=3000), max_size=30),
       cuts=st.lists(st.integers(min_value=1, max_value=5000), min_size=1, max_size=10))
def test_any_packets_in_any_split_round_trip(backend: str, packets: list[bytes],
                                             cuts: list[int]) -> None:
    stream = b"".join(lp(p) for p in packets)
    with example("packet-echo", backend) as server, connect(server) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        pos, i = 0, 0
        while pos < len(stream):
            n = cuts[i % len(cuts)]
            s.sendall(stream[pos:pos + n])
            pos, i = pos + n, i + 1
        assert recv_exactly(s, len(stream)) == stream


class BatchSwitcher(Recorder):
    def packets_received(self, packets: list[bytes]) -> None:
        try:
            self.transport.set_framing(netring.Exactly(3))
        except RuntimeError as e:
            self.transport.write(str(e).encode()[:30])


def test_set_framing_inside_packets_received_is_refused(backend: str) -> None:
    with serving(BatchSwitcher, backend, framing=netring.Delimited(b"\n")) as server, \
            connect(server) as s:
        s.sendall(b"a\nb\n")
        assert recv_exactly(s, 30) == b"set_framing() inside packets_r"


class RespRecorder(netring.Protocol):
    """Records RESP commands; answers framing errors, as Redis does."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.commands: list[Any] = []
        self.errors: list[Exception] = []
        self.lost: list[BaseException | None] = []

    def packet_received(self, packet: Any) -> None:
        self.commands.append(packet)
        self.transport.write(b"+OK\r\n")

    def framing_error(self, exc: Exception) -> None:
        self.errors.append(exc)
        self.transport.write(b"-ERR " + str(exc).encode() + b"\r\n")

    def connection_lost(self, exc: BaseException | None) -> None:
        self.lost.append(exc)


def test_resp_framing_delivers_whole_commands_and_answers_bad_input(backend: str) -> None:
    protos: list[Any] = []
    framing = netring.Resp(max_bulk=64, max_command=1024)
    with serving(factory_of(RespRecorder, protos), backend, framing=framing) as server, \
            connect(server) as s:
        stream = (b"*2\r\n$3\r\nGET\r\n$4\r\nk\r\nx\r\n" + b"PING  a\r\n" + b"*0\r\n"
                  + b"*1\r\n$65\r\n" + b"never read\r\n")
        for i in range(0, len(stream), 3):  # across many reads
            s.sendall(stream[i:i + 3])
        got = recv_until_eof(s)
        assert got == (b"+OK\r\n" * 3
                       + b"-ERR Protocol error: invalid bulk length\r\n")
        p = protos[0]
        assert wait_until(lambda: p.lost)
        assert p.commands == [[b"GET", b"k\r\nx"], b"PING  a", []]
        assert isinstance(p.errors[0], netring.FramingError)
        assert isinstance(p.lost[0], netring.FramingError)


def test_framing_error_can_answer_before_the_close(backend: str) -> None:
    protos: list[Any] = []
    framing = netring.LengthPrefixed(header_size=2, max_packet=10)
    with serving(factory_of(RespRecorder, protos), backend, framing=framing) as server, \
            connect(server) as s:
        s.sendall(struct.pack(">H", 2) + b"ok" + struct.pack(">H", 11) + b"x" * 11)
        got = recv_until_eof(s)
        assert got.startswith(b"+OK\r\n-ERR ") and b"max_packet=10" in got
        assert wait_until(lambda: protos[0].lost)
        assert isinstance(protos[0].lost[0], netring.FrameTooLargeError)
