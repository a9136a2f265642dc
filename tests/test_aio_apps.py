"""asyncio applications unchanged on the engine (`netring.aio.install` /
`new_event_loop`): uvicorn with its httptools and h11 protocols serving an
ASGI app, driven by Python's own HTTP client from another thread, under the
stdlib loop and uvloop, on both backends."""

from __future__ import annotations

import asyncio
import functools
import http.client
import socket
import threading
from typing import Any

import netring.aio as aio
import pytest
from conftest import uvicorn_while

uvicorn = pytest.importorskip("uvicorn")


@pytest.fixture(params=["asyncio", "uvloop"])
def loop_kind(request: pytest.FixtureRequest, backend: str,
              monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("NETRING_BACKEND", backend)
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
    return str(request.param)


CHUNK = 1 << 20


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    assert scope["type"] == "http"
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/octet-stream")]})
        for i in range(10):
            await send({"type": "http.response.body", "body": bytes([i]) * CHUNK,
                        "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    reply = b"%s %s %d" % (scope["method"].encode(), scope["path"].encode(), len(body))
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", b"%d" % len(reply))]})
    await send({"type": "http.response.body", "body": reply})


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def http_client(port: int, out: dict[str, Any]) -> None:
    """Python's own HTTP client: keep-alive, a body, a streamed response,
    then raw pipelining."""
    try:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        for i in range(20):  # one keep-alive connection
            conn.request("POST", f"/echo/{i}", body=b"x" * (i * 1000))
            resp = conn.getresponse()
            assert resp.status == 200
            assert resp.read() == b"POST /echo/%d %d" % (i, i * 1000)
        conn.request("GET", "/stream")
        resp = conn.getresponse()
        data = resp.read()
        assert data == b"".join(bytes([i]) * CHUNK for i in range(10))
        conn.close()
        with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
            s.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
            got = b""
            while got.count(b"GET /") < 2:
                chunk = s.recv(65536)
                assert chunk, got
                got += chunk
            assert got.index(b"GET /one 0") < got.index(b"GET /two 0")
        out["ok"] = True
    except BaseException as e:  # reported by the test
        out["error"] = e


@pytest.mark.parametrize("http", ["httptools", "h11"])
def test_uvicorn_serves_an_asgi_app_on_the_engine(loop_kind: str, http: str) -> None:
    pytest.importorskip(http)
    port = free_port()
    out: dict[str, Any] = {}

    async def main() -> dict[str, Any]:
        config = uvicorn.Config(app, host="127.0.0.1", port=port, loop="none", http=http,
                                lifespan="off", log_level="warning")
        return await uvicorn_while(config, lambda: http_client(port, out))

    with asyncio.Runner(loop_factory=functools.partial(aio.new_event_loop, loop_kind)) as r:
        stats = r.run(asyncio.wait_for(main(), 60))
    assert out.get("ok"), out.get("error")
    assert stats["connections_accepted"] == 2, "both clients were served by netring"
    assert stats["bytes_out"] > 10 * CHUNK


def test_what_netring_does_not_do_falls_through(loop_kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket(socket.AF_UNIX) as sock:
            # A Unix socket is not netring's yet: the loop's own server takes it.
            sock.bind(f"\0netring-test-{id(sock)}")
            server = await loop.create_server(asyncio.Protocol, sock=sock)
            assert not isinstance(server, aio.AioServer)
            server.close()
            await server.wait_closed()
        # A bound TCP socket is served by netring (uvicorn's workers pass one).
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        server = await loop.create_server(asyncio.Protocol, sock=sock)
        assert isinstance(server, aio.AioServer)
        # As with asyncio's server, the socket given stays usable (aiohttp's
        # SockSite, uvicorn read its name) until the server closes it.
        assert sock.getsockname()[1] == server.port
        _r, w = await asyncio.open_connection("127.0.0.1", server.port)
        w.close()
        server.close()
        assert sock.fileno() == -1, "the server closes the socket it was given"
        await server.wait_closed()
        server = await loop.create_server(asyncio.Protocol, "127.0.0.1", 0)
        assert isinstance(server, aio.AioServer)
        server.close()
        await server.wait_closed()

    with asyncio.Runner(loop_factory=functools.partial(aio.new_event_loop, loop_kind)) as r:
        r.run(asyncio.wait_for(main(), 20))


def test_install_sets_the_policy() -> None:
    old = asyncio.get_event_loop_policy()
    try:
        aio.install("asyncio")
        loop = asyncio.new_event_loop()
        assert isinstance(loop, aio.NetringEventLoop)
        loop.close()
        with pytest.raises(aio.ConfigurationError, match="loop"):
            aio.install("trio")
    finally:
        asyncio.set_event_loop_policy(old)


def run_app(loop_kind: str, main: Any, timeout: float = 60) -> Any:
    with asyncio.Runner(loop_factory=functools.partial(aio.new_event_loop, loop_kind)) as r:
        return r.run(asyncio.wait_for(main(), timeout))


async def in_thread(fn: Any, *args: Any) -> Any:
    """Run a blocking client in a thread while the loop serves."""
    out: dict[str, Any] = {}

    def target() -> None:
        try:
            out["value"] = fn(*args)
        except BaseException as e:  # reported below
            out["error"] = e

    t = threading.Thread(target=target)
    t.start()
    while t.is_alive():
        await asyncio.sleep(0.02)
    if "error" in out:
        raise out["error"]
    return out.get("value")


def test_aiohttp_web_server_on_the_engine(loop_kind: str) -> None:
    web = pytest.importorskip("aiohttp.web")

    async def handler(request: Any) -> Any:
        body = await request.read()
        return web.Response(body=b"%s %d" % (request.path.encode(), len(body)))

    def client(port: int) -> list[bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        replies = []
        for i in range(20):
            conn.request("POST", f"/item/{i}", body=b"y" * (i * 4096))
            resp = conn.getresponse()
            assert resp.status == 200
            replies.append(resp.read())
        conn.close()
        return replies

    async def main() -> dict[str, Any]:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        assert isinstance(site._server, aio.AioServer)
        port = site._server.sockets[0].getsockname()[1]
        replies = await in_thread(client, port)
        assert replies == [b"/item/%d %d" % (i, i * 4096) for i in range(20)]
        stats = aio.engine_stats()
        await runner.cleanup()
        return stats

    stats = run_app(loop_kind, main)
    assert stats["connections_accepted"] == 1


def test_websockets_echo_on_the_engine(loop_kind: str) -> None:
    websockets = pytest.importorskip("websockets")
    sync_client = pytest.importorskip("websockets.sync.client")

    async def echo(ws: Any) -> None:
        async for message in ws:
            await ws.send(message)

    def client(port: int) -> int:
        with sync_client.connect(f"ws://127.0.0.1:{port}", open_timeout=10) as ws:
            for i in range(1000):
                ws.send(f"message {i}")
                assert ws.recv(timeout=10) == f"message {i}"
            ws.send(b"\x00" * 100_000)
            assert ws.recv(timeout=10) == b"\x00" * 100_000
        return 1000  # the close handshake completed on leaving the block

    async def main() -> dict[str, Any]:
        async with websockets.serve(echo, "127.0.0.1", 0) as server:
            assert isinstance(server.server, aio.AioServer)
            port = next(iter(server.sockets)).getsockname()[1]
            assert await in_thread(client, port) == 1000
            return aio.engine_stats()

    stats = run_app(loop_kind, main)
    assert stats["connections_accepted"] == 1


def test_an_async_proxy_whose_handler_awaits_another_connection(loop_kind: str) -> None:
    async def upstream(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while line := await reader.readline():
            writer.write(b"upstream: " + line)
            await writer.drain()
        writer.close()

    async def main() -> None:
        back = await asyncio.start_server(upstream, "127.0.0.1", 0)
        back_port = back.sockets[0].getsockname()[1]

        async def proxy(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", back_port)
            while line := await reader.readline():
                up_w.write(line)
                await up_w.drain()
                writer.write(await up_r.readline())
                await writer.drain()
            up_w.close()
            writer.close()

        front = await asyncio.start_server(proxy, "127.0.0.1", 0)
        assert isinstance(front, aio.AioServer) and isinstance(back, aio.AioServer)

        def client(port: int) -> None:
            with socket.create_connection(("127.0.0.1", port), timeout=20) as s:
                f = s.makefile("rwb")
                for i in range(200):
                    f.write(b"line %d\n" % i)
                    f.flush()
                    assert f.readline() == b"upstream: line %d\n" % i

        await in_thread(client, front.sockets[0].getsockname()[1])
        stats = aio.engine_stats()
        assert stats["connections_accepted"] == 2  # the client's and the proxy's
        assert stats["connections_connected"] == 1  # the proxy's upstream
        for s in (front, back):
            s.close()
            await s.wait_closed()

    run_app(loop_kind, main)
