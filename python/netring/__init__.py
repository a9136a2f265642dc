"""netring: a socket server framework with a native io_uring engine.

Write protocols in asyncio's vocabulary; the engine does every syscall,
buffer and write queue on its IO threads::

    import netring

    class Echo(netring.Protocol):
        def connection_made(self, transport):
            self.transport = transport

        def data_received(self, data):
            self.transport.write(data)

    netring.Server(Echo, "127.0.0.1", 5050).serve_forever()
"""

from __future__ import annotations

from ._native import DatagramTransport, Transport
from .errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConnectionClosedError,
    DatagramTruncatedError,
    FrameTimeoutError,
    FrameTooLargeError,
    FramingError,
    NetringError,
    TLSCertVerificationError,
    TLSEOFError,
    TLSError,
    WriteBufferLimitError,
)
from .framing import Delimited, Exactly, LengthPrefixed, Raw, Resp
from .pool import IOPool, TimerHandle
from .protocol import BaseProtocol, Protocol
from .server import Server, backend_info
from .supervisor import Supervisor, WorkerStartError, run_workers, usable_cpus, worker_sockets
from .tls import TLSClientConfig, TLSConfig
from .udp import DatagramProtocol
from .workers import WorkerPool

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "BaseProtocol",
    "ConfigurationError",
    "ConnectionClosedError",
    "DatagramProtocol",
    "DatagramTransport",
    "DatagramTruncatedError",
    "Delimited",
    "Exactly",
    "FrameTimeoutError",
    "FrameTooLargeError",
    "FramingError",
    "IOPool",
    "LengthPrefixed",
    "NetringError",
    "Protocol",
    "Raw",
    "Resp",
    "Server",
    "Supervisor",
    "TLSCertVerificationError",
    "TLSClientConfig",
    "TLSConfig",
    "TLSEOFError",
    "TLSError",
    "TimerHandle",
    "Transport",
    "WorkerPool",
    "WorkerStartError",
    "WriteBufferLimitError",
    "__version__",
    "backend_info",
    "run_workers",
    "usable_cpus",
    "worker_sockets",
]
