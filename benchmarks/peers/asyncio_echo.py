"""Serve EchoProtocol on asyncio or uvloop: the peers netring is compared with.

Usage: asyncio_echo.py --loop asyncio|uvloop --port P   (0 picks a free port)

Listens on 127.0.0.1 and prints ``READY <port>`` once listening.
"""

import argparse
import asyncio

from echo_protocol import EchoProtocol


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(EchoProtocol, "127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        if args.loop == "uvloop":
            import uvloop  # optional: only this mode needs it

            uvloop.run(serve(args.port))
        else:
            asyncio.run(serve(args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
