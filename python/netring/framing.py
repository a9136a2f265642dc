"""Framing specs: how a connection's byte stream is cut into packets.

Framing runs in the engine; with a framing other than ``Raw`` the protocol
gets ``packet_received(packet)`` once per whole message (or
``packets_received(packets)`` with every whole packet of one read), and
``transport.send_packet(payload)`` frames and queues one.
``transport.set_framing(spec)`` switches rules mid-stream, from the next
byte on; bytes already received and not yet delivered are re-framed.

Limits are checked before anything is buffered: a length header above
``max_packet``, or ``max_line`` bytes without a delimiter, closes that
connection with ``FrameTooLargeError`` passed to ``connection_lost``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from . import _native
from ._args import check_int
from .errors import ConfigurationError

__all__ = [
    "DEFAULT_MAX_LINE",
    "DEFAULT_MAX_PACKET",
    "Delimited",
    "Exactly",
    "Framing",
    "LengthPrefixed",
    "Raw",
    "Resp",
]

#: Largest length-prefixed packet by default: 1 MiB (see docs/framing.md).
DEFAULT_MAX_PACKET: int = _native.DEFAULT_MAX_PACKET_BYTES
#: Longest line by default, delimiter included: 16 KiB (Twisted's LineReceiver).
DEFAULT_MAX_LINE: int = _native.DEFAULT_MAX_LINE_BYTES


@dataclass(frozen=True)
class Raw:
    """No framing: ``data_received`` gets chunks as the kernel delivers them."""

    def _spec(self) -> tuple[object, ...]:
        return ("raw",)


@dataclass(frozen=True)
class LengthPrefixed:
    """A length header, then that many bytes.

    Args:
        header_size: 1, 2, 4 or 8 bytes.
        byteorder: "big" (network order) or "little".
        includes_header: the length counts the header itself.
        max_packet: largest body accepted (default 1 MiB); a larger declared
            length closes the connection before any of it is buffered.
    """

    header_size: int = 4
    byteorder: Literal["big", "little"] = "big"
    includes_header: bool = False
    max_packet: int = DEFAULT_MAX_PACKET

    def __post_init__(self) -> None:
        check_int("header_size", self.header_size, 0)
        check_int("max_packet", self.max_packet, 0)
        if self.byteorder not in ("big", "little"):
            raise ConfigurationError(
                f"byteorder: must be 'big' or 'little', not {self.byteorder!r}")
        if not isinstance(self.includes_header, bool):
            raise TypeError("includes_header: must be a bool")
        _native.check_framing(self._spec())

    def _spec(self) -> tuple[object, ...]:
        return ("length_prefixed", self.header_size, self.byteorder == "big",
                self.includes_header, self.max_packet)


@dataclass(frozen=True)
class Delimited:
    """Lines ending with ``delimiter`` (1 to 16 bytes).

    Args:
        delimiter: the terminator (default CRLF).
        max_line: longest line accepted, delimiter included (default 16 KiB);
            that many bytes without a delimiter closes the connection.
        strip: deliver lines without the delimiter (default True).
    """

    delimiter: bytes = b"\r\n"
    max_line: int = DEFAULT_MAX_LINE
    strip: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.delimiter, bytes):
            raise TypeError(f"delimiter: must be bytes, not {type(self.delimiter).__name__}")
        check_int("max_line", self.max_line, 0)
        if not isinstance(self.strip, bool):
            raise TypeError("strip: must be a bool")
        _native.check_framing(self._spec())

    def _spec(self) -> tuple[object, ...]:
        return ("delimited", self.delimiter, self.max_line, self.strip)


@dataclass(frozen=True)
class Exactly:
    """Packets of exactly ``n`` bytes (e.g. a body after a header line)."""

    n: int = field(default=1)

    def __post_init__(self) -> None:
        check_int("n", self.n, 0)
        _native.check_framing(self._spec())

    def _spec(self) -> tuple[object, ...]:
        return ("exactly", self.n)


@dataclass(frozen=True)
class Resp:
    """Redis protocol requests, one packet per whole command.

    ``packet_received`` gets a command as ``list[bytes]`` (its arguments,
    from a RESP array of bulk strings) or as ``bytes`` (an inline command's
    line, without its line ending, for the protocol to split). One callback
    per command instead of one per header and argument.

    Bad input closes the connection with ``FramingError`` carrying Redis's
    text ("Protocol error: invalid bulk length", "... too big inline
    request", ...); the protocol's ``framing_error(exc)`` runs first and may
    write Redis's ``-ERR`` reply. Limits apply before buffering.

    Args:
        max_bulk: largest argument (default 16 MiB; Redis allows 512 MiB).
        max_command: largest command, headers and bodies (default 64 MiB);
            a declared length that would pass it closes the connection with
            ``FrameTooLargeError`` before the body is buffered.
        max_inline: longest inline command line (default 64 KiB, Redis's).
    """

    max_bulk: int = 16 << 20
    max_command: int = 64 << 20
    max_inline: int = 64 * 1024

    def __post_init__(self) -> None:
        check_int("max_bulk", self.max_bulk, 0)
        check_int("max_command", self.max_command, 0)
        check_int("max_inline", self.max_inline, 0)
        _native.check_framing(self._spec())

    def _spec(self) -> tuple[object, ...]:
        return ("resp", self.max_bulk, self.max_command, self.max_inline)


Framing = Raw | LengthPrefixed | Delimited | Exactly | Resp
