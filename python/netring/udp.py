"""UDP endpoints on an IOPool: asyncio's ``DatagramProtocol`` vocabulary.

``IOPool.create_datagram_endpoint`` opens one; this module holds the
protocol base class (its arguments are checked in ``netring._args``). Receiving is one multishot
``recvmsg`` into the pool's shared receive buffers on io_uring (a readable
loop on epoll), so an idle endpoint owns no buffer.

Datagram size: a datagram is delivered whole up to ``buffer_size - 44``
bytes (the pool's receive-buffer size minus io_uring's per-datagram header
and source address; 16,340 bytes with the default 16 KiB buffers). A longer
one is never cut silently: ``error_received`` gets a
``DatagramTruncatedError`` with its real ``size`` and the sender's ``addr``,
and its bytes are dropped. Give the pool ``buffer_size=65536`` to take any
UDP datagram whole.

Sending never blocks: ``sendto`` queues the datagram (in order) and the IO
thread sends it, several per submission. The queue has asyncio's water
marks (``pause_writing``/``resume_writing``) and a hard cap,
``max_send_queue`` (default 1 MiB): past it datagrams are dropped and
counted (``datagrams_dropped`` in ``stats()``), as the kernel drops them
when its own buffers are full.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .protocol import BaseProtocol

if TYPE_CHECKING:
    from ._native import DatagramTransport

__all__ = ["DatagramProtocol"]


class DatagramProtocol(BaseProtocol):
    """A UDP protocol (asyncio.DatagramProtocol).

    Threading contract: every callback of one endpoint runs on the IO thread
    that owns it, one at a time. An exception in ``datagram_received`` or
    ``error_received`` is logged with the sender's address and the endpoint
    keeps serving; one in ``connection_made`` closes it and fails the
    ``create_datagram_endpoint`` future.
    """

    def connection_made(self, transport: DatagramTransport) -> None:  # type: ignore[override]
        """The endpoint is bound and live; keep ``transport`` to ``sendto``."""

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        """One whole datagram arrived from ``addr``."""

    def error_received(self, exc: Exception) -> None:
        """A send failed, the kernel reported an ICMP error (e.g.
        ``ConnectionRefusedError`` on an endpoint with ``remote_addr``), or a
        datagram was too large (``DatagramTruncatedError``). The endpoint
        stays open."""
