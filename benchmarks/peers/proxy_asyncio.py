"""A TCP port forwarder on asyncio or uvloop: the reference point for
``python -m netring serve proxy``.

Usage: proxy_asyncio.py --loop asyncio|uvloop --upstream HOST:PORT --port P   (0 picks a free port)

Listens on 127.0.0.1 and prints ``READY <port>`` once listening. The same
design as netring's proxy example: each inbound connection opens one
upstream connection and relays bytes both ways with ``data_received`` ->
``write``; backpressure both ways (a side whose write buffer passes its
high-water mark pauses reading on the other side); inbound reading waits
until the upstream connection is up (uvloop may still deliver a first
chunk after ``pause_reading`` in ``connection_made``: it is held and sent
once the upstream is up).
"""

import argparse
import asyncio


class Upstream(asyncio.Protocol):
    """The outbound half: bytes from the upstream go to the inbound client."""

    def __init__(self, inbound: "Inbound") -> None:
        self.inbound = inbound
        self.transport = None

    def connection_made(self, transport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.inbound.transport.write(data)

    def eof_received(self) -> bool:
        if self.inbound.transport.can_write_eof():
            self.inbound.transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        self.inbound.transport.close()

    def pause_writing(self) -> None:
        self.inbound.transport.pause_reading()

    def resume_writing(self) -> None:
        self.inbound.transport.resume_reading()


class Inbound(asyncio.Protocol):
    """The inbound half: bytes from the client go to the upstream."""

    upstream_addr: tuple[str, int]

    def __init__(self) -> None:
        self.transport = None
        self.upstream: Upstream | None = None
        self.early: list[bytes] = []  # received before the upstream was up

    def connection_made(self, transport) -> None:
        self.transport = transport
        transport.pause_reading()  # until the upstream is connected
        loop = asyncio.get_running_loop()
        task = loop.create_task(loop.create_connection(lambda: Upstream(self), *self.upstream_addr))
        task.add_done_callback(self._upstream_ready)

    def _upstream_ready(self, task: asyncio.Task) -> None:
        if task.cancelled() or task.exception() is not None:
            self.transport.abort()
            return
        _, self.upstream = task.result()
        if self.transport.is_closing():
            self.upstream.transport.close()
            return
        if self.early:
            self.upstream.transport.writelines(self.early)
            self.early = []
        self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.upstream is None:
            self.early.append(data)
        else:
            self.upstream.transport.write(data)

    def eof_received(self) -> bool:
        if self.upstream is not None and self.upstream.transport.can_write_eof():
            self.upstream.transport.write_eof()
        return True

    def connection_lost(self, exc) -> None:
        if self.upstream is not None:
            self.upstream.transport.close()

    def pause_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.pause_reading()

    def resume_writing(self) -> None:
        if self.upstream is not None:
            self.upstream.transport.resume_reading()


async def serve(port: int, upstream: tuple[str, int]) -> None:
    loop = asyncio.get_running_loop()
    factory = type("Proxy", (Inbound,), {"upstream_addr": upstream})
    server = await loop.create_server(factory, "127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="asyncio")
    parser.add_argument("--upstream", required=True, metavar="HOST:PORT")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    host, _, port = args.upstream.rpartition(":")
    upstream = (host, int(port))
    try:
        if args.loop == "uvloop":
            import uvloop  # optional: only this mode needs it

            uvloop.run(serve(args.port, upstream))
        else:
            asyncio.run(serve(args.port, upstream))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
