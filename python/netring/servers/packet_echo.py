"""PacketEchoServer: echoes each length-prefixed packet, framed the same way."""

from __future__ import annotations

from .._native import Transport
from ..protocol import Protocol


class PacketEcho(Protocol):
    """Sends every whole packet back with ``send_packet`` (same framing)."""

    transport: Transport

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packets_received(self, packets: list[bytes]) -> None:
        send = self.transport.send_packet
        for packet in packets:
            send(packet)
