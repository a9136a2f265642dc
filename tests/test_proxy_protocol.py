"""The PROXY protocol (v1, v2) on listeners, parsed in the engine before TLS
and framing, on both backends: the client's address as `peername`, the
proxy's in extra info, headers split anywhere, LOCAL/UNKNOWN health checks,
untrusted peers and bad headers refused before the protocol hears of them."""

from __future__ import annotations

import ipaddress
import socket
import ssl
import struct
import threading
import time
from typing import Any, ClassVar

import netring
import pytest
from conftest import recv_exactly, serving, wait_until

SIG = b"\r\n\r\n\x00\r\nQUIT\n"


def v2_header(src: tuple[str, int], dst: tuple[str, int], command: int = 1) -> bytes:
    a, b = ipaddress.ip_address(src[0]), ipaddress.ip_address(dst[0])
    fam = 0x11 if a.version == 4 else 0x21
    body = a.packed + b.packed + struct.pack(">HH", src[1], dst[1])
    if command == 0:
        fam, body = 0x00, b""
    return SIG + bytes([0x20 | command, fam]) + struct.pack(">H", len(body)) + body


class Seen(netring.Protocol):
    """Echo that records peername and the proxy's address at connection_made."""

    seen: ClassVar[list[dict[str, Any]]] = []

    def connection_made(self, transport: Any) -> None:
        self.transport = transport
        self.seen.append({k: transport.get_extra_info(k) for k in
                          ("peername", "sockname", "proxy_peername", "proxy_destination")})

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


@pytest.fixture
def seen() -> type[Seen]:
    Seen.seen = []
    return Seen


LOCALHOST = ["127.0.0.0/8", "::1"]


@pytest.mark.parametrize("version", ["v1", "v2", "any"])
def test_the_client_address_comes_from_the_header(backend: str, seen: type[Seen],
                                                  version: str) -> None:
    with serving(seen, backend, proxy_protocol=version, trusted_proxies=LOCALHOST) as server:
        with socket.create_connection(server.address, timeout=10) as s:
            if version == "v1":
                header = b"PROXY TCP4 192.0.2.10 198.51.100.1 40000 443\r\n"
            else:
                header = v2_header(("192.0.2.10", 40000), ("198.51.100.1", 443))
            s.sendall(header + b"hello")  # data in the header's segment
            assert recv_exactly(s, 5) == b"hello"
            proxy_port = s.getsockname()[1]
        if version != "v1":
            with socket.create_connection(server.address, timeout=10) as s:
                s.sendall(v2_header(("2001:db8::7", 1234), ("2001:db8::1", 80)))
                s.sendall(b"six")
                assert recv_exactly(s, 3) == b"six"
    assert seen.seen[0]["peername"] == ("192.0.2.10", 40000)
    assert seen.seen[0]["proxy_peername"] == ("127.0.0.1", proxy_port)
    assert seen.seen[0]["proxy_destination"] == ("198.51.100.1", 443)
    assert seen.seen[0]["sockname"] == server.address
    if version != "v1":
        assert seen.seen[1]["peername"][:2] == ("2001:db8::7", 1234)


def test_a_header_split_anywhere_and_health_checks(backend: str, seen: type[Seen]) -> None:
    with serving(seen, backend, proxy_protocol="any", trusted_proxies=LOCALHOST) as server:
        for header in (b"PROXY TCP4 203.0.113.5 203.0.113.6 5555 80\r\n",
                       v2_header(("203.0.113.5", 5555), ("203.0.113.6", 80))):
            with socket.create_connection(server.address, timeout=10) as s:
                for byte in header:
                    s.sendall(bytes([byte]))
                    time.sleep(0.001)
                s.sendall(b"x")
                assert recv_exactly(s, 1) == b"x"
        # The proxy's own checks: v1 UNKNOWN, v2 LOCAL keep the real peer.
        for header in (b"PROXY UNKNOWN\r\n", v2_header(("0.0.0.0", 0), ("0.0.0.0", 0), 0)):
            with socket.create_connection(server.address, timeout=10) as s:
                s.sendall(header + b"ok")
                assert recv_exactly(s, 2) == b"ok"
                me = s.getsockname()
            assert seen.seen[-1]["peername"] == me
            assert seen.seen[-1]["proxy_peername"] is None
    assert [s["peername"] for s in seen.seen[:2]] == [("203.0.113.5", 5555)] * 2


