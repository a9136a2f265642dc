"""A TLS server's options, seen from Python's `ssl` and `openssl s_client`
clients on both backends: SNI, client certificates (optional, required),
the minimum version, session resumption, failed handshakes in `stats()`,
`get_extra_info`, and `Server.reload_tls` under traffic."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any, ClassVar

import netring
import pytest
from conftest import cli_server, recv_exactly, serving, wait_until
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
        assert wait_until(lambda: server.stats()["connections_open"] == 0, 5), server.stats()
        stats = server.stats()
    assert stats["handshakes_failed"] == 2
    assert stats["connections_accepted"] == 3
    assert stats["connections_closed"] == 3
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


def test_handshakes_beyond_max_handshakes_wait_in_the_backlog(backend: str, ca: Any) -> None:
    tls = netring.TLSConfig(*identity(ca, "localhost"), max_handshakes=2,
                            handshake_timeout=None)
    with serving(Echo, backend, tls=tls, io_threads=1) as server:
        established = tls_connect(server.port, client_ctx(ca))
        echo(established)
        stalled = [socket.create_connection(server.address, timeout=10) for _ in range(2)]
        for s in stalled:
            s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then silence
        assert wait_until(lambda: server.stats()["connections_accepted"] == 3, 5)
        done: dict[str, Any] = {}

        def late() -> None:
            try:
                with tls_connect(server.port, client_ctx(ca)) as s:
                    echo(s)
                    done["ok"] = True
            except BaseException as e:  # reported below
                done["error"] = e

        t = threading.Thread(target=late)
        t.start()
        threading.Event().wait(0.5)
        assert done == {}, "the third handshake waits in the backlog"
        assert server.stats()["connections_accepted"] == 3
        echo(established, b"still served")
        stalled[0].close()  # one handshake ends: the waiting one is taken
        t.join(10)
        assert done == {"ok": True}, done
        assert server.stats()["handshakes_failed"] == 1
        established.close()
        stalled[1].close()
    with pytest.raises(netring.ConfigurationError, match="max_handshakes"):
        netring.TLSConfig(*identity(ca, "localhost"), max_handshakes=0)


def rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def test_a_flood_of_stalled_handshakes_costs_bounded_memory(backend: str, ca: Any) -> None:
    # 3,000 clients each send the start of a ClientHello and stall. At most
    # max_handshakes are taken from the backlog; an established connection
    # is served throughout, and a new client gets in once they are gone.
    tls = netring.TLSConfig(*identity(ca, "localhost"), max_handshakes=500,
                            handshake_timeout=None)
    with serving(Echo, backend, tls=tls, io_threads=1, backlog=4096) as server:
        established = tls_connect(server.port, client_ctx(ca))
        echo(established)
        base = rss_mib()
        stalled = []
        try:
            for i in range(3000):
                s = socket.create_connection(server.address, timeout=10)
                s.sendall(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03" + bytes(100))
                stalled.append(s)
                if i % 500 == 0:
                    echo(established, b"served during the flood")
            assert wait_until(lambda: server.stats()["connections_accepted"] == 501, 10)
            threading.Event().wait(0.3)
            assert server.stats()["connections_accepted"] == 501, "the rest wait in the backlog"
            grown = rss_mib() - base
            # ~7 KiB per stalled handshake here (rustls state, a receive
            # buffer's worth at most, the client sockets of this process).
            assert grown < 24, f"{grown:.1f} MiB for 500 stalled handshakes"
            echo(established, b"still served")
        finally:
            for s in stalled:
                s.close()
        with tls_connect(server.port, client_ctx(ca)) as s:
            echo(s, b"after the flood")
        established.close()


def test_oversize_or_garbage_handshakes_are_refused(backend: str, ca: Any) -> None:
    tls = netring.TLSConfig(*identity(ca, "localhost"))
    with serving(Echo, backend, tls=tls) as server:
        # A ClientHello that declares 16 MiB: refused before it is buffered.
        with socket.create_connection(server.address, timeout=10) as s:
            record = b"\x01\xff\xff\xff" + bytes(16000)
            s.sendall(b"\x16\x03\x01" + len(record).to_bytes(2, "big") + record)
            reply = b""
            try:
                while chunk := s.recv(4096):
                    reply += chunk
            except ConnectionResetError:
                pass
            assert reply[:1] in (b"", b"\x15"), reply[:16]
        # Random bytes, in several shapes.
        for garbage in (bytes(range(256)) * 64, b"\x16\x03\x03\x00\x00", b"\x17" * 5000):
            with socket.create_connection(server.address, timeout=10) as s:
                try:
                    s.sendall(garbage)
                    while s.recv(4096):
                        pass
                except ConnectionResetError:
                    pass
        with tls_connect(server.port, client_ctx(ca)) as s:
            echo(s)
        assert server.stats()["handshakes_failed"] == 4


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not on PATH (Debian: openssl)")
def test_a_renegotiation_attempt_is_refused_and_harms_nothing(
        backend: str, ca: Any, tmp_path: Path) -> None:
    ca.cert_pem.write_to_path(str(tmp_path / "ca.pem"))
    tls = netring.TLSConfig(*identity(ca, "localhost"))
    with serving(Echo, backend, tls=tls) as server:
        other = tls_connect(server.port, client_ctx(ca))
        echo(other)
        proc = subprocess.Popen(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", "-tls1_2",
             "-CAfile", str(tmp_path / "ca.pem")],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            assert proc.stdin is not None
            proc.stdin.write(b"before renegotiation\n")
            proc.stdin.flush()
            threading.Event().wait(0.5)
            proc.stdin.write(b"R\n")  # s_client: renegotiate
            proc.stdin.flush()
            out, err = proc.communicate(timeout=20)
        except BrokenPipeError:
            out, err = proc.communicate(timeout=20)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert b"before renegotiation" in out, out[-500:]
        assert b"RENEGOTIATING" in out + err
        echo(other, b"other connections are untouched")
        with tls_connect(server.port, client_ctx(ca)) as s:
            echo(s, b"and new ones are served")
        other.close()


def test_the_cli_asks_for_client_certificates(backend: str, ca: Any, tmp_path: Path) -> None:
    client_ca = trustme.CA()
    chain, key = identity(ca, "localhost")
    (tmp_path / "cert.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(key)
    client_ca.cert_pem.write_to_path(str(tmp_path / "client-ca.pem"))
    client_ca.issue_cert("device").private_key_and_cert_chain_pem.write_to_path(
        str(tmp_path / "client.pem"))
    args = ["--tls-cert", str(tmp_path / "cert.pem"), "--tls-key", str(tmp_path / "key.pem"),
            "--tls-ca", str(tmp_path / "client-ca.pem"), "--tls-client-auth", "required"]
    with cli_server("echo", backend=backend, args=args) as cli:
        with_cert = client_ctx(ca)
        with_cert.load_cert_chain(tmp_path / "client.pem")
        with tls_connect(cli.port, with_cert) as s:
            echo(s, b"with a certificate")
        s = tls_connect(cli.port, client_ctx(ca))
        with pytest.raises((ssl.SSLError, ConnectionError)):
            echo(s, b"without one")
        s.close()
    run = subprocess.run([sys.executable, "-m", "netring", "serve", "echo", "--port", "0",
                          *args[:4], "--tls-client-auth", "required"],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "go together" in run.stderr, run.stderr


def test_tls_buffers_count_in_buffer_memory(backend: str, ca: Any) -> None:
    tls = netring.TLSConfig(*identity(ca, "localhost"))
    with serving(Echo, backend, tls=tls, max_buffer_memory=1 << 20) as server, \
            socket.create_connection(server.address, timeout=10) as s:
        # A 16,000-byte handshake record, 10,000 bytes of it sent: rustls
        # holds them until the record is complete.
        s.sendall(b"\x16\x03\x01" + (16000).to_bytes(2, "big") + b"\x01" + bytes(9999))
        assert wait_until(lambda: server.stats()["buffer_memory"] >= 10_005, 5), server.stats()
        s.sendall(bytes(6000))  # complete (and not a ClientHello): refused
        while s.recv(4096):
            pass
        assert wait_until(lambda: server.stats()["buffer_memory"] == 0, 5), server.stats()


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not on PATH (Debian: openssl)")
def test_encrypted_private_keys_with_a_password(backend: str, ca: Any, tmp_path: Path) -> None:
    chain, key = identity(ca, "localhost")
    (tmp_path / "key.pem").write_bytes(key)
    subprocess.run(["openssl", "pkcs8", "-topk8", "-in", str(tmp_path / "key.pem"),
                    "-out", str(tmp_path / "enc.pem"), "-passout", "pass:s3cret"],
                   check=True, capture_output=True, timeout=20)
    enc = (tmp_path / "enc.pem").read_bytes()
    assert b"ENCRYPTED PRIVATE KEY" in enc
    for password in ("s3cret", b"s3cret", lambda: "s3cret"):
        tls = netring.TLSConfig(chain, enc, password=password)
        with serving(Echo, backend, tls=tls) as server, \
                tls_connect(server.port, client_ctx(ca)) as s:
            echo(s)
    with pytest.raises(netring.ConfigurationError, match="encrypted; give its password"):
        netring.TLSConfig(chain, enc)
    with pytest.raises(netring.ConfigurationError, match="cannot decrypt"):
        netring.TLSConfig(chain, enc, password="wrong")
    with pytest.raises(TypeError, match="password"):
        netring.TLSConfig(chain, enc, password=42)  # type: ignore[arg-type]
    # The client side takes the same.
    netring.TLSClientConfig(ca=ca.cert_pem.bytes(), cert=chain, key=enc, password="s3cret")
    # A legacy encrypted PEM (Proc-Type) gets a hint to convert it.
    legacy = subprocess.run(["openssl", "ec", "-aes256", "-in", str(tmp_path / "key.pem"),
                             "-passout", "pass:s3cret"], capture_output=True, timeout=20)
    if legacy.returncode == 0 and b"Proc-Type" in legacy.stdout:
        with pytest.raises(netring.ConfigurationError, match="openssl pkcs8 -topk8"):
            netring.TLSConfig(chain, legacy.stdout, password="s3cret")
