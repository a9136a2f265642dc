"""The example servers ``python -m netring serve NAME`` knows.

Each is also a short file in ``examples/`` for users to copy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..framing import Delimited, LengthPrefixed
from .echo import Echo
from .line import LineEcho
from .packet_echo import PacketEcho

#: Largest packet the large-packet example accepts: 16 MiB.
LARGE_PACKET_MAX = 16 * 1024 * 1024


@dataclass(frozen=True)
class Example:
    """A named example: its protocol factory and the Server options it needs."""

    factory: Callable[[], Any]
    description: str
    options: dict[str, Any] = field(default_factory=dict)


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
}

__all__ = ["SERVERS", "Example"]
