"""EchoServer: every byte received is sent back."""

from __future__ import annotations

from .._native import Transport
from ..protocol import Protocol


class Echo(Protocol):
    """Writes back whatever arrives."""

    transport: Transport

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)

    # Backpressure: while the peer is not taking our replies, stop reading
    # its requests (TCP flow control then slows it down).
    def pause_writing(self) -> None:
        self.transport.pause_reading()

    def resume_writing(self) -> None:
        self.transport.resume_reading()
