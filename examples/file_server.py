"""FileServer: files from a directory, sent by the kernel with transport.sendfile().

Protocol (one request per line, pipelining allowed, answers in order):

    GET name\\n   ->  OK <size>\\n followed by the file's <size> bytes
                  ->  ERR <reason>\\n  (no such file, a name outside the directory)

Run: python examples/file_server.py DIRECTORY [PORT]
Try: printf 'GET hello.txt\\n' | nc 127.0.0.1 5056
"""

from __future__ import annotations

import os
import sys

import netring

MAX_LINE = 1024  # a longer request line closes the connection (a frame error)


class FileServer(netring.Protocol):
    """Serves files below `root` (a class attribute set by `serve`)."""

    root = "."

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        command, _, name = line.strip().decode("utf-8", "replace").partition(" ")
        if command != "GET" or not name:
            self.transport.write(b"ERR usage: GET name\n")
            return
        path = os.path.realpath(os.path.join(self.root, name))
        if os.path.commonpath([path, self.root]) != self.root:
            self.transport.write(b"ERR outside the served directory\n")
            return
        try:
            with open(path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                self.transport.write(b"OK %d\n" % size)
                if size:
                    # The engine keeps its own descriptor: closing f is fine.
                    self.transport.sendfile(f, 0, size)
        except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
            self.transport.write(b"ERR %s\n" % e.strerror.encode())


def serve(root: str, host: str = "127.0.0.1", port: int = 5056, **options) -> netring.Server:
    """A started server for the files below `root`."""

    class Rooted(FileServer):
        pass

    Rooted.root = os.path.realpath(root)
    framing = netring.Delimited(b"\n", max_line=MAX_LINE)
    server = netring.Server(Rooted, host, port, framing=framing, **options)
    server.start()
    return server


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    server = serve(sys.argv[1], port=int(sys.argv[2]) if len(sys.argv) > 2 else 5056)
    print(f"file server for {sys.argv[1]} on {server.host}:{server.port} ({server.backend})")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
