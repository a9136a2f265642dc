"""UDP echo on a netring IOPool, as udp_asyncio.py serves it on asyncio.

Usage: udp_netring.py --port P [--backend auto|io_uring|epoll] [--io-threads N]

Binds 127.0.0.1 and prints ``READY <port>`` once bound. The protocol is
``netring.DatagramProtocol`` with the same three-line echo as the asyncio
peer: ``datagram_received`` -> ``transport.sendto(data, addr)``.
"""

import argparse
import signal
import sys
import threading

import netring


class UdpEcho(netring.DatagramProtocol):
    """Send every datagram back to its sender."""

    def __init__(self) -> None:
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--backend", default=None)
    parser.add_argument("--io-threads", type=int, default=None)
    args = parser.parse_args()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    pool = netring.IOPool(args.io_threads, backend=args.backend)
    endpoint = pool.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", args.port))
    transport, _ = endpoint.result(10)
    print(f"READY {transport.get_extra_info('sockname')[1]}", flush=True)
    print(f"netring backend={pool.backend} io_threads={pool.io_threads}", file=sys.stderr)
    while not stop.wait(0.2):
        pass
    transport.close()
    pool.close(1.0)


if __name__ == "__main__":
    main()
