"""line-workers on asyncio: the same blocking work through ``run_in_executor``.

Usage: workers_asyncio.py --threads N --work-ms MS --port P   (0 picks a free port)

Listens on 127.0.0.1 and prints ``READY <port>`` once listening.

The peer of ``python -m netring serve line-workers``: CRLF lines; each line
runs netring's own ``execute`` (a SQLite query against the same generated
database, per-thread connections) and then sleeps MS ms, on a
``ThreadPoolExecutor`` of N threads via ``loop.run_in_executor``. Like
netring's worker pool it keeps per-connection order: each connection has one
consumer task that awaits its lines' work one after another, so different
connections overlap and one connection's replies leave in order. Lines are cut
with ``bytes.find`` on an accumulating buffer (one read is usually one line at
depth 1).
"""

from __future__ import annotations

import argparse
import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from netring.servers.line_workers import Database, execute

MAX_LINE = 16384


def work(db: Database, line: bytes, work_s: float) -> bytes:
    reply = execute(db, line)
    if work_s:
        time.sleep(work_s)
    return reply


class LineWorkers(asyncio.Protocol):
    def __init__(self, executor: ThreadPoolExecutor, db: Database, work_s: float) -> None:
        self.executor, self.db, self.work_s = executor, db, work_s
        self.buf = bytearray()
        self.lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport) -> None:  # type: ignore[no-untyped-def]
        self.transport = transport
        self.task = asyncio.get_running_loop().create_task(self.consume())

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        pos = 0
        while (i := buf.find(b"\r\n", pos)) >= 0:
            self.lines.put_nowait(bytes(buf[pos:i]))
            pos = i + 2
        del buf[:pos]
        if len(buf) >= MAX_LINE and self.transport is not None:
            self.transport.abort()

    def connection_lost(self, exc: BaseException | None) -> None:
        self.transport = None
        self.lines.put_nowait(None)

    async def consume(self) -> None:
        loop = asyncio.get_running_loop()
        while (line := await self.lines.get()) is not None:
            reply = await loop.run_in_executor(self.executor, work, self.db, line, self.work_s)
            if self.transport is not None:
                self.transport.write(reply + b"\r\n")


async def serve(threads: int, work_ms: float, port: int) -> None:
    loop = asyncio.get_running_loop()
    executor = ThreadPoolExecutor(threads, thread_name_prefix="executor")
    db = Database()
    server = await loop.create_server(lambda: LineWorkers(executor, db, work_ms / 1000),
                                      "127.0.0.1", port)
    print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
    await server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    try:
        asyncio.run(serve(args.threads, args.work_ms, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
