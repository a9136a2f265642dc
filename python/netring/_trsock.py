"""``transport.get_extra_info("socket")``: asyncio's ``TransportSocket``
over a duplicate of the connection's descriptor.

The engine owns each connection's descriptor and closes it when it is done
with the connection; a number handed out as is could by then name another
connection's socket. So the object wraps a duplicate (``dup``), made the
first time it is asked for, on the connection's own thread (its IO thread,
or the loop's inside asyncio) while the engine's descriptor is certainly
still this connection's. The duplicate names the same socket for as long as
it is open, whatever the engine does with its own descriptor, so options set
through it (``TCP_NODELAY``, ``SO_KEEPALIVE``...) apply to this connection
and to no other. It is closed right after ``connection_lost`` (as asyncio
closes its socket then); the object's methods then raise ``OSError`` and
``fileno()`` is -1. Like asyncio's, the object has no ``close()``, ``send``
or ``recv``: the connection's I/O stays the engine's.
"""

from __future__ import annotations

import asyncio.trsock
import socket

__all__ = ["TransportSocket"]


class TransportSocket(asyncio.trsock.TransportSocket):
    """What ``transport.get_extra_info("socket")`` returns: asyncio's
    socket-like object (``setsockopt``, ``getsockopt``, ``getsockname``,
    ``getpeername``, ``family``, ``type``, ``proto``, ``fileno()``...) over
    netring's duplicate of the connection's descriptor."""

    __slots__ = ()

    def _release(self) -> None:
        """Close the duplicate (the dispatcher calls this after
        ``connection_lost``)."""
        self._sock.close()

    def __repr__(self) -> str:
        return "<netring." + super().__repr__()[len("<asyncio."):]


def _make(fd: int, family: int, kind: int, proto: int) -> TransportSocket:
    """Wrap ``fd`` (a duplicate, handed over: the socket owns it from here)."""
    return TransportSocket(socket.socket(family, kind, proto, fileno=fd))
