"""A TLS server's options, seen from Python's `ssl` and `openssl s_client`
clients on both backends: SNI, client certificates (optional, required),
the minimum version, session resumption, failed handshakes in `stats()`,
`get_extra_info`, and `Server.reload_tls` under traffic."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from pathlib import Path
from typing import Any, ClassVar

import netring
import pytest
from conftest import recv_exactly, serving
from netring.servers.echo import Echo

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


def identity(ca: Any, *names: str) -> tuple[bytes, bytes]:
    cert = ca.issue_cert(*names)
    return b"".join(p.bytes() for p in cert.cert_chain_pems), cert.private_key_pem.bytes()


def client_ctx(ca: Any, **kw: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    for k, v in kw.items():
        setattr(ctx, k, v)
    return ctx


def tls_connect(port: int, ctx: ssl.SSLContext, name: str = "localhost",
                **kw: Any) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return ctx.wrap_socket(raw, server_hostname=name, **kw)


def echo(s: ssl.SSLSocket, data: bytes = b"ping") -> None:
    s.sendall(data)
    assert recv_exactly(s, len(data)) == data


class Info(Echo):
    """Echo that records what get_extra_info says at connection_made."""

    seen: ClassVar[list[dict[str, Any]]] = []
    keys = ("server_hostname", "ssl_version", "cipher", "peercert", "alpn_protocol",
            "session_reused")

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.seen.append({k: transport.get_extra_info(k) for k in self.keys})
        super().connection_made(transport)


@pytest.fixture
def info() -> type[Info]:
    Info.seen = []
    return Info


def test_sni_chooses_the_certificate_and_the_protocol_sees_the_name(
        backend: str, ca: Any, info: type[Info]) -> None:
    tls = netring.TLSConfig(*identity(ca, "localhost"),
                            sni={"Other.Test": identity(ca, "other.test")})
    assert tls.sni_names == ("other.test",)
    with serving(info, backend, tls=tls) as server:
        with tls_connect(server.port, client_ctx(ca), "other.test") as s:
            assert ("DNS", "other.test") in s.getpeercert()["subjectAltName"]
            echo(s)
        with tls_connect(server.port, client_ctx(ca), "localhost") as s:
            assert ("DNS", "localhost") in s.getpeercert()["subjectAltName"]
            echo(s)
    assert [i["server_hostname"] for i in info.seen] == ["other.test", "localhost"]
    version = info.seen[0]["ssl_version"]
    assert version == "TLSv1.3"
    assert info.seen[0]["cipher"][1] == version
    assert info.seen[0]["peercert"] is None, "no client certificate was asked for"


def test_client_certificates_optional_and_required(backend: str, ca: Any, tmp_path: Path,
                                                   info: type[Info]) -> None:
    client_ca = trustme.CA()
    cert = client_ca.issue_cert("device-17")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "client.pem"))
    with_cert = client_ctx(ca)
    with_cert.load_cert_chain(tmp_path / "client.pem")
    for mode in ("optional", "required"):
        tls = netring.TLSConfig(*identity(ca, "localhost"), ca=client_ca.cert_pem.bytes(),
                                client_auth=mode)  # type: ignore[arg-type]
        info.seen.clear()
        with serving(info, backend, tls=tls) as server:
            with tls_connect(server.port, with_cert) as s:
                echo(s)
            assert ("DNS", "device-17") in info.seen[0]["peercert"]["subjectAltName"]
            # Without a certificate: accepted when optional, refused when required.
            s = tls_connect(server.port, client_ctx(ca))
            if mode == "optional":
                echo(s)
                assert info.seen[1]["peercert"] is None
            else:
                # TLS 1.3: the client learns of it on its first read.
                with pytest.raises((ssl.SSLError, ConnectionError)):
                    echo(s)
                assert len(info.seen) == 1
                assert server.stats()["handshakes_failed"] == 1
            s.close()
    with pytest.raises(netring.ConfigurationError, match="needs ca="):
        netring.TLSConfig(*identity(ca, "localhost"), client_auth="required")
    with pytest.raises(netring.ConfigurationError, match="client_auth"):
        netring.TLSConfig(*identity(ca, "localhost"), ca=client_ca.cert_pem.bytes(),
                          client_auth="sometimes")  # type: ignore[arg-type]


def test_min_version_refuses_older_clients(backend: str, ca: Any) -> None:
    tls = netring.TLSConfig(*identity(ca, "localhost"), min_version="TLSv1.3")
    with serving(Echo, backend, tls=tls) as server:
        old = client_ctx(ca, maximum_version=ssl.TLSVersion.TLSv1_2)
        with pytest.raises(ssl.SSLError):
            tls_connect(server.port, old)
        with tls_connect(server.port, client_ctx(ca)) as s:
            assert s.version() == "TLSv1.3"
            echo(s)
        assert server.stats()["handshakes_failed"] == 1
    with pytest.raises(netring.ConfigurationError, match="min_version"):
        netring.TLSConfig(*identity(ca, "localhost"), min_version="TLSv1.1")  # type: ignore[arg-type]


@pytest.mark.parametrize("version", ["TLSv1_2", "TLSv1_3"])
def test_python_clients_resume_their_sessions(backend: str, ca: Any, version: str,
                                              info: type[Info]) -> None:
    tls = netring.TLSConfig(*identity(ca, "localhost"))
    v = getattr(ssl.TLSVersion, version)
    ctx = client_ctx(ca, minimum_version=v, maximum_version=v)
    with serving(info, backend, tls=tls) as server:
        with tls_connect(server.port, ctx) as s:
            echo(s)  # a TLS 1.3 ticket arrives after the handshake: read first
            session = s.session
            assert not s.session_reused
        with tls_connect(server.port, ctx, session=session) as s:
            echo(s)
            assert s.session_reused, "the client resumed"
    assert [i["session_reused"] for i in info.seen] == [False, True]


def test_without_session_state_nothing_resumes(backend: str, ca: Any) -> None:
    tls = netring.TLSConfig(*identity(ca, "localhost"), session_cache=0, session_tickets=False)
    ctx = client_ctx(ca)
    with serving(Echo, backend, tls=tls) as server:
        with tls_connect(server.port, ctx) as s:
            echo(s)
            session = s.session
        with tls_connect(server.port, ctx, session=session) as s:
            echo(s)
            assert not s.session_reused


def test_failed_handshakes_are_counted_and_logged(backend: str, ca: Any,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    tls = netring.TLSConfig(*identity(ca, "localhost"))
    caplog.set_level("DEBUG", logger="netring")
    with serving(Echo, backend, tls=tls) as server:
        for garbage in (b"GET / HTTP/1.1\r\n\r\n", b"\x16\x03\x01\x00\x05hello"):
            with socket.create_connection(server.address, timeout=10) as s:
                s.sendall(garbage)
                while s.recv(4096):
                    pass
        with tls_connect(server.port, client_ctx(ca)) as s:
            echo(s)
        stats = server.stats()
    assert stats["handshakes_failed"] == 2
    assert stats["connections_accepted"] == 3
    reasons = [r.getMessage() for r in caplog.records if "closed before it opened" in
               r.getMessage()]
    assert len(reasons) == 2 and all("127.0.0.1" in r and "tls:" in r for r in reasons), reasons


def test_reload_tls_under_traffic(backend: str, ca: Any) -> None:
    new_ca = trustme.CA()
    old_ctx, new_ctx = client_ctx(ca), client_ctx(new_ca)
    server = netring.Server(Echo, "127.0.0.1", 0, backend=backend, io_threads=2,
                            tls=netring.TLSConfig(*identity(ca, "localhost")))
    server.start()
    try:
        kept = tls_connect(server.port, old_ctx)
        echo(kept)
        # A client echoing in a loop across the reload loses nothing.
        stop, failures, rounds = threading.Event(), [], [0]

        def traffic() -> None:
            try:
                while not stop.is_set():
                    echo(kept, b"x" * 1000)
                    rounds[0] += 1
            except BaseException as e:  # reported below
                failures.append(e)

        t = threading.Thread(target=traffic)
        t.start()
        server.reload_tls(netring.TLSConfig(*identity(new_ca, "localhost")))
        with tls_connect(server.port, new_ctx) as s:
            echo(s)
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(server.port, old_ctx)  # new handshakes get the new certificate
        before = rounds[0]
        assert all(not f for f in failures)
        while rounds[0] < before + 20 and t.is_alive():
            threading.Event().wait(0.01)
        stop.set()
        t.join(10)
        assert failures == [] and rounds[0] >= before + 20
        kept.close()
        with pytest.raises(netring.ConfigurationError, match="cannot read"):
            server.reload_tls(netring.TLSConfig("/nonexistent.pem", "/nonexistent.key"))
    finally:
        server.shutdown(2.0)
    plain = netring.Server(Echo, "127.0.0.1", 0)
    with pytest.raises(netring.ConfigurationError, match="without tls="):
        plain.reload_tls(netring.TLSConfig(*identity(ca, "localhost")))


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not on PATH (Debian: openssl)")
def test_openssl_s_client_with_sni_and_a_client_certificate(
        backend: str, ca: Any, tmp_path: Path, info: type[Info]) -> None:
    client_ca = trustme.CA()
    client = client_ca.issue_cert("sensor.example")
    client.cert_chain_pems[0].write_to_path(str(tmp_path / "client.pem"))
    client.private_key_pem.write_to_path(str(tmp_path / "client.key"))
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = netring.TLSConfig(*identity(ca, "localhost"), sni={"api.test": identity(ca, "api.test")},
                            ca=client_ca.cert_pem.bytes(), client_auth="required")

    class EchoOnce(info):  # type: ignore[valid-type,misc]
        def data_received(self, data: bytes) -> None:
            self.transport.write(data)
            self.transport.close()  # close_notify: s_client -ign_eof ends

    with serving(EchoOnce, backend, tls=tls) as server:
        proc = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}",
             "-servername", "api.test", "-verify_hostname", "api.test",
             "-CAfile", str(tmp_path / "ca.pem"), "-verify_return_error",
             "-cert", str(tmp_path / "client.pem"), "-key", str(tmp_path / "client.key"),
             "-ign_eof"],
            input=b"hello through sni\n", capture_output=True, timeout=20)
    out = proc.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, out[-2000:]
    assert "hello through sni" in out, out[-1000:]
    assert info.seen[0]["server_hostname"] == "api.test"
    assert ("DNS", "sensor.example") in info.seen[0]["peercert"]["subjectAltName"]
