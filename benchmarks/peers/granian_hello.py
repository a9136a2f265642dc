"""Serve asgi_hello.py with granian (one worker, its Rust HTTP server; the
peer a user would pick for raw speed). Prints ``READY <port>`` (the port is
picked free first, then bound by granian: aio_bench.py waits until it
accepts).

Usage: granian_hello.py [--port P] [--tls CERT KEY]
"""

import argparse
import os
import socket
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"),
                        help="serve HTTPS with this certificate chain and (PKCS#8) key")
    args = parser.parse_args()
    port = args.port
    if port == 0:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
    print(f"READY {port}", flush=True)
    here = os.path.dirname(os.path.abspath(__file__))
    os.execv(sys.executable, [
        sys.executable, "-m", "granian", "--interface", "asgi", "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--runtime-threads", "1", "--http", "1",
        "--no-ws", "--log-level", "warning", "--loop", "uvloop", "--working-dir", here,
        *([] if args.tls is None else ["--ssl-certificate", args.tls[0],
                                       "--ssl-keyfile", args.tls[1]]),
        "asgi_hello:app",
    ])


if __name__ == "__main__":
    main()