def refused(server: netring.Server, payload: bytes, wait: float = 5.0) -> bytes:
    """Send `payload`; what came back before the server closed."""
    got = b""
    with socket.create_connection(server.address, timeout=wait + 5) as s:
        try:
            s.sendall(payload)
            while chunk := s.recv(4096):
                got += chunk
        except ConnectionResetError:
            pass
    return got


def test_untrusted_peers_and_bad_headers_never_reach_the_protocol(
        backend: str, seen: type[Seen], caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("DEBUG", logger="netring")
    with serving(seen, backend, proxy_protocol="v1", trusted_proxies=["10.0.0.0/8"]) as server:
        # A real header, from an address that may not send one.
        assert refused(server, b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r\nGET /") == b""
        assert wait_until(lambda: server.stats()["handshakes_failed"] == 1, 5)
    assert any("not a trusted proxy" in r.getMessage() for r in caplog.records)
    with serving(seen, backend, proxy_protocol="any", trusted_proxies=LOCALHOST,
                 proxy_timeout=0.3) as server:
        for bad in (b"GET / HTTP/1.1\r\n\r\n",                      # no header
                    b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n",      # bad port
                    b"PROXY TCP4 " + b"1" * 200,                    # over 107 bytes
                    SIG + b"\x21\x11\xff\xff" + bytes(100)):        # v2 over its bound
            assert refused(server, bad) == b""
        t0 = time.monotonic()
        assert refused(server, b"PROXY TCP4 1.2.3.4") == b""     # then silence
        assert time.monotonic() - t0 < 3, "closed after proxy_timeout"
        assert wait_until(lambda: server.stats()["handshakes_failed"] == 5, 5)
        assert server.stats()["connections_open"] == 0
        with socket.create_connection(server.address, timeout=10) as s:
            s.sendall(b"PROXY TCP4 9.9.9.9 8.8.8.8 9 8\r\nfine")
            assert recv_exactly(s, 4) == b"fine"
    assert [s["peername"] for s in seen.seen] == [("9.9.9.9", 9)]


def test_tls_behind_a_proxy_header(backend: str, seen: type[Seen]) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    tls = netring.TLSConfig(b"".join(p.bytes() for p in cert.cert_chain_pems),
                            cert.private_key_pem.bytes())
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)

    class TLSSeen(Seen):
        def connection_made(self, transport: Any) -> None:
            super().connection_made(transport)
            self.seen[-1]["version"] = transport.get_extra_info("ssl_version")

    with serving(TLSSeen, backend, tls=tls, proxy_protocol="v2",
                 trusted_proxies=LOCALHOST) as server:
        raw = socket.create_connection(server.address, timeout=10)
        raw.sendall(v2_header(("192.0.2.99", 777), ("192.0.2.1", 443)))
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"through tls")
            assert recv_exactly(s, 11) == b"through tls"
    assert seen.seen[0]["peername"] == ("192.0.2.99", 777)
    assert seen.seen[0]["version"] in ("TLSv1.2", "TLSv1.3")


def test_proxy_configuration_errors() -> None:
    with pytest.raises(netring.ConfigurationError, match="needs trusted_proxies"):
        netring.Server(Seen, proxy_protocol="v1")
    with pytest.raises(netring.ConfigurationError, match="proxy_protocol"):
        netring.Server(Seen, proxy_protocol="v3", trusted_proxies=LOCALHOST)
    with pytest.raises(netring.ConfigurationError, match="trusted_proxies"):
        netring.Server(Seen, proxy_protocol="v1", trusted_proxies=["10.0.0.300/8"])
    with pytest.raises(netring.ConfigurationError, match="needs proxy_protocol"):
        netring.Server(Seen, trusted_proxies=LOCALHOST)
    with pytest.raises(TypeError, match="trusted_proxies"):
        netring.Server(Seen, proxy_protocol="v1", trusted_proxies="10.0.0.0/8")


def test_many_connections_behind_a_proxy(backend: str, seen: type[Seen]) -> None:
    errors: list[BaseException] = []

    def client(i: int) -> None:
        try:
            with socket.create_connection(server.address, timeout=10) as s:
                s.sendall(v2_header((f"10.9.{i // 256}.{i % 256}", 1000 + i), ("10.0.0.1", 80)))
                for _ in range(10):
                    s.sendall(b"ping")
                    assert recv_exactly(s, 4) == b"ping"
        except BaseException as e:  # reported below
            errors.append(e)

    with serving(seen, backend, proxy_protocol="v2", trusted_proxies=LOCALHOST) as server:
        threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(20)
    assert errors == []
    assert sorted(s["peername"][1] for s in seen.seen) == list(range(1000, 1050))
