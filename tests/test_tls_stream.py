"""The byte stream under TLS, on both backends: 64 MiB in one write,
100,000 small writes in order, half-close in both directions between
netring peers, and a reset in the middle of a handshake."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from typing import Any

import netring
import pytest
from conftest import recv_exactly, serving, wait_until

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls(ca: Any) -> netring.TLSConfig:
    cert = ca.issue_cert("localhost")
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    return netring.TLSConfig(chain, cert.private_key_pem.bytes())


def tls_connect(port: int, ca: Any) -> ssl.SSLSocket:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    raw = socket.create_connection(("127.0.0.1", port), timeout=20)
    return ctx.wrap_socket(raw, server_hostname="localhost")


class Sender(netring.Protocol):
    """On connection_made: 64 MiB in one write, or 100,000 small ones."""

    mode = "big"

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        if self.mode == "big":
            transport.write(bytes(range(256)) * (64 * 4096))
        else:
            for i in range(100_000):
                transport.write(struct.pack(">I", i))
        transport.close()


@pytest.mark.parametrize("mode", ["big", "small"])
def test_large_and_many_writes_arrive_in_order(backend: str, tls: netring.TLSConfig, ca: Any,
                                               mode: str) -> None:
    class S(Sender):
        pass

    S.mode = mode
    # NOTE: 64 MiB is the default max_write_buffer, and the session tickets
    # TLS 1.3 sends after the handshake (~0.5 KiB) are queued too.
    with serving(S, backend, tls=tls, max_write_buffer=80 << 20) as server, \
            tls_connect(server.port, ca) as s:
        if mode == "big":
            size = 64 * 1024 * 1024
            got = bytearray()
            while len(got) < size:
                chunk = s.recv(1 << 20)
                assert chunk, f"closed after {len(got)} of {size} bytes"
                got += chunk
            assert got == bytes(range(256)) * (64 * 4096)
        else:
            data = recv_exactly(s, 400_000)
            values = struct.unpack(">100000I", data)
            assert values == tuple(range(100_000))
        assert s.recv(1) == b"", "then close_notify"


def test_half_close_both_ways_between_netring_peers(backend: str, tls: netring.TLSConfig,
                                                    ca: Any) -> None:
    events: list[str] = []

    servers: list[Any] = []

    class Server(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            self.transport = transport
            self.got = b""
            servers.append(self)

        def data_received(self, data: bytes) -> None:
            self.got += data

        def eof_received(self) -> bool:
            events.append("server eof")
            # The client's side is done; ours is still open.
            self.transport.write(b"answer to " + self.got)
            self.transport.write_eof()
            return True

        def connection_lost(self, exc: BaseException | None) -> None:
            events.append(f"server lost {exc}")

    class Client(netring.Protocol):
        def __init__(self) -> None:
            self.got = b""
            self.eof = threading.Event()
            self.lost = threading.Event()

        def data_received(self, data: bytes) -> None:
            self.got += data

        def eof_received(self) -> None:
            events.append("client eof")
            self.eof.set()

        def connection_lost(self, exc: BaseException | None) -> None:
            events.append(f"client lost {exc}")
            self.lost.set()

    client = Client()
    config = netring.TLSClientConfig(server_hostname="localhost", ca=ca.cert_pem.bytes())
    with serving(Server, backend, tls=tls) as server, \
            netring.IOPool(1, backend=backend) as pool:
        transport, _ = pool.connect(lambda: client, "127.0.0.1", server.port, tls=config,
                                    timeout=10).result(15)
        transport.write(b"question")
        transport.write_eof()  # close_notify: a half-close
        assert client.eof.wait(10)
        assert client.got == b"answer to question"
        assert client.lost.wait(10)
        # Both directions are shut; as in asyncio, the server's transport
        # stays until its protocol closes it.
        assert wait_until(lambda: len(servers) == 1, 5)
        assert not any(e.startswith("server lost") for e in events), events
        servers[0].transport.close()
        assert wait_until(lambda: any(e.startswith("server lost") for e in events), 5), events
    assert events[0] == "server eof"
    assert "client lost None" in events and "server lost None" in events, events


def test_a_reset_in_the_middle_of_a_handshake(backend: str, tls: netring.TLSConfig,
                                              ca: Any) -> None:
    made: list[int] = []

    class Counting(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            made.append(1)
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)

    with serving(Counting, backend, tls=tls) as server:
        for _ in range(5):
            s = socket.create_connection(server.address, timeout=10)
            s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03")
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()  # RST
        assert wait_until(lambda: server.stats()["connections_closed"] == 5, 5)
        assert made == [], "the protocol never saw them"
        assert server.stats()["handshakes_failed"] == 5
        with tls_connect(server.port, ca) as s:
            s.sendall(b"fine")
            assert recv_exactly(s, 4) == b"fine"
