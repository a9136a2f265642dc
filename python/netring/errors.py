"""netring's exceptions.

``NetringError`` is the root. ``ConfigurationError`` is also a ``ValueError``
(a wrong argument, reported when the server is constructed and naming the
argument); ``ConnectionClosedError`` is also a ``ConnectionError``.
"""

from __future__ import annotations

import ssl

__all__ = [
    "BackendUnavailableError",
    "ConfigurationError",
    "ConnectionClosedError",
    "DatagramTruncatedError",
    "FrameTimeoutError",
    "FrameTooLargeError",
    "FramingError",
    "NetringError",
    "TLSCertVerificationError",
    "TLSEOFError",
    "TLSError",
    "WriteBufferLimitError",
]


class NetringError(Exception):
    """Base class of every netring error."""


class ConfigurationError(NetringError, ValueError):
    """An argument is out of range or of the wrong kind; the message names it."""


class BackendUnavailableError(NetringError):
    """The requested IO backend cannot run here; the message says why."""


class FramingError(NetringError):
    """A peer's stream broke the connection's framing rule."""


class FrameTooLargeError(FramingError):
    """A peer declared a packet above ``max_packet``, or sent ``max_line``
    bytes without a delimiter. Passed to ``connection_lost``; nothing was
    buffered for the refused body."""


class FrameTimeoutError(FramingError):
    """A packet (or line) that had started did not finish within the
    server's ``frame_timeout``: a peer trickling bytes (slowloris). Passed
    to ``connection_lost``."""


class WriteBufferLimitError(NetringError):
    """A connection's queued writes passed ``max_write_buffer``: its peer is
    not reading. The connection was aborted (nothing more is sent to it);
    passed to ``connection_lost``."""


class ConnectionClosedError(NetringError, ConnectionError):
    """An operation needed a connection that is already closed."""


class TLSError(NetringError, ssl.SSLError):
    """A TLS handshake failed, or a TLS stream broke; the message is the
    reason (rustls's). Also an ``ssl.SSLError``, as asyncio's SSL transports
    raise: an outbound connect's future fails with it, ``connection_lost``
    gets it. ``reason`` is the message."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.reason = message
        self.library = "rustls"

    def __str__(self) -> str:
        return self.reason


class TLSCertVerificationError(TLSError, ssl.SSLCertVerificationError):
    """The peer's certificate was rejected (unknown issuer, expired, not
    valid for the server name...): the message starts with ``certificate
    verify failed:`` and names the reason (also ``verify_message``)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.verify_message = message.partition(": ")[2] or message
        self.verify_code = 0


class TLSEOFError(TLSError, ssl.SSLEOFError):
    """The peer ended the TCP stream without TLS's ``close_notify``: the
    data may have been cut short (a truncation). Passed to
    ``connection_lost``."""


class DatagramTruncatedError(NetringError):
    """A datagram was larger than a receive buffer holds (``limit`` bytes:
    the pool's ``buffer_size`` minus 44). Passed to ``error_received``; its
    bytes were dropped, never delivered cut. Attributes: ``size`` (the
    datagram's real length), ``limit``, ``addr`` (the sender)."""

    size: int
    limit: int
    addr: tuple[str, int] | None
