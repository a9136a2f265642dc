"""Framed echo on Twisted: ``Int32StringReceiver`` (lp) and ``LineReceiver`` (line).

Usage: framed_twisted.py --mode lp|line --port P   (0 picks a free port)

Listens on 127.0.0.1 with the epoll reactor and prints ``READY <port>`` once
listening. Stock Twisted framing, as a Twisted user would write these servers:
``stringReceived`` -> ``sendString`` (4-byte big-endian prefix) and
``lineReceived`` -> ``sendLine`` (``delimiter = b"\\r\\n"``). Twisted's
transport already coalesces the writes made during one reactor iteration into
one ``send``. TCP_NODELAY is set on each connection, as asyncio, uvloop and
netring do by default. Limits match netring's defaults (1 MiB packets, 16 KiB
lines).
"""

from __future__ import annotations

import argparse

from twisted.internet import epollreactor

epollreactor.install()  # before anything imports the default reactor

from twisted.internet import protocol, reactor  # noqa: E402
from twisted.protocols.basic import Int32StringReceiver, LineReceiver  # noqa: E402


class PacketEcho(Int32StringReceiver):
    MAX_LENGTH = 1 << 20

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def stringReceived(self, string: bytes) -> None:
        self.sendString(string)


class LineEcho(LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 16384

    def connectionMade(self) -> None:
        self.transport.setTcpNoDelay(True)

    def lineReceived(self, line: bytes) -> None:
        self.sendLine(line)


PROTOCOLS = {"lp": PacketEcho, "line": LineEcho}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=sorted(PROTOCOLS), required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    factory = protocol.Factory.forProtocol(PROTOCOLS[args.mode])
    port = reactor.listenTCP(args.port, factory, backlog=1024, interface="127.0.0.1")
    print(f"READY {port.getHost().port}", flush=True)
    reactor.run()


if __name__ == "__main__":
    main()
