"""Command line: ``python -m netring serve NAME [options]``.

Prints exactly one line, ``netring: serving NAME on H:P (backend=B,
io_threads=N)``, once the server accepts connections, and exits 0 after a
graceful drain on SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import logging
import sys

from .server import BACKENDS, Server
from .servers import SERVERS

DEFAULT_PORT = 5050


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m netring", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run an example server")
    serve.add_argument("name", choices=sorted(SERVERS), metavar="NAME",
                       help="; ".join(f"{k}: {v.description}" for k, v in SERVERS.items()))
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, default=DEFAULT_PORT,
                       help=f"port (default {DEFAULT_PORT}; 0 picks one)")
    serve.add_argument("--io-threads", type=int, default=None,
                       help="IO threads (default: 1 with the GIL, one per CPU without)")
    serve.add_argument("--backend", choices=BACKENDS, default=None,
                       help="IO backend (default auto, or $NETRING_BACKEND)")
    serve.add_argument("--grace", type=float, default=5.0,
                       help="seconds to drain on shutdown (default 5)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(levelname)s: %(message)s")
    try:
        example = SERVERS[args.name]
        server = Server(example.factory, args.host, args.port,
                        io_threads=args.io_threads, backend=args.backend, **example.options)
        server.start()
    except Exception as e:  # configuration and bind errors: one clear line
        print(f"netring: cannot serve {args.name}: {e}", file=sys.stderr)
        return 2
    print(f"netring: serving {args.name} on {server.host}:{server.port} "
          f"(backend={server.backend}, io_threads={server.io_threads})", flush=True)
    server.serve_forever(grace=args.grace)
    return 0
