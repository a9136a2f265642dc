"""The server that ``soak.py`` runs: a raw echo and a packet echo on one IO pool.

Usage: soak_server.py [--backend auto|io_uring|epoll] [--io-threads N]

Prints ``READY <echo_port> <packet_port>`` once both accept (127.0.0.1, ports
picked by the kernel), serves until SIGTERM or SIGINT, then drains (grace 5 s)
and exits 0. Errors go to stderr through the ``netring`` logger.

Both protocols apply backpressure the usual way (``pause_writing`` pauses
reading) and have magic messages for the soak's faults:

- raw echo: a chunk containing ``RAISE`` raises from ``data_received`` (a
  handler bug: the engine logs it and closes that connection); ``SPEW``
  answers with one 16 MiB write (for slow readers and resets mid-write);
  anything else is echoed.
- packet echo (4-byte big-endian length prefix, packets up to 16 MiB + 64):
  a packet starting with ``RAISE`` raises from ``packet_received``; others
  are echoed framed the same way. A header over the limit closes that
  connection (``FrameTooLargeError``).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading

import netring

SPEW_BYTES = 16 << 20
MAX_PACKET = (16 << 20) + 64
_SPEW = bytes(range(256)) * (SPEW_BYTES // 256)


class SoakEcho(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if b"RAISE" in data:
            raise RuntimeError("soak: the handler bug asked for")
        if data.startswith(b"SPEW"):
            self.transport.write(_SPEW)
            return
        self.transport.write(data)

    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()


class SoakPacketEcho(SoakEcho):
    def packet_received(self, packet: bytes) -> None:
        if packet.startswith(b"RAISE"):
            raise RuntimeError("soak: the handler bug asked for")
        self.transport.send_packet(packet)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default=None)
    parser.add_argument("--io-threads", type=int, default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s: %(levelname)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda signum, frame: stop.set())
    with netring.IOPool(args.io_threads, backend=args.backend) as pool:
        echo = netring.Server(SoakEcho, "127.0.0.1", 0, pool=pool)
        packet = netring.Server(
            SoakPacketEcho, "127.0.0.1", 0, pool=pool,
            framing=netring.LengthPrefixed(header_size=4, max_packet=MAX_PACKET))
        echo.start()
        packet.start()
        print(f"READY {echo.port} {packet.port} backend={pool.backend}", flush=True)
        while not stop.wait(0.1):
            pass
        echo.shutdown(5.0)
        packet.shutdown(5.0)
    return 0


if __name__ == "__main__":
    sys.exit(main())
