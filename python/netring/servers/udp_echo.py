"""UDP echo: every datagram goes back to its sender."""

from __future__ import annotations

from .._native import DatagramTransport
from ..udp import DatagramProtocol


class UdpEcho(DatagramProtocol):
    """Sends each datagram back to where it came from."""

    transport: DatagramTransport

    def connection_made(self, transport: DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)
