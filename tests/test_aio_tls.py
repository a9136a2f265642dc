"""asyncio's ``ssl=`` on the engine's TLS: ``netring.aio.install()`` turns
an ``ssl.SSLContext`` given to ``create_server`` / ``create_connection``
(so ``asyncio.start_server``, ``open_connection``, uvicorn...) into the
engine's rustls TLS, and lets a context it cannot honour fall through to
the loop's own TLS. Certificates from trustme; both loops, both backends."""

from __future__ import annotations

import asyncio
import functools
import http.client
import socket
import ssl
from collections.abc import Awaitable, Callable
from typing import Any

import netring
import netring.aio as aio
import pytest
from conftest import serving, uvicorn_while
from netring.tls import cipher_names

trustme = pytest.importorskip("trustme")


@pytest.fixture(scope="module")
def ca() -> Any:
    return trustme.CA()


@pytest.fixture(scope="module")
def leaf(ca: Any) -> Any:
    return ca.issue_cert("localhost", "127.0.0.1")


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest, backend: str,
              monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NETRING_BACKEND", backend)
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


def run(loop_kind: str, main: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    with asyncio.Runner(loop_factory=functools.partial(aio.new_event_loop, loop_kind)) as r:
        return r.run(asyncio.wait_for(main(), timeout))


def server_context(leaf: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    leaf.configure_cert(ctx)  # load_cert_chain from a temporary file
    return ctx


def client_context(ca: Any) -> ssl.SSLContext:
    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    return ctx


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    seen = writer.get_extra_info("sslcontext"), writer.get_extra_info("ssl_object")
    writer.write(repr((seen[0] is not None, seen[1].version())).encode() + b"\n")
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_start_server_and_open_connection_with_contexts_run_on_the_engine(
        loop_kind: str, ca: Any, leaf: Any) -> None:
    server_ctx, client_ctx = server_context(leaf), client_context(ca)

    async def main() -> dict[str, Any]:
        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
        assert isinstance(server, aio.AioServer), "served by netring, not the loop's TLS"
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="localhost")
        assert isinstance(writer.transport, netring.Transport), "connected by netring"
        assert await reader.readline() == b"(True, 'TLSv1.3')\n"
        assert writer.get_extra_info("sslcontext") is client_ctx
        obj = writer.get_extra_info("ssl_object")
        assert obj.version() == "TLSv1.3"
        assert obj.cipher()[0] in cipher_names()
        assert obj.server_hostname == "localhost"
        assert obj.context is client_ctx
        assert dict(x[0] for x in obj.getpeercert()["subject"]).get("commonName") is None
        assert obj.getpeercert()["subjectAltName"][0] == ("DNS", "localhost")
        assert isinstance(obj.getpeercert(binary_form=True), bytes)
        payload = bytes(range(256)) * 4096  # 1 MiB, in order
        writer.write(payload)
        got = await reader.readexactly(len(payload))
        assert got == payload
        writer.write_eof()  # close_notify: the server's read ends, it closes
        assert await reader.read() == b""
        writer.close()
        await writer.wait_closed()
        stats = aio.engine_stats()
        server.close()
        await server.wait_closed()
        return stats

    stats = run(loop_kind, main)
    assert stats["connections_accepted"] == 1
    assert stats["connections_connected"] == 1


def test_client_certificates_alpn_and_ciphers_come_from_the_context(
        loop_kind: str, ca: Any, leaf: Any) -> None:
    server_ctx = server_context(leaf)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)
    server_ctx.set_alpn_protocols(["h2", "http/1.1"])
    client_ctx = client_context(ca)
    ca.issue_cert("client@example.org").configure_cert(client_ctx)
    client_ctx.set_alpn_protocols(["http/1.1"])
    client_ctx.set_ciphers("ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-AES256-GCM-SHA384")
    client_ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    bare = client_context(ca)  # no client certificate
    seen: list[Any] = []

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((writer.get_extra_info("peercert"), writer.get_extra_info("alpn_protocol")))
        writer.write(b"hi")
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0, ssl=server_ctx)
        assert isinstance(server, aio.AioServer)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client_ctx,
                                                       server_hostname="localhost")
        assert isinstance(writer.transport, netring.Transport)
        assert await reader.read() == b"hi"
        assert writer.get_extra_info("alpn_protocol") == "http/1.1"
        writer.close()
        # A client without a certificate is refused by the server (the
        # failed handshake never reaches the handler).
        with pytest.raises((ssl.SSLError, ConnectionError)):
            r2, _w2 = await asyncio.open_connection("127.0.0.1", port, ssl=bare,
                                                   server_hostname="localhost")
            await r2.read()
        server.close()
        await server.wait_closed()

    run(loop_kind, main)
    assert len(seen) == 1
    peercert, alpn = seen[0]
    assert peercert["subjectAltName"] == (("email", "client@example.org"),)
    assert alpn == "http/1.1"


