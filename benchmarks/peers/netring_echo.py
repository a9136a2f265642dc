"""Serve EchoProtocol on netring, exactly as asyncio_echo.py serves it.

Usage: netring_echo.py --port P [--backend auto|io_uring|epoll] [--io-threads N]
                       [--tls-cert FILE --tls-key FILE] [--proxy-protocol v1|v2|any]
                       [--zerocopy-threshold BYTES]

Without --backend, netring's default applies (auto, or $NETRING_BACKEND).
With --tls-cert/--tls-key it serves TLS 1.3 only from the engine
(``tls=netring.TLSConfig(...)``), without session tickets or a session
cache (the load generator never resumes), as asyncio_echo.py does. With
--proxy-protocol every connection must open with a PROXY header from
127.0.0.1 (the load generator's ``--proxy-v2``), as behind HAProxy.

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
    parser.add_argument("--tls-cert", help="PEM certificate chain: serve TLS")
    parser.add_argument("--tls-key", help="its PEM private key")
    parser.add_argument("--proxy-protocol", choices=["v1", "v2", "any"],
                        help="expect a PROXY protocol header from 127.0.0.1")
    parser.add_argument("--zerocopy-threshold", type=int, default=None,
                        help="zero-copy sends from this size (SEND_ZC, MSG_ZEROCOPY)")
    args = parser.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    tls = {}
    if args.tls_cert:
        tls["tls"] = netring.TLSConfig(
            args.tls_cert,
            args.tls_key,
            min_version="TLSv1.3",
            session_cache=0,
            session_tickets=False,
        )
    if args.proxy_protocol:
        tls["proxy_protocol"] = args.proxy_protocol
        tls["trusted_proxies"] = ["127.0.0.1/32"]
    server = netring.Server(
        EchoProtocol,
        "127.0.0.1",
        args.port,
        io_threads=args.io_threads,
        backend=args.backend,
        zerocopy_threshold=args.zerocopy_threshold,
        **tls,
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
