"""TLS in the engine (rustls): Python's own `ssl` client against netring
servers with `tls=netring.TLSConfig(...)`, on both backends. Test
certificates come from trustme (a throwaway CA per test session)."""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import netring
import pytest
import redis as redis_py
from conftest import cli_server, recv_exactly, serving
from netring.servers.echo import Echo

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def tls(ca: Any) -> netring.TLSConfig:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    return netring.TLSConfig(chain, cert.private_key_pem.bytes(), alpn=["echo/1", "http/1.1"])


@pytest.fixture(scope="module")
def client_ctx(ca: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(ctx)
    return ctx


def tls_connect(server: netring.Server, ctx: ssl.SSLContext, **kw: Any) -> ssl.SSLSocket:
    raw = socket.create_connection(server.address, timeout=10)
    return ctx.wrap_socket(raw, server_hostname="localhost", **kw)


class Recorder(Echo):
    """Echo that records its lifecycle for assertions."""

    events: list[str]
    lock = threading.Lock()

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        with self.lock:
            self.events.append("made")
        super().connection_made(transport)

    def eof_received(self) -> bool | None:
        with self.lock:
            self.events.append("eof")
        return super().eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        with self.lock:
            self.events.append(f"lost {exc}" if exc else "lost")


@pytest.fixture
def recorder() -> Iterator[type[Recorder]]:
    Recorder.events = []
    yield Recorder


def wait_for(cond: Any, timeout: float = 5.0) -> bool:
    done = threading.Event()
    for _ in range(int(timeout / 0.01)):
        if cond():
            return True
        done.wait(0.01)
    return bool(cond())


def test_a_python_ssl_client_handshakes_and_echoes(backend: str, tls: netring.TLSConfig,
                                                   client_ctx: ssl.SSLContext) -> None:
    with serving(Echo, backend, tls=tls) as server:
        client_ctx.set_alpn_protocols(["http/1.1"])
        with tls_connect(server, client_ctx) as s:
            assert s.version() in ("TLSv1.3", "TLSv1.2")
            assert s.selected_alpn_protocol() == "http/1.1"
            for i in range(100):
                msg = f"message {i} ".encode() * (i + 1)
                s.sendall(msg)
                assert recv_exactly(s, len(msg)) == msg
            # A large write crosses many records and receive buffers.
            big = bytes(range(256)) * 4096
            s.sendall(big)
            assert recv_exactly(s, len(big)) == big
        stats = server.stats()
        assert stats["connections_accepted"] == 1
        assert stats["bytes_in"] > len(big), "bytes_in counts the wire"


def test_close_notify_is_eof_received_and_a_bare_fin_is_a_truncation(
        backend: str, tls: netring.TLSConfig, client_ctx: ssl.SSLContext,
        recorder: type[Recorder]) -> None:
    with serving(recorder, backend, tls=tls) as server:
        s = tls_connect(server, client_ctx)
        s.sendall(b"hi")
        assert recv_exactly(s, 2) == b"hi"
        raw = s.unwrap()  # sends close_notify; the echo closes in answer
        assert wait_for(lambda: "lost" in recorder.events), recorder.events
        assert recorder.events == ["made", "eof", "lost"]
        assert raw.recv(1) == b"", "the server closed after its close_notify"
        raw.close()
        recorder.events.clear()
        # FIN without close_notify: connection_lost says the stream was cut.
        s = tls_connect(server, client_ctx)
        s.sendall(b"x")
        assert recv_exactly(s, 1) == b"x"
        s.shutdown(socket.SHUT_WR)  # a TCP FIN under the TLS session
        assert wait_for(lambda: any(e.startswith("lost") for e in recorder.events))
        s.close()
        assert recorder.events[0] == "made"
        assert "eof" not in recorder.events
        assert "truncated" in recorder.events[-1], recorder.events


def test_a_client_that_does_not_speak_tls_never_reaches_the_protocol(
        backend: str, tls: netring.TLSConfig, client_ctx: ssl.SSLContext,
        recorder: type[Recorder]) -> None:
    with serving(recorder, backend, tls=tls) as server:
        with socket.create_connection(server.address, timeout=10) as s:
            s.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):
                reply += chunk
        assert reply[:1] == b"\x15", f"a TLS alert record, not {reply[:16]!r}"
        # A client that does not trust the certificate fails its handshake;
        # the server goes on serving the next one.
        untrusting = ssl.create_default_context()
        with pytest.raises(ssl.SSLCertVerificationError):
            tls_connect(server, untrusting)
        with tls_connect(server, client_ctx) as s:
            s.sendall(b"ok")
            assert recv_exactly(s, 2) == b"ok"
        assert wait_for(lambda: recorder.events[:1] == ["made"])
        assert recorder.events.count("made") == 1, recorder.events


