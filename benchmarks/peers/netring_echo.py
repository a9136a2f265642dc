"""Serve EchoProtocol on netring, exactly as asyncio_echo.py serves it.

Usage: netring_echo.py --port P [--backend auto|io_uring|epoll] [--io-threads N]

Without --backend, netring's default applies (auto, or $NETRING_BACKEND).

Listens on 127.0.0.1 and prints ``READY <port>`` once listening.
"""

import argparse
import sys

import netring
from echo_protocol import EchoProtocol


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--io-threads", type=int, default=None)
    args = parser.parse_args()
    server = netring.Server(
        EchoProtocol,
        "127.0.0.1",
        args.port,
        io_threads=args.io_threads,
        backend=args.backend,
    )
    server.start()
    print(f"READY {server.port}", flush=True)
    print(f"netring backend={server.backend} io_threads={server.io_threads}", file=sys.stderr)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
