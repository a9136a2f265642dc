"""transport.sendfile (#17): file ranges sent by the kernel, in order with
writes, over TLS, under water marks; the example file server."""

from __future__ import annotations

import concurrent.futures
import importlib.util
import os
import socket
import ssl
import threading
from pathlib import Path
from typing import Any

import netring
import pytest
import trustme
from conftest import connect, recv_exactly, serving, wait_until

MIB = 1 << 20
EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "file_server.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("file_server", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def files(tmp_path: Path) -> dict[str, bytes]:
    contents = {
        "empty": b"",
        "one": b"x",
        "big": os.urandom(64 * MIB),
        "odd": os.urandom(3 * MIB + 17),
    }
    for name, data in contents.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "sub").mkdir()
    return contents


def read_answer(c: socket.socket) -> bytes | str:
    line = b""
    while not line.endswith(b"\n"):
        byte = c.recv(1)
        assert byte, "closed before the answer's line ended"
        line += byte
    status, _, rest = line.strip().partition(b" ")
    if status == b"ERR":
        return rest.decode()
    assert status == b"OK", line
    return recv_exactly(c, int(rest))


def test_file_server_example(backend: str, tmp_path: Path, files: dict[str, bytes]) -> None:
    server = load_example().serve(str(tmp_path), port=0, backend=backend, io_threads=1)
    try:
        with connect(server, timeout=30) as c:
            # Pipelined: answers come back in order.
            names = ["empty", "one", "big", "odd", "one", "missing", "../etc/passwd", "sub"]
            c.sendall(b"".join(b"GET %s\n" % n.encode() for n in names) + b"BAD\n")
            for name in names:
                got = read_answer(c)
                if name in files:
                    assert isinstance(got, bytes) and got == files[name], name
                else:
                    assert isinstance(got, str), (name, got)
            assert read_answer(c) == "usage: GET name"

        # Several clients at once, each its own files.
        def fetch(name: str) -> bytes | str:
            with connect(server, timeout=30) as c:
                c.sendall(b"GET %s\n" % name.encode())
                return read_answer(c)

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            got = list(pool.map(fetch, ["odd", "big", "one", "odd"]))
        assert got == [files["odd"], files["big"], files["one"], files["odd"]]
    finally:
        server.shutdown(2.0)


def make_file(tmp_path: Path, size: int) -> tuple[Path, bytes]:
    data = os.urandom(size)
    path = tmp_path / f"f{size}"
    path.write_bytes(data)
    return path, data


