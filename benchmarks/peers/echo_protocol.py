"""The echo protocol that every Python server in the benchmark runs.

netring, asyncio and uvloop all serve this one class, so the benchmark
compares event loops and engines, not protocol code.
"""

import asyncio


class EchoProtocol(asyncio.Protocol):
    """Write every received chunk straight back.

    Callbacks for one connection never run concurrently (asyncio and netring
    both guarantee it), so the instance needs no locking.
    """

    def __init__(self) -> None:
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)
