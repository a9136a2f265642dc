"""Framed echo on asyncio or uvloop: the best pure-Python peers of netring's
``packet-echo`` and ``line`` servers.

Usage: framed_asyncio.py --loop asyncio|uvloop --mode lp|line --port P   (0 picks a free port)

Listens on 127.0.0.1 and prints ``READY <port>`` once listening.

Each connection is an ``asyncio.BufferedProtocol``: the loop reads straight
into one preallocated ``bytearray`` (``get_buffer`` returns a ``memoryview``
of its free tail), ``buffer_updated`` cuts every whole message out *in place*
and hands the handler a ``memoryview`` of its payload (no copy per message),
the handler's replies are appended to one output ``bytearray``, and each read's
replies leave in **one** ``transport.write``. A partial message stays in the
buffer (moved to its front when the tail runs short; the buffer grows only for
a message larger than itself).

The echo handlers (``packets_received`` / ``lines_received``, called once per
read with the list of that read's messages) do what netring's ``PacketEcho``
and ``LineEcho`` do: treat each message as a message and send its payload back
framed the same way (header + payload, line + CRLF). They do not shortcut the
echo by writing the received region back unparsed. Collecting a read's
``memoryview`` slices in a list and handling them in one call costs ~250 ns per
64 B message in CPython 3.11, ~25 % less than one handler call per message.

Why the output is a fresh ``bytearray`` per read rather than a reused one or a
``memoryview`` of the input: a transport may keep the object it was given when
the socket does not take all of it at once (Python >= 3.12 queues the
``memoryview`` itself; uvloop holds the buffer until the write completes), so
reusing it, or overwriting the input region it points into, would corrupt the
queued bytes. One allocation per read, none per message.
"""

from __future__ import annotations

import argparse
import asyncio
from struct import Struct

BUFFER_BYTES = 256 * 1024  # as asyncio's own read size: one read drains a full depth-16 batch
MAX_PACKET = 1 << 20  # netring's LengthPrefixed default
MAX_LINE = 16384  # netring's Delimited default (delimiter included)
HEADER = Struct(">I")
MIN_TAIL = 4096  # compact when less than this is free after the data


class FramedProtocol(asyncio.BufferedProtocol):
    """The in-place buffer; subclasses implement ``frame(start, end) -> consumed_to``."""

    def __init__(self) -> None:
        self.transport = None
        self.buf = bytearray(BUFFER_BYTES)
        self.view = memoryview(self.buf)
        self.start = 0  # first byte not yet framed
        self.end = 0  # one past the last byte received
        self.out: bytearray | None = None  # this read's replies

    def connection_made(self, transport) -> None:
        self.transport = transport

    def connection_lost(self, exc) -> None:
        self.transport = None

    def get_buffer(self, sizehint: int) -> memoryview:
        return self.view[self.end :]

    def buffer_updated(self, nbytes: int) -> None:
        self.end += nbytes
        self.out = bytearray()
        try:
            self.start = self.frame(self.start, self.end)
        except ValueError:  # an oversized message: drop the connection, as netring does
            self.transport.abort()
            return
        if self.out:
            self.transport.write(self.out)
        self.out = None
        self._make_room()

    def _make_room(self, need: int = 0) -> None:
        """Keep room after the unframed bytes: reset, compact, or grow.

        ``need`` is the whole size of the message that starts at ``start``
        when it is known (length-prefixed), so it always fits once read.
        """
        start, end = self.start, self.end
        if start == end:
            self.start = self.end = 0
            return
        size = len(self.buf)
        if start + need <= size and size - end >= MIN_TAIL:
            return
        rest = end - start
        if need > size:  # a message larger than the buffer: a bigger buffer
            new = bytearray(max(need, 2 * size))
            new[:rest] = self.view[start:end]
            self.buf, self.view = new, memoryview(new)
        elif start:
            self.view[:rest] = self.view[start:end]  # memmove; the size never changes
        self.start, self.end = 0, rest

    def frame(self, start: int, end: int) -> int:
        raise NotImplementedError


class PacketEcho(FramedProtocol):
    """4-byte big-endian length prefix, then the payload; each echoed framed the same way."""

    def frame(self, pos: int, end: int) -> int:
        view, unpack = self.view, HEADER.unpack_from
        packets: list[memoryview] = []
        add = packets.append
        while end - pos >= 4:
            (n,) = unpack(view, pos)
            if n > MAX_PACKET:
                raise ValueError(f"packet of {n} bytes")
            if end - pos - 4 < n:
                break
            add(view[pos + 4 : pos + 4 + n])
            pos += 4 + n
        if packets:
            self.packets_received(packets)
        if end - pos >= 4:  # a partial packet whose size is known: make sure it fits
            self.start = pos
            self._make_room(need=4 + unpack(view, pos)[0])  # may move it to the front
            pos = self.start
        return pos

    def packets_received(self, packets: list[memoryview]) -> None:
        """This read's whole packets; each is valid only during this call."""
        out, pack = self.out, HEADER.pack  # send_packet, inlined
        for payload in packets:
            out += pack(len(payload))
            out += payload


class LineEcho(FramedProtocol):
    """CRLF-terminated lines; each echoed with its CRLF."""

    def frame(self, pos: int, end: int) -> int:
        find, view = self.buf.find, self.view
        lines: list[memoryview] = []
        add = lines.append
        while (i := find(b"\r\n", pos, end)) >= 0:
            add(view[pos:i])
            pos = i + 2
        if end - pos >= MAX_LINE:
            raise ValueError(f"line longer than {MAX_LINE} bytes")
        if lines:
            self.lines_received(lines)
        return pos

    def lines_received(self, lines: list[memoryview]) -> None:
        """This read's whole lines, without CRLF; each is valid only during this call."""
        out = self.out  # send_line, inlined
        for line in lines:
            out += line
            out += b"\r\n"


PROTOCOLS = {"lp": PacketEcho, "line": LineEcho}


async def serve(mode: str, port: int) -> None:
    loop = asyncio.get_running_loop()
    server = await loop.create_server(PROTOCOLS[mode], "127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--mode", choices=sorted(PROTOCOLS), required=True)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        if args.loop == "uvloop":
            import uvloop  # optional: only this mode needs it

            uvloop.run(serve(args.mode, args.port))
        else:
            asyncio.run(serve(args.mode, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
