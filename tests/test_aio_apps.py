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
        server = uvicorn.Server(config)
        task = asyncio.get_running_loop().create_task(server.serve())
        while not server.started:
            await asyncio.sleep(0.01)
        client = threading.Thread(target=http_client, args=(port, out))
        client.start()
        while client.is_alive():
            await asyncio.sleep(0.02)
        stats = aio.engine_stats()
        server.should_exit = True
        await task
        return stats

    with asyncio.Runner(loop_factory=functools.partial(aio.new_event_loop, loop_kind)) as r:
        stats = r.run(asyncio.wait_for(main(), 60))
    assert out.get("ok"), out.get("error")
    assert stats["connections_accepted"] == 2, "both clients were served by netring"
    assert stats["bytes_out"] > 10 * CHUNK


def test_what_netring_does_not_do_falls_through(loop_kind: str) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            # sock= is not netring's yet: the loop's own server takes it.
            server = await loop.create_server(asyncio.Protocol, sock=sock)
            assert not isinstance(server, aio.AioServer)
            server.close()
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
