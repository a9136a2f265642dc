"""Serve EchoProtocol on netring inside asyncio (``netring.aio``): the
running loop's thread drives the engine, as asyncio_echo.py serves the same
class on asyncio's own transports.

Usage: aio_echo.py --loop asyncio|uvloop --port P [--backend auto|io_uring|epoll]

Listens on 127.0.0.1 and prints ``READY <port>`` once listening.
"""

import argparse
import asyncio
import os

import netring.aio
from echo_protocol import EchoProtocol


async def serve(port: int) -> None:
    server = await netring.aio.create_server(EchoProtocol, "127.0.0.1", port)
    print(f"READY {server.port}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend", default=None)
    args = parser.parse_args()
    if args.backend:
        os.environ["NETRING_BACKEND"] = args.backend
    factory = None
    if args.loop == "uvloop":
        import uvloop

        factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=factory) as runner:
            runner.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
