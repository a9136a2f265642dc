"""Protocol base classes, in asyncio's vocabulary.

Threading contract: every callback for one connection runs on the IO thread
that owns the connection, one at a time, never concurrently. Callbacks of
different connections may run on different IO threads.

The data callbacks (``data_received``, ``packet_received``,
``packets_received``) are looked up once, when the connection opens (before
``connection_made``); assigning one on the instance afterwards has no effect.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ._native import Transport

__all__ = ["BaseProtocol", "Protocol"]


class BaseProtocol:
    """Connection lifecycle and write flow control (asyncio.BaseProtocol)."""

    def connection_made(self, transport: Transport) -> None:
        """The connection is established; keep ``transport`` to write."""

    def connection_lost(self, exc: BaseException | None) -> None:
        """The connection is gone. ``exc`` is None after a normal close, the
        error (e.g. ``ConnectionResetError``) after a failure, or the
        exception one of this protocol's callbacks raised."""

    def pause_writing(self) -> None:
        """The transport's write buffer went over the high-water mark."""

    def resume_writing(self) -> None:
        """The transport's write buffer drained to the low-water mark."""


class Protocol(BaseProtocol):
    """A stream protocol (asyncio.Protocol)."""

    def data_received(self, data: bytes) -> None:
        """Bytes arrived, in order, as the kernel delivered them."""

    def packet_received(self, packet: bytes) -> None:
        """One whole packet or line arrived (with a framing other than Raw).

        Define ``packets_received(self, packets: list[bytes])`` instead to
        get every whole packet of one read in one call (not in protocols
        that call ``set_framing``: the list was cut under one rule, so
        ``set_framing`` raises ``RuntimeError`` inside it)."""
        raise NotImplementedError(
            f"{type(self).__name__} has a framing but no packet_received()")

    def timeout_received(self) -> None:
        """Nothing arrived for the idle timeout (``Server(idle_timeout=)`` or
        ``transport.set_idle_timeout``). The default closes the connection;
        override to ping the peer or keep waiting (called again after
        another period of silence)."""
        transport = getattr(self, "transport", None)
        if transport is not None:
            transport.close()

    def framing_error(self, exc: Exception) -> None:
        """The peer broke the framing rule (``exc``: ``FrameTooLargeError``,
        ``FramingError``). Nothing more is delivered; write a last reply
        here if the protocol has one (it is flushed), then the connection
        closes and ``connection_lost(exc)`` follows."""

    def eof_received(self) -> bool | None:
        """The peer half-closed. Return a true value to keep the connection
        open for writing; otherwise the transport closes itself."""
        return None
