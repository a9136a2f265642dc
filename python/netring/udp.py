"""UDP endpoints on an IOPool: asyncio's ``DatagramProtocol`` vocabulary.

``IOPool.create_datagram_endpoint`` opens one; this module holds the
protocol base class and the argument checks. Receiving is one multishot
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

import ipaddress
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
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


def check_addr(name: str, addr: object, *, port_min: int = 0) -> tuple[str, int]:
    """A ``(host, port)`` pair, type-checked (host may be a name)."""
    if not isinstance(addr, tuple) or len(addr) < 2:
        raise TypeError(f"{name}: must be a (host, port) tuple, not {addr!r}")
    host, port = addr[0], addr[1]
    if not isinstance(host, str):
        raise TypeError(f"{name}: host must be a str, not {type(host).__name__}")
    if isinstance(port, bool) or not isinstance(port, int):
        raise TypeError(f"{name}: port must be an int, not {type(port).__name__}")
    if not port_min <= port <= 65535:
        raise ConfigurationError(f"{name}: port must be in {port_min}..65535, not {port}")
    return host, port


def is_ip(host: str) -> bool:
    """Whether ``host`` is an IP literal (no resolution needed)."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def check_groups(groups: Any) -> list[tuple[str, str | None]]:
    """``multicast_groups``: group addresses, or ``(group, interface)`` pairs."""
    if isinstance(groups, str | bytes):
        raise TypeError("multicast_groups: must be a list of addresses, not a single string")
    out: list[tuple[str, str | None]] = []
    for item in groups:
        group, iface = (item, None) if isinstance(item, str) else tuple(item)
        for what, value in (("group", group), ("interface", iface)):
            if value is None:
                continue
            try:
                ip = ipaddress.ip_address(value)
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"multicast_groups: {what} {value!r} is not an IP address") from None
            if what == "group" and not ip.is_multicast:
                raise ConfigurationError(
                    f"multicast_groups: {value} is not a multicast address")
        out.append((str(group), None if iface is None else str(iface)))
    return out
