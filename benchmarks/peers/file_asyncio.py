"""The file server protocol of examples/file_server.py on asyncio or uvloop.

    GET name\\n  ->  OK <size>\\n + the file

asyncio's loop sends with ``loop.sendfile`` (``os.sendfile`` on its selector
loop); uvloop has no ``loop.sendfile`` (it raises NotImplementedError), so
there the file goes as a uvloop user (or aiohttp's fallback) sends it:
256 KiB reads written and drained in turn.

Usage: file_asyncio.py --root DIR [--loop asyncio|uvloop] [--port P]
Prints ``READY <port>`` once listening on 127.0.0.1.
"""

import argparse
import asyncio
import os

CHUNK = 256 * 1024


class FileProtocol(asyncio.Protocol):
    root = "."

    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.buf = b""
        self.queue: asyncio.Queue[str] = asyncio.Queue()
        self.task = asyncio.get_running_loop().create_task(self.serve())
        self.can_write = asyncio.Event()
        self.can_write.set()

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\n" in self.buf:
            line, self.buf = self.buf.split(b"\n", 1)
            self.queue.put_nowait(line.decode().strip())

    def pause_writing(self) -> None:
        self.can_write.clear()

    def resume_writing(self) -> None:
        self.can_write.set()

    def connection_lost(self, exc: Exception | None) -> None:
        self.task.cancel()

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            name = (await self.queue.get()).partition(" ")[2]
            path = os.path.join(self.root, os.path.basename(name))
            try:
                f = open(path, "rb")
            except OSError:
                self.transport.write(b"ERR not found\n")
                continue
            with f:
                size = os.fstat(f.fileno()).st_size
                self.transport.write(b"OK %d\n" % size)
                try:
                    await loop.sendfile(self.transport, f, 0, size, fallback=False)
                except NotImplementedError:  # uvloop
                    while chunk := f.read(CHUNK):
                        self.transport.write(chunk)
                        await self.can_write.wait()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", required=True)
    ap.add_argument("--loop", default="asyncio", choices=["asyncio", "uvloop"])
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args()
    FileProtocol.root = args.root
    if args.loop == "uvloop":
        import uvloop

        uvloop.install()

    async def run() -> None:
        server = await asyncio.get_running_loop().create_server(
            FileProtocol, "127.0.0.1", args.port
        )
        print(f"READY {server.sockets[0].getsockname()[1]}", flush=True)
        await server.serve_forever()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
