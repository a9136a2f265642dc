"""TLS for outbound connections (`pool.connect(tls=netring.TLSClientConfig(...))`)
against Python's own `ssl` server and against netring's TLS servers, on both
backends: verification (good, unknown issuer, wrong name), client
certificates, session resumption, and what `get_extra_info` reports."""

from __future__ import annotations

import socket
import ssl
import struct
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import netring
import pytest
from conftest import serving
from netring.servers.echo import Echo

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


def identity(ca: Any, *names: str) -> tuple[bytes, bytes]:
    cert = ca.issue_cert(*names)
    return b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes()


@contextmanager
def ssl_echo_server(cert: tuple[bytes, bytes], tmp_path: Any) -> Iterator[tuple[int, list[Any]]]:
    """Python's ssl server on 127.0.0.1:0 echoing each connection until EOF;
    yields (port, handshake errors seen)."""
    (tmp_path / "c.pem").write_bytes(cert[0])
    (tmp_path / "k.pem").write_bytes(cert[1])
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(tmp_path / "c.pem", tmp_path / "k.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    errors: list[Any] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                raw, _ = listener.accept()
            except TimeoutError:
                continue
            raw.settimeout(10)
            try:
                with ctx.wrap_socket(raw, server_side=True) as s:
                    while data := s.recv(65536):
                        s.sendall(data)
            except (OSError, ssl.SSLError) as e:
                errors.append(e)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], errors
    finally:
        stop.set()
        thread.join(5)
        listener.close()


class Client(netring.Protocol):
    """Collects what it receives; `done` is set when `want` bytes came."""

    def __init__(self, want: int = 0) -> None:
        self.want = want
        self.got = bytearray()
        self.done = threading.Event()
        self.lost = threading.Event()
        self.exc: BaseException | None = None

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.got += data
        if len(self.got) >= self.want:
            self.done.set()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.exc = exc
        self.lost.set()


def echo_through(pool: netring.IOPool, port: int, tls: netring.TLSClientConfig,
                 payload: bytes, host: str = "127.0.0.1") -> tuple[Any, Client]:
    client = Client(len(payload))
    transport, _ = pool.connect(lambda: client, host, port, tls=tls, timeout=10).result(15)
    transport.write(payload)
    assert client.done.wait(10), f"echoed {len(client.got)} of {len(payload)} bytes"
    assert bytes(client.got) == payload
    return transport, client


def test_connects_to_a_python_ssl_server_and_reports_the_session(
        backend: str, ca: Any, tmp_path: Any) -> None:
    cert = identity(ca, "localhost", "127.0.0.1")
    tls = netring.TLSClientConfig(ca=ca.cert_pem.bytes(), server_hostname="localhost")
    with ssl_echo_server(cert, tmp_path) as (port, errors), \
            netring.IOPool(1, backend=backend) as pool:
        payload = bytes(range(256)) * 1024  # 256 KiB: many records each way
        transport, client = echo_through(pool, port, tls, payload)
        assert transport.get_extra_info("server_hostname") == "localhost"
        assert transport.get_extra_info("ssl_version") == "TLSv1.3"
        name, version, bits = transport.get_extra_info("cipher")
        assert name.startswith("TLS_") and version == "TLSv1.3" and bits in (128, 256)
        peercert = transport.get_extra_info("peercert")
        assert ("DNS", "localhost") in peercert["subjectAltName"], peercert
        assert "notAfter" in peercert and peercert["issuer"]
        assert transport.get_extra_info("peercert_der")[:1] == b"\x30"  # a DER SEQUENCE
        assert transport.get_extra_info("alpn_protocol") is None
        assert transport.get_extra_info("no such thing", "dflt") == "dflt"
        transport.close()  # close_notify; the ssl server sees a clean EOF
        assert client.lost.wait(10) and client.exc is None, client.exc
        assert errors == []


def test_verification_failures_fail_the_connect_with_the_reason(
        backend: str, ca: Any, tmp_path: Any) -> None:
    cert = identity(ca, "localhost", "127.0.0.1")
    with ssl_echo_server(cert, tmp_path) as (port, _), \
            netring.IOPool(1, backend=backend) as pool:
        # A CA the client does not trust (the system roots).
        untrusting = netring.TLSClientConfig(server_hostname="localhost")
        future = pool.connect(Client, "127.0.0.1", port, tls=untrusting, timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError,
                           match=r"certificate verify failed.*Unknown"):
            future.result(15)
        # The right CA, the wrong name.
        wrong = netring.TLSClientConfig(ca=ca.cert_pem.bytes(), server_hostname="example.org")
        future = pool.connect(Client, "127.0.0.1", port, tls=wrong, timeout=10)
        with pytest.raises(netring.TLSCertVerificationError, match=r"example\.org|NotValidForName"):
            future.result(15)
        # Without server_hostname the host given to connect is checked: the
        # certificate covers 127.0.0.1.
        by_ip = netring.TLSClientConfig(ca=ca.cert_pem.bytes())
        transport, _ = echo_through(pool, port, by_ip, b"by address")
        assert transport.get_extra_info("server_hostname") == "127.0.0.1"
        transport.close()
        assert pool.stats()["handshakes_failed"] == 2


