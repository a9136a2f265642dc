"""UDP echo on asyncio or uvloop: the peers netring's UDP endpoint is compared with.

Usage: udp_asyncio.py --loop asyncio|uvloop --port P   (0 picks a free port)

Binds 127.0.0.1 and prints ``READY <port>`` once bound. The protocol is the
plain ``asyncio.DatagramProtocol`` echo: ``datagram_received`` ->
``transport.sendto(data, addr)``, the same three lines netring's peer runs.
"""

import argparse
import asyncio


class UdpEcho(asyncio.DatagramProtocol):
    """Send every datagram back to its sender."""

    def __init__(self) -> None:
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def datagram_received(self, data: bytes, addr) -> None:
        self.transport.sendto(data, addr)


async def serve(port: int) -> None:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(UdpEcho, local_addr=("127.0.0.1", port))
    print(f"READY {transport.get_extra_info('sockname')[1]}", flush=True)
    await asyncio.Event().wait()  # serve until SIGTERM / Ctrl-C


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
