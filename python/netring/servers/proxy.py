"""A TCP port forwarder: inbound and outbound connections on the same IO
threads, with backpressure both ways.

Each inbound connection opens one upstream connection (``pool.connect``)
and relays bytes both ways. Backpressure: when one side's write queue goes
over its high-water mark (``pause_writing``), reading stops on the other
side until it drains (``resume_writing``), so a slow reader on either end
holds at most a high-water mark of memory in the proxy, never an unbounded
queue. Inbound reading stays paused until the upstream connection is up.
"""

from __future__ import annotations

from concurrent.futures import Future
from typing import Any

from .._native import Transport
from ..pool import IOPool
from ..protocol import Protocol


class _Upstream(Protocol):
    """The proxy's outbound half."""

    def __init__(self, inbound: ProxyInbound) -> None:
        self.inbound = inbound
        self.transport: Transport | None = None

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.inbound.transport.write(data)

    def eof_received(self) -> bool:
        self.inbound.transport.write_eof()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        self.inbound.transport.close()

    def pause_writing(self) -> None:
        self.inbound.transport.pause_reading()

    def resume_writing(self) -> None:
        self.inbound.transport.resume_reading()


class ProxyInbound(Protocol):
    """The proxy's inbound half; set ``pool``, ``upstream_host`` and
    ``upstream_port`` on a subclass (see ``proxy_factory``)."""

    pool: IOPool
    upstream_host: str
    upstream_port: int
    connect_timeout: float = 10.0

    transport: Transport

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.upstream: _Upstream | None = None
        transport.pause_reading()  # until the upstream is connected
        fut = self.pool.connect(lambda: _Upstream(self), self.upstream_host,
                                self.upstream_port, timeout=self.connect_timeout)
        fut.add_done_callback(self._upstream_ready)

    def _upstream_ready(self, fut: Future[tuple[Any, Any]]) -> None:
        if fut.exception() is not None:
            self.transport.abort()
            return
        _, self.upstream = fut.result()
        if self.transport.is_closing():
            if self.upstream.transport is not None:
                self.upstream.transport.close()
            return
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write(data)

    def eof_received(self) -> bool:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.write_eof()
        return True

    def connection_lost(self, exc: BaseException | None) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.close()

    def pause_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None and self.upstream.transport is not None:
            self.upstream.transport.resume_reading()


def proxy_factory(pool: IOPool, host: str, port: int,
                  connect_timeout: float = 10.0) -> type[ProxyInbound]:
    """A ``ProxyInbound`` class forwarding to ``host:port`` through ``pool``."""
    return type("Proxy", (ProxyInbound,), {
        "pool": pool, "upstream_host": host, "upstream_port": port,
        "connect_timeout": connect_timeout,
    })
