"""netring's exceptions.

``NetringError`` is the root. ``ConfigurationError`` is also a ``ValueError``
(a wrong argument, reported when the server is constructed and naming the
argument); ``ConnectionClosedError`` is also a ``ConnectionError``.
"""

from __future__ import annotations

__all__ = [
    "BackendUnavailableError",
    "ConfigurationError",
    "ConnectionClosedError",
    "FrameTooLargeError",
    "NetringError",
]


class NetringError(Exception):
    """Base class of every netring error."""


class ConfigurationError(NetringError, ValueError):
    """An argument is out of range or of the wrong kind; the message names it."""


class BackendUnavailableError(NetringError):
    """The requested IO backend cannot run here; the message says why."""


class FrameTooLargeError(NetringError):
    """A peer sent a frame above the configured limit."""


class ConnectionClosedError(NetringError, ConnectionError):
    """An operation needed a connection that is already closed."""
