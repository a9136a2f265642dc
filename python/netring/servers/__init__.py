"""The example servers ``python -m netring serve NAME`` knows.

Each is also a short file in ``examples/`` for users to copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..framing import Delimited, LengthPrefixed
from ..pool import IOPool
from .echo import Echo
from .kv import KV
from .kv import RESP as KV_RESP
from .line import LineEcho
from .line_workers import line_workers_factory
from .packet_echo import PacketEcho
from .proxy import proxy_factory
from .udp_echo import UdpEcho

#: Largest packet the large-packet example accepts: 16 MiB.
LARGE_PACKET_MAX = 16 * 1024 * 1024


@dataclass(frozen=True)
class Example:
    """A named example: its protocol factory and the Server options it needs.

    ``build``, when set, makes the factory from the IO pool and the CLI's
    arguments (the proxy needs both); ``factory`` is then unused. ``udp``
    examples are served by ``IOPool.create_datagram_endpoint`` instead of a
    ``Server`` (their ``options`` go to it). ``workers``, when set, is the
    example's default number of worker threads (``--workers`` overrides it).
    """

    factory: Callable[[], Any] | None
    description: str
    options: dict[str, Any] = field(default_factory=dict)
    build: Callable[[IOPool, Any], Callable[[], Any]] | None = None
    udp: bool = False
    workers: int | None = None

    def make_factory(self, pool: IOPool, args: Any) -> Callable[[], Any]:
        """The protocol factory to serve."""
        if self.build is not None:
            return self.build(pool, args)
        assert self.factory is not None
        return self.factory


def _proxy(pool: IOPool, args: Any) -> Callable[[], Any]:
    host, _, port = str(getattr(args, "upstream", "") or "").rpartition(":")
    if not host or not port.isdigit():
        raise ValueError("upstream: give the proxy's target as --upstream HOST:PORT")
    return proxy_factory(pool, host.strip("[]"), int(port))


def _line_workers(pool: IOPool, args: Any) -> Callable[[], Any]:
    return line_workers_factory(float(getattr(args, "work_ms", 0.0) or 0.0))


SERVERS: dict[str, Example] = {
    "echo": Example(Echo, "EchoServer: every byte back"),
    "packet-echo": Example(
        PacketEcho, "4-byte big-endian length-prefixed packets, echoed framed the same way",
        {"framing": LengthPrefixed(header_size=4, byteorder="big")}),
    "line": Example(
        LineEcho, "CRLF-terminated lines, each echoed with its CRLF",
        {"framing": Delimited(b"\r\n")}),
    "large-packet-echo": Example(
        PacketEcho, "packets up to 16 MiB through 1 KiB IO buffers",
        {"framing": LengthPrefixed(header_size=4, byteorder="big", max_packet=LARGE_PACKET_MAX),
         "buffer_size": 1024}),
    "kv": Example(KV, "a Redis-protocol key-value server (RESP subset)",
                  {"framing": KV_RESP}),
    "proxy": Example(None, "a TCP port forwarder to --upstream HOST:PORT, backpressure both ways",
                     build=_proxy),
    "udp-echo": Example(UdpEcho, "UDP: every datagram back to its sender", udp=True),
    "line-workers": Example(
        None, "CRLF command lines, each a SQLite query (+ --work-ms sleep) on a worker pool "
        "(--workers, default 8)",
        {"framing": Delimited(b"\r\n")}, build=_line_workers, workers=8),
}

#: Server options that belong to the IO pool when several servers share one.
POOL_OPTIONS = ("buffer_size", "buffers_per_thread")

__all__ = ["POOL_OPTIONS", "SERVERS", "Example"]
