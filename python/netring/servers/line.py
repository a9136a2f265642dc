"""SimpleProtocolServer: CRLF-terminated lines, each echoed with its CRLF."""

from __future__ import annotations

from .._native import Transport
from ..protocol import Protocol


class LineEcho(Protocol):
    """Echoes every whole line (``send_packet`` appends the CRLF)."""

    transport: Transport

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packets_received(self, packets: list[bytes]) -> None:
        self.transport.send_packets(packets)  # one call for the whole batch

    # Backpressure: while the peer is not taking our replies, stop reading
    # its requests (TCP flow control then slows it down).
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()