def test_client_certificates_sessions_and_alpn_between_netring_peers(
        backend: str, ca: Any) -> None:
    client_ca = trustme.CA()
    server_tls = netring.TLSConfig(*identity(ca, "localhost"), ca=client_ca.cert_pem.bytes(),
                                   client_auth="required", alpn=["echo/2", "echo/1"])
    seen: list[Any] = []

    class Recording(Echo):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            seen.append({k: transport.get_extra_info(k) for k in
                         ("peercert", "alpn_protocol", "session_reused", "server_hostname")})
            super().connection_made(transport)

    chain, key = identity(client_ca, "client.example")
    with serving(Recording, backend, tls=server_tls) as server, \
            netring.IOPool(1, backend=backend) as pool:
        tls = netring.TLSClientConfig(server_hostname="localhost", ca=ca.cert_pem.bytes(),
                                      cert=chain, key=key, alpn=["echo/1"])
        first, _ = echo_through(pool, server.port, tls, b"first")
        assert first.get_extra_info("alpn_protocol") == "echo/1"
        assert first.get_extra_info("session_reused") is False
        first.close()
        # The same config resumes the session (a TLS 1.3 ticket).
        second, _ = echo_through(pool, server.port, tls, b"second")
        assert second.get_extra_info("session_reused") is True
        second.close()
        assert [s["session_reused"] for s in seen] == [False, True]
        assert seen[0]["alpn_protocol"] == "echo/1"
        assert seen[0]["server_hostname"] == "localhost"
        assert ("DNS", "client.example") in seen[0]["peercert"]["subjectAltName"]
        # Without a client certificate the server refuses the handshake. In
        # TLS 1.3 the client's side of it is over by then (as with Python's
        # ssl): its connection is lost with the server's alert.
        anonymous = netring.TLSClientConfig(server_hostname="localhost", ca=ca.cert_pem.bytes())
        client = Client()
        future = pool.connect(lambda: client, "127.0.0.1", server.port, tls=anonymous,
                              timeout=10)
        try:
            future.result(15)
        except netring.TLSError:
            pass
        else:
            assert client.lost.wait(10)
            assert isinstance(client.exc, netring.TLSError), client.exc
            assert "CertificateRequired" in str(client.exc)
        assert len(seen) == 2, "the refused client never reached the protocol"
        assert server.stats()["handshakes_failed"] == 1


def test_client_configuration_errors(ca: Any) -> None:
    with pytest.raises(netring.ConfigurationError, match="cert and key go together"):
        netring.TLSClientConfig(cert=identity(ca, "x")[0])
    with pytest.raises(netring.ConfigurationError, match="min_version"):
        netring.TLSClientConfig(min_version="SSLv3")  # type: ignore[arg-type]
    with pytest.raises(netring.ConfigurationError, match="server_hostname"):
        netring.TLSClientConfig(server_hostname="bad name!")
    with pytest.raises(netring.ConfigurationError, match="ca: not PEM"):
        netring.TLSClientConfig(ca=b"nope")
    with netring.IOPool(1) as pool, \
            pytest.raises(TypeError, match=r"tls: must be a netring\.TLSClientConfig"):
        pool.connect(Client, "127.0.0.1", 1, tls=ssl.create_default_context())  # type: ignore[arg-type]


def test_a_server_that_resets_mid_handshake_fails_the_connect(backend: str) -> None:
    listener = socket.create_server(("127.0.0.1", 0))

    def reset_after_hello() -> None:
        conn, _ = listener.accept()
        conn.recv(4096)  # the ClientHello
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.close()  # RST

    t = threading.Thread(target=reset_after_hello)
    t.start()
    try:
        with netring.IOPool(1, backend=backend) as pool:
            tls = netring.TLSClientConfig(server_hostname="localhost",
                                          ca=trustme.CA().cert_pem.bytes())
            future = pool.connect(Client, "127.0.0.1", listener.getsockname()[1], tls=tls,
                                  timeout=10)
            with pytest.raises(ConnectionResetError):
                future.result(15)
            assert pool.stats()["handshakes_failed"] == 1
            assert pool.stats()["connections_open"] == 0
    finally:
        t.join(5)
        listener.close()