def test_ranges_and_writes_keep_their_order(backend: str, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 5 * MIB + 3)
    futures: list[concurrent.futures.Future] = []

    class Mixed(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            transport.write(b"a")
            with open(path, "rb") as f:
                futures.append(transport.sendfile(f))
                transport.write(b"b" * 20_000)  # a large write: by reference
                futures.append(transport.sendfile(f.fileno(), 100, 1000))
                futures.append(transport.sendfile(f, len(data) - 1))
            # The file is closed: the engine sends from its own descriptor.
            transport.write(b"z")
            transport.close()

    expect = b"a" + data + b"b" * 20_000 + data[100:1100] + data[-1:] + b"z"
    with serving(Mixed, backend) as server, connect(server) as c:
        assert recv_exactly(c, len(expect)) == expect
        assert c.recv(1) == b""
    assert [f.result(10) for f in futures] == [len(data), 1000, 1]


def test_sendfile_from_another_thread(backend: str, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 2 * MIB)
    done: list[int] = []

    class Later(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            def send() -> None:
                with open(path, "rb") as f:
                    future = transport.sendfile(f)
                transport.write(b"!")
                done.append(future.result(20))
                transport.close()

            threading.Thread(target=send).start()

    with serving(Later, backend) as server, connect(server) as c:
        assert recv_exactly(c, len(data) + 1) == data + b"!"
    assert wait_until(lambda: done == [len(data)])


def test_water_marks_count_the_file(backend: str, tmp_path: Path) -> None:
    path, data = make_file(tmp_path, 16 * MIB)
    events: list[str] = []

    class Marked(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            self.transport = transport
            with open(path, "rb") as f:
                transport.sendfile(f)
            events.append("queued")

        def pause_writing(self) -> None:
            events.append("pause")

        def resume_writing(self) -> None:
            events.append("resume")
            self.transport.close()

    with serving(Marked, backend) as server, connect(server) as c:
        assert wait_until(lambda: events)
        # Crossing the high-water mark happened inside sendfile(), as for write().
        assert events[0] == "pause"
        assert recv_exactly(c, len(data)) == data
        assert wait_until(lambda: "resume" in events)


def test_a_connection_lost_first_fails_the_future(backend: str, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, 32 * MIB)
    futures: list[concurrent.futures.Future] = []

    class Dropped(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            with open(path, "rb") as f:
                futures.append(transport.sendfile(f))
            transport.abort()  # the file is still queued: never sent

    with serving(Dropped, backend) as server:
        try:
            c = connect(server)
        except ConnectionResetError:
            pass  # the reset came before connect() returned: the same test
        else:
            c.close()
        assert wait_until(lambda: futures and futures[0].done())
    with pytest.raises(ConnectionError):
        futures[0].result(0)


def test_bad_arguments_raise_at_once(backend: str, tmp_path: Path) -> None:
    path, _ = make_file(tmp_path, 10)
    errors: list[tuple[str, type]] = []
    r, w = os.pipe()

    class Checks(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            with open(path, "rb") as f:
                cases = [
                    ("negative offset", lambda: transport.sendfile(f, -1)),
                    ("zero count", lambda: transport.sendfile(f, 0, 0)),
                    ("a pipe", lambda: transport.sendfile(r)),
                    ("not a file", lambda: transport.sendfile("name")),
                ]
                for what, call in cases:
                    try:
                        call()
                    except Exception as e:
                        errors.append((what, type(e)))
                assert transport.sendfile(f, 10).result(0) == 0  # nothing left: done at once
                transport.close()
                try:
                    transport.sendfile(f)
                except RuntimeError:
                    errors.append(("closing", RuntimeError))

    try:
        with serving(Checks, backend) as server, connect(server) as c:
            assert c.recv(1) == b""
    finally:
        os.close(r)
        os.close(w)
    assert errors == [
        ("negative offset", ValueError),
        ("zero count", ValueError),
        ("a pipe", ValueError),
        ("not a file", TypeError),
        ("closing", RuntimeError),
    ]


def test_sendfile_over_tls(backend: str, tmp_path: Path) -> None:
    """Through TLS the engine reads the file in windows and encrypts it."""
    ca = trustme.CA()
    cert = ca.issue_cert("localhost")
    chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
    tls = netring.TLSConfig(chain, cert.private_key_pem.bytes())
    path, data = make_file(tmp_path, 9 * MIB + 5)
    futures: list[concurrent.futures.Future] = []

    class Secure(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            transport.write(b"<")
            with open(path, "rb") as f:
                futures.append(transport.sendfile(f))
            transport.write(b">")
            transport.close()

    ctx = ssl.create_default_context()
    ca.configure_trust(ctx)
    with serving(Secure, backend, tls=tls) as server:
        raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
        with ctx.wrap_socket(raw, server_hostname="localhost") as c:
            got = bytearray()
            while chunk := c.recv(1 << 20):
                got += chunk
    assert bytes(got) == b"<" + data + b">"
    assert futures[0].result(10) == len(data)


def test_awaiting_sendfile_inside_asyncio(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio

    import netring.aio as aio

    monkeypatch.setenv("NETRING_BACKEND", backend)
    path, data = make_file(tmp_path, 3 * MIB + 1)
    results: list[tuple[int, int]] = []

    class Serve(asyncio.Protocol):
        def connection_made(self, transport: Any) -> None:
            asyncio.get_running_loop().create_task(self.send(transport))

        async def send(self, transport: Any) -> None:
            transport.write(b"[")
            with open(path, "rb") as f:
                sent = await aio.sendfile(transport, f, 1)
                results.append((sent, f.tell()))  # the position follows, as asyncio's
            transport.write(b"]")
            transport.close()

    async def main() -> bytes:
        server = await aio.create_server(Serve, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        got = await reader.read()
        writer.close()
        server.close()
        await server.wait_closed()
        return got

    got = asyncio.run(asyncio.wait_for(main(), 60))
    assert got == b"[" + data[1:] + b"]"
    assert results == [(len(data) - 1, len(data))]


def test_aiohttp_file_response_uses_the_engine(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import asyncio
    import functools
    import http.client

    import netring.aio as aio

    web = pytest.importorskip("aiohttp.web")
    monkeypatch.setenv("NETRING_BACKEND", backend)
    path, data = make_file(tmp_path, 6 * MIB + 3)
    calls: list[int] = []
    engine_sendfile = aio.sendfile

    async def counted(transport: Any, file: Any, offset: int = 0, count: int | None = None) -> int:
        calls.append(count or 0)
        return await engine_sendfile(transport, file, offset, count)

    monkeypatch.setattr(aio, "sendfile", counted)

    def client(port: int) -> list[bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        bodies = []
        for headers in ({}, {"Range": "bytes=100-199"}):
            conn.request("GET", "/file", headers=headers)
            resp = conn.getresponse()
            assert resp.status in (200, 206)
            bodies.append(resp.read())
        conn.close()
        return bodies

    async def main() -> list[bytes]:
        app = web.Application()

        async def file(request: Any) -> Any:
            return web.FileResponse(path)

        app.router.add_get("/file", file)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        loop = asyncio.get_running_loop()
        bodies = await loop.run_in_executor(None, client, port)
        await runner.cleanup()
        return bodies

    factory = functools.partial(aio.new_event_loop, "asyncio")
    with asyncio.Runner(loop_factory=factory) as runner:
        bodies = runner.run(asyncio.wait_for(main(), 60))
    assert bodies == [data, data[100:200]]
    assert calls == [len(data), 100], "aiohttp did not send through the engine"


def test_a_cold_file_is_read_off_the_io_thread(backend: str, tmp_path: Path) -> None:
    """A window not in the page cache is read by the prefetch thread first."""
    path, data = make_file(tmp_path, 8 * MIB)
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # drop it from the cache
    finally:
        os.close(fd)

    class Cold(netring.Protocol):
        def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
            with open(path, "rb") as f:
                transport.sendfile(f)
            transport.close()

    with serving(Cold, backend) as server:
        with connect(server) as c:
            assert recv_exactly(c, len(data)) == data
        prefetches = server.stats()["file_prefetches"]
    if prefetches == 0:
        pytest.skip("the filesystem kept the file cached (or cannot tell)")
    assert prefetches >= 1