def test_a_certificate_the_context_does_not_trust_fails_the_connect(
        loop_kind: str, leaf: Any) -> None:
    server_ctx = server_context(leaf)
    other = trustme.CA()

    async def main() -> None:
        server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=server_ctx)
        port = server.sockets[0].getsockname()[1]
        for ssl_arg in (client_context(other), True):  # another CA; the system's roots
            with pytest.raises(ssl.SSLCertVerificationError) as info:
                await asyncio.open_connection("127.0.0.1", port, ssl=ssl_arg,
                                              server_hostname="localhost")
            assert isinstance(info.value, netring.TLSCertVerificationError), \
                "the engine's TLS refused it, not the loop's"
        server.close()
        await server.wait_closed()

    run(loop_kind, main)


def test_contexts_the_engine_cannot_honour_fall_through(loop_kind: str, ca: Any,
                                                        leaf: Any) -> None:
    with_sni_callback = server_context(leaf)
    with_sni_callback.sni_callback = lambda obj, name, ctx: None
    tls12_only = server_context(leaf)
    tls12_only.maximum_version = ssl.TLSVersion.TLSv1_2
    made_before = server_context(leaf)
    made_before.__dict__.pop("_netring_tls_notes")  # as if made before netring's import
    unverified = ssl._create_unverified_context()

    async def main() -> None:
        for ctx in (with_sni_callback, tls12_only, made_before):
            server = await asyncio.start_server(echo, "127.0.0.1", 0, ssl=ctx)
            assert not isinstance(server, aio.AioServer), "the loop's own TLS serves it"
            port = server.sockets[0].getsockname()[1]
            reader, writer = await asyncio.open_connection(
                "127.0.0.1", port, ssl=unverified)  # CERT_NONE: the loop's own too
            assert not isinstance(writer.transport, netring.Transport)
            assert (await reader.readline()).startswith(b"(True, 'TLSv1.")
            writer.write(b"ping")
            assert await reader.readexactly(4) == b"ping"
            writer.close()
            server.close()
            await server.wait_closed()

    run(loop_kind, main)


