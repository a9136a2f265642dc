"""Hold N idle connections to a server: a helper of ``limits_bench.py``.

Usage: limits_hold.py HOST PORT N [--sources K] [--first F]

Opens N connections (at most 256 connecting at once) from the source
addresses 127.0.0.F .. 127.0.0.(F+K-1) in turn, so that many connections do
not run out of one address's ephemeral ports. Each sends 16 bytes and reads
them back (so the server has accepted it and made its protocol), then stays
idle. Prints ``OPEN n`` when all are up; on a line from stdin closes them all
and prints ``CLOSED``. Exits 3 with ``ERROR ...`` on the first failure.
"""

from __future__ import annotations

import argparse
import errno
import os
import selectors
import socket
import sys
import time

IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def die(message: str) -> None:
    print(f"ERROR {message}", flush=True)
    os._exit(3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("n", type=int)
    parser.add_argument("--sources", type=int, default=1)
    parser.add_argument("--first", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    addr = (args.host, args.port)
    deadline = time.monotonic() + args.timeout
    sel = selectors.DefaultSelector()
    socks: list[socket.socket] = []
    got: dict[int, bytes] = {}
    started = done = pending = 0
    while done < args.n:
        while started < args.n and pending < 256:
            for _ in range(300):
                s = socket.socket()
                s.setblocking(False)
                if args.sources > 1:
                    s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
                    s.bind((f"127.0.0.{args.first + started % args.sources}", 0))
                err = s.connect_ex(addr)
                if err != errno.EADDRNOTAVAIL:
                    break
                s.close()
                time.sleep(0.01)
            if err not in (0, errno.EINPROGRESS):
                die(f"connect {started}: {os.strerror(err)}")
            socks.append(s)
            sel.register(s, selectors.EVENT_WRITE, started)
            got[started] = b""
            started += 1
            pending += 1
        for key, events in sel.select(1.0):
            i, s = key.data, key.fileobj
            assert isinstance(s, socket.socket)
            message = b"%015d\n" % i
            if events & selectors.EVENT_WRITE:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    die(f"connect {i}: {os.strerror(err)}")
                s.send(message)
                sel.modify(s, selectors.EVENT_READ, i)
                continue
            data = s.recv(64)
            if not data:
                die(f"connection {i} closed by the server")
            got[i] += data
            if len(got[i]) >= len(message):
                if got[i] != message:
                    die(f"connection {i}: wrong echo")
                sel.unregister(s)
                done += 1
                pending -= 1
        if time.monotonic() > deadline:
            die(f"only {done} of {args.n} connections echoed in time")
    print(f"OPEN {done}", flush=True)
    sys.stdin.readline()
    for s in socks:
        s.close()
    print("CLOSED", flush=True)


if __name__ == "__main__":
    main()
