"""Serve an asyncio application on one loop: netring's (``install()``'s
loops over uvloop or the stdlib loop), uvloop's, or aiofastnet's on uvloop —
the same application code on each, as users run it.

Usage: app_server.py --app streams|ws|uvicorn|aiohttp
                     --loop netring|netring-asyncio|uvloop|aiofastnet [--port P]
                     [--tls CERT KEY]

Apps: ``streams`` (``asyncio.start_server``: a 4-byte big-endian length and
its payload read with ``readexactly``, echoed with ``write`` + ``drain``),
``ws`` (the websockets server: every message echoed), ``uvicorn`` (an ASGI
"hello world" on uvicorn's httptools protocol, keep-alive) and ``aiohttp``
(the same page from aiohttp's web server). Listens on 127.0.0.1 and prints
``READY <port>`` once listening. ``--tls`` serves HTTPS (uvicorn, aiohttp)
as their users do: uvicorn's ``ssl_certfile``/``ssl_keyfile``, aiohttp's
``ssl_context`` — an ``ssl.SSLContext`` that each loop serves with its own
TLS (netring's: the engine's rustls, through ``install()``'s ``ssl=``).
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import socket
import ssl
from collections.abc import Callable

from asgi_hello import BODY, app


async def streams(port: int) -> None:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readexactly(4)
                body = await reader.readexactly(int.from_bytes(head, "big"))
                writer.write(head + body)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


async def ws(port: int) -> None:
    from websockets.asyncio.server import ServerConnection, serve

    async def echo(conn: ServerConnection) -> None:
        async for message in conn:
            await conn.send(message)

    async with serve(echo, "127.0.0.1", port, compression=None) as server:
        print(f"READY {next(iter(server.sockets)).getsockname()[1]}", flush=True)
        await server.serve_forever()


def bound(port: int) -> socket.socket:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(1024)
    return sock


#: ``--tls``: (certificate chain, key) files, or None.
TLS: tuple[str, str] | None = None


async def uvicorn_app(port: int) -> None:
    import uvicorn

    sock = bound(port)
    files = {} if TLS is None else {"ssl_certfile": TLS[0], "ssl_keyfile": TLS[1]}
    config = uvicorn.Config(app, loop="none", http="httptools", lifespan="off",
                            log_level="warning", access_log=False, **files)
    server = uvicorn.Server(config)
    print(f"READY {sock.getsockname()[1]}", flush=True)
    await server.serve(sockets=[sock])


async def aiohttp_app(port: int) -> None:
    from aiohttp import web

    async def hello(request: web.Request) -> web.Response:
        return web.Response(body=BODY, content_type="text/plain")

    application = web.Application()
    application.router.add_get("/", hello)
    runner = web.AppRunner(application, access_log=None)
    await runner.setup()
    sock = bound(port)
    context = None
    if TLS is not None:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(*TLS)
    await web.SockSite(runner, sock, ssl_context=context).start()
    print(f"READY {sock.getsockname()[1]}", flush=True)
    await asyncio.Event().wait()


APPS = {"streams": streams, "ws": ws, "uvicorn": uvicorn_app, "aiohttp": aiohttp_app}


def loop_factory(name: str) -> Callable[[], asyncio.AbstractEventLoop]:
    if name in ("netring", "netring-asyncio"):
        import netring.aio

        return functools.partial(netring.aio.new_event_loop,
                                 loop="uvloop" if name == "netring" else "asyncio")
    import uvloop

    if name == "aiofastnet":
        import aiofastnet

        return aiofastnet.loop_factory(uvloop.new_event_loop)
    return uvloop.new_event_loop


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--app", choices=sorted(APPS), required=True)
    parser.add_argument("--loop", choices=["netring", "netring-asyncio", "uvloop", "aiofastnet"],
                        required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"),
                        help="serve HTTPS with this certificate chain and key (uvicorn, aiohttp)")
    args = parser.parse_args()
    global TLS
    TLS = None if args.tls is None else (args.tls[0], args.tls[1])
    try:
        with asyncio.Runner(loop_factory=loop_factory(args.loop)) as runner:
            runner.run(APPS[args.app](args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