def test_from_ssl_context_says_what_it_cannot_honour(ca: Any, leaf: Any) -> None:
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with pytest.raises(netring.ConfigurationError, match="no certificate"):
        netring.TLSConfig.from_ssl_context(bare)
    # A context made before netring's import: its earlier calls are
    # unknown (a client certificate, ALPN), so neither side converts it.
    old_client = client_context(ca)
    ca.issue_cert("client@example.org").configure_cert(old_client)
    old_client.__dict__.pop("_netring_tls_notes")
    with pytest.raises(netring.ConfigurationError, match="made before netring was imported"):
        netring.TLSClientConfig.from_ssl_context(old_client)
    old_client.set_alpn_protocols(iter(["h2"]))  # noted nowhere, as before the import
    assert "_netring_tls_notes" not in old_client.__dict__
    # An iterator given to set_alpn_protocols is read once, for both.
    alpn = client_context(ca)
    alpn.set_alpn_protocols(iter(["h2", "http/1.1"]))
    assert netring.TLSClientConfig.from_ssl_context(alpn).alpn == ("h2", "http/1.1")
    no_tickets = server_context(leaf)
    no_tickets.num_tickets = 0
    assert netring.TLSConfig.from_ssl_context(no_tickets).session_tickets is False
    assert netring.TLSConfig.from_ssl_context(server_context(leaf)).session_tickets is True

    with pytest.raises(netring.ConfigurationError, match="not for a server"):
        netring.TLSConfig.from_ssl_context(client_context(ca))
    twice = server_context(leaf)
    leaf.configure_cert(twice)
    with pytest.raises(netring.ConfigurationError, match="several certificates"):
        netring.TLSConfig.from_ssl_context(twice)
    asks = server_context(leaf)
    asks.verify_mode = ssl.CERT_OPTIONAL
    with pytest.raises(netring.ConfigurationError, match="no loaded CA"):
        netring.TLSConfig.from_ssl_context(asks)
    capped = server_context(leaf)
    capped.maximum_version = ssl.TLSVersion.TLSv1_2
    with pytest.raises(netring.ConfigurationError, match=r"TLS 1\.3 is not allowed"):
        netring.TLSConfig.from_ssl_context(capped)
    unchecked = client_context(ca)
    unchecked.check_hostname = False
    with pytest.raises(netring.ConfigurationError, match="check_hostname"):
        netring.TLSClientConfig.from_ssl_context(unchecked)
    unchecked.verify_mode = ssl.CERT_NONE
    with pytest.raises(netring.ConfigurationError, match="verify_mode"):
        netring.TLSClientConfig.from_ssl_context(unchecked)
    # What it can: versions, tickets, the context's cipher list (as the
    # suites it enables), client auth against its CAs.
    ctx = server_context(leaf)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.options |= ssl.OP_NO_TICKET
    ctx.set_ciphers("ECDHE+AESGCM")
    ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(ctx)
    config = netring.TLSConfig.from_ssl_context(ctx)
    assert config.min_version == "TLSv1.3"
    assert config.client_auth == "required"
    assert config.ciphers is not None
    assert "ECDHE-RSA-AES128-GCM-SHA256" in config.ciphers
    assert not any("CHACHA20" in c and c.startswith("ECDHE") for c in config.ciphers)
    assert "TLS_AES_128_GCM_SHA256" in config.ciphers


def test_ciphers_limit_what_is_negotiated(backend: str, ca: Any, leaf: Any) -> None:
    with pytest.raises(netring.ConfigurationError, match="not a suite netring negotiates"):
        netring.TLSConfig(leaf.cert_chain_pems[0].bytes(), leaf.private_key_pem.bytes(),
                          ciphers=["AES128-SHA"])
    config = netring.TLSConfig(
        b"".join(p.bytes() for p in leaf.cert_chain_pems), leaf.private_key_pem.bytes(),
        ciphers=["TLS_CHACHA20_POLY1305_SHA256", "ECDHE-RSA-AES256-GCM-SHA384",
                 "ECDHE-ECDSA-AES256-GCM-SHA384"])
    with serving(asyncio.Protocol, backend, tls=config) as server:
        for version, want in ((ssl.TLSVersion.TLSv1_3, "TLS_CHACHA20_POLY1305_SHA256"),
                              (ssl.TLSVersion.TLSv1_2, "AES256-GCM-SHA384")):
            ctx = client_context(ca)
            ctx.maximum_version = version
            with socket.create_connection(("127.0.0.1", server.port), timeout=10) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost") as tls:
                assert want in tls.cipher()[0]


uvicorn = pytest.importorskip("uvicorn")


async def scheme_app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    body = scope["scheme"].encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(body))]})
    await send({"type": "http.response.body", "body": body})


def test_uvicorn_with_its_ssl_options_serves_https_from_the_engine(
        loop_kind: str, ca: Any, leaf: Any, tmp_path: Any) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    leaf.cert_chain_pems[0].write_to_path(str(cert))
    leaf.private_key_pem.write_to_path(str(key))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out: dict[str, Any] = {}

    def client() -> None:
        try:
            conn = http.client.HTTPSConnection("localhost", port, timeout=20,
                                               context=client_context(ca))
            for _ in range(3):
                conn.request("GET", "/")
                resp = conn.getresponse()
                out.setdefault("bodies", []).append(resp.read())
            conn.close()
        except BaseException as e:  # reported by the test
            out["error"] = e

    async def main() -> dict[str, Any]:
        config = uvicorn.Config(scheme_app, host="127.0.0.1", port=port, loop="none",
                                lifespan="off", log_level="warning",
                                ssl_certfile=str(cert), ssl_keyfile=str(key))
        return await uvicorn_while(config, client)

    stats = run(loop_kind, main, 60)
    assert out.get("bodies") == [b"https"] * 3, out.get("error")
    assert stats["connections_accepted"] == 1, "served by netring's TLS"