def test_framing_applies_to_the_plaintext(backend: str, tls: netring.TLSConfig,
                                          client_ctx: ssl.SSLContext) -> None:
    class Lines(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            self.transport = transport

        def packet_received(self, packet: bytes) -> None:
            self.transport.write(packet.upper() + b"\n")

    framing = netring.Delimited(b"\n", max_line=1024)
    with serving(Lines, backend, tls=tls, framing=framing) as server, \
            tls_connect(server, client_ctx) as s:
        s.sendall(b"one\ntw")
        s.sendall(b"o\nthree\n")
        assert recv_exactly(s, 14) == b"ONE\nTWO\nTHREE\n"


def test_configuration_errors_are_raised_when_the_config_is_made(ca: Any, tmp_path: Path) -> None:
    cert = ca.issue_cert("localhost")
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    other = ca.issue_cert("other").private_key_pem.bytes()
    with pytest.raises(netring.ConfigurationError, match="TLS: certificate and key"):
        netring.TLSConfig(chain, other)
    with pytest.raises(netring.ConfigurationError, match="key: not PEM"):
        netring.TLSConfig(chain, b"garbage")
    with pytest.raises(netring.ConfigurationError, match="cannot read"):
        netring.TLSConfig(str(tmp_path / "missing.pem"), str(tmp_path / "missing.key"))
    with pytest.raises(netring.ConfigurationError, match="alpn"):
        netring.TLSConfig(chain, cert.private_key_pem.bytes(), alpn=[""])
    with pytest.raises(TypeError, match=r"tls: must be a netring\.TLSConfig"):
        netring.Server(Echo, "127.0.0.1", 0, tls="yes")  # type: ignore[arg-type]
    # Files work as well as bytes.
    (tmp_path / "cert.pem").write_bytes(chain)
    (tmp_path / "key.pem").write_bytes(cert.private_key_pem.bytes())
    assert netring.TLSConfig(tmp_path / "cert.pem", str(tmp_path / "key.pem")).alpn == ()


def test_a_stalled_handshake_is_closed_after_handshake_timeout(
        backend: str, ca: Any, recorder: type[Recorder]) -> None:
    cert = ca.issue_cert("localhost")
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    quick = netring.TLSConfig(chain, cert.private_key_pem.bytes(), handshake_timeout=0.3)
    assert quick.handshake_timeout == 0.3
    with serving(recorder, backend, tls=quick) as server, \
            socket.create_connection(server.address, timeout=10) as s:
        s.sendall(b"\x16\x03\x01")  # the start of a ClientHello, then silence
        t0 = time.monotonic()
        assert s.recv(1) == b"", "the server closes the connection"
        assert 0.25 <= time.monotonic() - t0 < 5
    assert recorder.events == [], "the protocol never saw it"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl not on PATH (Debian: openssl)")
@pytest.mark.parametrize("version", ["-tls1_2", "-tls1_3"])
def test_openssl_s_client_handshakes_with_alpn_and_echoes(
        backend: str, tls: netring.TLSConfig, ca: Any, tmp_path: Path, version: str) -> None:
    class EchoOnce(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            self.transport = transport

        def data_received(self, data: bytes) -> None:
            self.transport.write(data)
            self.transport.close()  # close_notify, after the echo

    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    with serving(EchoOnce, backend, tls=tls) as server:
        proc = subprocess.run(
            ["openssl", "s_client", "-connect", f"127.0.0.1:{server.port}", version,
             "-servername", "localhost", "-CAfile", str(ca_file), "-verify_return_error",
             "-alpn", "echo/1", "-ign_eof"],
            input=b"hello over openssl\n", capture_output=True, timeout=20)
    out = proc.stdout.decode(errors="replace")
    assert "Verify return code: 0 (ok)" in out, out[-2000:]
    assert "ALPN protocol: echo/1" in out, out[-2000:]
    assert ("TLSv1.2" if version == "-tls1_2" else "TLSv1.3") in out
    assert "hello over openssl" in out, out[-1000:]  # s_client prints what it reads


@pytest.mark.skipif(shutil.which("redis-cli") is None,
                    reason="redis-cli not on PATH (Debian package redis-tools)")
def test_the_cli_serves_kv_over_tls_to_redis_cli(backend: str, ca: Any, tmp_path: Path) -> None:
    cert = ca.issue_cert("localhost", "127.0.0.1")
    files = {name: tmp_path / name for name in ("ca.pem", "cert.pem", "key.pem")}
    ca.cert_pem.write_to_path(str(files["ca.pem"]))
    files["cert.pem"].write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
    cert.private_key_pem.write_to_path(str(files["key.pem"]))
    args = ["--tls-cert", str(files["cert.pem"]), "--tls-key", str(files["key.pem"])]
    with cli_server("kv", backend=backend, args=args) as cli:
        assert cli.ready[0].endswith(", tls)"), cli.ready

        def redis(*command: str) -> str:
            out = subprocess.run(
                ["redis-cli", "--tls", "--cacert", str(files["ca.pem"]), "--sni", "localhost",
                 "-h", "127.0.0.1", "-p", str(cli.port), *command],
                capture_output=True, timeout=20, text=True)
            assert out.returncode == 0, out.stderr
            return out.stdout.strip()

        assert redis("SET", "greeting", "hello over tls") == "OK"
        assert redis("GET", "greeting") == "hello over tls"
        assert redis("PING") == "PONG"

        # redis-py with ssl=True, pipelined.
        client = redis_py.Redis(host="127.0.0.1", port=cli.port, ssl=True,
                                ssl_ca_certs=str(files["ca.pem"]), socket_timeout=10)
        pipe = client.pipeline(transaction=False)
        for i in range(500):
            pipe.set(f"key:{i}", f"value {i}")
        assert all(pipe.execute())
        assert client.get("key:499") == b"value 499"
        assert client.get("greeting") == b"hello over tls"
        client.close()

        if shutil.which("redis-benchmark") is not None:
            # 20 TLS clients, pipelined: every request answered.
            run = subprocess.run(
                ["redis-benchmark", "--tls", "--cacert", str(files["ca.pem"]),
                 "--sni", "localhost", "-h", "127.0.0.1", "-p", str(cli.port),
                 "-c", "20", "-n", "20000", "-P", "16", "-t", "set,get", "-q"],
                capture_output=True, timeout=60, text=True)
            assert run.returncode == 0, run.stderr
            assert "SET:" in run.stdout and "GET:" in run.stdout, run.stdout


def test_the_cli_refuses_half_a_tls_configuration(tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "netring", "serve", "echo", "--port", "0",
                          "--tls-cert", str(tmp_path / "missing.pem")],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "--tls-cert and --tls-key go together" in run.stderr
    run = subprocess.run([sys.executable, "-m", "netring", "serve", "echo", "--port", "0",
                          "--tls-cert", str(tmp_path / "missing.pem"),
                          "--tls-key", str(tmp_path / "missing.key")],
                         capture_output=True, text=True, timeout=30)
    assert run.returncode == 2 and "cannot read" in run.stderr, run.stderr


class BigTLSWriter(netring.Protocol):
    """Writes 8 MiB in one call, then closes (close_notify after it)."""

    size = 8 * 1024 * 1024

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        transport.write(bytes(range(256)) * (self.size // 256))
        transport.close()


def test_one_write_larger_than_rustls_buffers_arrives_whole(
        backend: str, tls: netring.TLSConfig, client_ctx: ssl.SSLContext) -> None:
    with serving(BigTLSWriter, backend, tls=tls) as server, \
            tls_connect(server, client_ctx, suppress_ragged_eofs=False) as s:
        got = bytearray()
        while len(got) < BigTLSWriter.size:
            chunk = s.recv(1 << 20)
            assert chunk, f"closed after {len(got)} bytes"
            got += chunk
        assert got == bytes(range(256)) * (BigTLSWriter.size // 256)
        assert s.recv(1) == b"", "then close_notify"
