"""Serve EchoProtocol on asyncio or uvloop: the peers netring is compared with.

Usage: asyncio_echo.py --loop asyncio|uvloop|aiofastnet --port P   (0 picks a free port)
                       [--tls-cert FILE --tls-key FILE]

Listens on 127.0.0.1 and prints ``READY <port>`` once listening. With
``--tls-cert``/``--tls-key`` it serves TLS 1.3 only through ``ssl=`` (no
session tickets: the load generator never resumes). ``--loop aiofastnet``
is aiofastnet's transports (``aiofastnet.create_server``) on uvloop.
"""

import argparse
import asyncio
import ssl

from echo_protocol import EchoProtocol


def tls_context(cert: str, key: str) -> ssl.SSLContext:
    """TLS 1.3 only, the certificate and key given, no session tickets."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.num_tickets = 0
    ctx.load_cert_chain(cert, key)
    return ctx


async def serve(port: int, ctx: ssl.SSLContext | None, fast: bool) -> None:
    loop = asyncio.get_running_loop()
    if fast:
        import aiofastnet  # optional: only this mode needs it

        server = await aiofastnet.create_server(loop, EchoProtocol, "127.0.0.1", port, ssl=ctx)
    else:
        server = await loop.create_server(EchoProtocol, "127.0.0.1", port, ssl=ctx)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop", "aiofastnet"], default="asyncio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    parser.add_argument("--tls-key", help="its PEM private key")
    args = parser.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    ctx = tls_context(args.tls_cert, args.tls_key) if args.tls_cert else None
    main_coro = serve(args.port, ctx, args.loop == "aiofastnet")
    try:
        if args.loop in ("uvloop", "aiofastnet"):
            import uvloop  # optional: only these modes need it

            uvloop.run(main_coro)
        else:
            asyncio.run(main_coro)
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