def test_aiohttp_on_a_given_socket_with_an_ssl_context_serves_https_from_the_engine(
        loop_kind: str, ca: Any, leaf: Any) -> None:
    web = pytest.importorskip("aiohttp.web")

    async def handler(request: Any) -> Any:
        body = await request.read()
        return web.Response(body=b"%s %s %d" % (request.scheme.encode(),
                                                request.path.encode(), len(body)))

    def client(port: int) -> list[bytes]:
        conn = http.client.HTTPSConnection("localhost", port, timeout=20,
                                           context=client_context(ca))
        replies = []
        for i in range(5):
            conn.request("POST", f"/item/{i}", body=b"y" * (i * 100_000))
            replies.append(conn.getresponse().read())
        conn.close()
        return replies

    async def main() -> dict[str, Any]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(runner, sock, ssl_context=server_context(leaf))
        await site.start()
        assert isinstance(site._server, aio.AioServer)
        replies = await asyncio.to_thread(client, sock.getsockname()[1])
        assert replies == [b"https /item/%d %d" % (i, i * 100_000) for i in range(5)]
        stats = aio.engine_stats()
        await runner.cleanup()
        return stats

    stats = run(loop_kind, main)
    assert stats["connections_accepted"] == 1


def test_websockets_over_tls_both_ends_on_the_engine(loop_kind: str, ca: Any, leaf: Any) -> None:
    """The websockets server and client with ``ssl=`` contexts: wss:// with
    the engine's TLS on both ends."""
    websockets = pytest.importorskip("websockets")
    from websockets.asyncio.client import connect as ws_connect

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    async def main() -> dict[str, Any]:
        async with websockets.serve(echo, "127.0.0.1", 0, ssl=server_context(leaf)) as server:
            assert isinstance(server.server, aio.AioServer)
            port = next(iter(server.sockets)).getsockname()[1]
            async with ws_connect(f"wss://localhost:{port}", ssl=client_context(ca),
                                  open_timeout=10) as ws:
                assert isinstance(ws.transport, netring.Transport)
                for i in range(200):
                    await ws.send(f"message {i}")
                    assert await ws.recv() == f"message {i}"
                await ws.send(b"\x01" * 300_000)
                assert await ws.recv() == b"\x01" * 300_000
            return aio.engine_stats()

    stats = run(loop_kind, main)
    assert stats["connections_accepted"] == 1
    assert stats["connections_connected"] == 1


def test_start_tls_upgrades_a_connection_of_the_engine(loop_kind: str, ca: Any,
                                                       leaf: Any) -> None:
    """STARTTLS: a plain exchange, then ``StreamWriter.start_tls`` on both
    ends (asyncio's own TLS over the engine's transports)."""
    payload = bytes(range(256)) * 1024

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        assert await reader.readline() == b"STARTTLS\n"
        writer.write(b"GO\n")
        await writer.drain()
        await writer.start_tls(server_context(leaf))
        data = await reader.readexactly(len(payload))
        writer.write(b"secure " + data)
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handler, "127.0.0.1", 0)
        assert isinstance(server, aio.AioServer)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        assert isinstance(writer.transport, netring.Transport)
        writer.write(b"STARTTLS\n")
        assert await reader.readline() == b"GO\n"
        await writer.start_tls(client_context(ca), server_hostname="localhost")
        assert writer.get_extra_info("ssl_object").version() == "TLSv1.3"
        writer.write(payload)
        assert await reader.readexactly(7 + len(payload)) == b"secure " + payload
        assert await reader.read() == b""
        writer.close()
        server.close()
        await server.wait_closed()

    run(loop_kind, main)
