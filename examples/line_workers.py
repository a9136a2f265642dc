"""SimpleProtocolServer2: CRLF command lines whose handlers block (a SQLite
query, then a sleep standing in for a remote call) run on a WorkerPool, so the
IO thread keeps answering. Commands: GET <id>, COUNT <prefix>, PING, QUIT.
Run: python examples/line_workers.py [PORT [WORKERS [WORK_MS]]]"""

import os
import sqlite3
import sys
import tempfile
import threading
import time

import netring

# A database to query: generated once; each worker thread opens its own connection.
DB = os.path.join(tempfile.mkdtemp(prefix="line-workers-"), "items.sqlite3")
with sqlite3.connect(DB) as db:
    db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, score INTEGER)")
    db.executemany("INSERT INTO items VALUES (?, ?, ?)",
                   ((i, f"item-{i:05d}", i * 7919 % 1000) for i in range(10_000)))
local = threading.local()


def query(sql: str, *args: object) -> tuple:
    if not hasattr(local, "db"):
        # immutable: the file never changes, so SQLite skips per-query locking.
        local.db = sqlite3.connect(f"file:{DB}?mode=ro&immutable=1", uri=True)
    return local.db.execute(sql, args).fetchone()


class Commands(netring.Protocol):
    work_s = 0.0

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport  # on the IO thread; everything below runs on a worker

    def packet_received(self, line: bytes) -> None:
        verb, _, arg = line.decode("utf-8", "replace").partition(" ")
        verb = verb.upper()
        if verb == "QUIT":
            self.transport.send_packet(b"BYE")
            self.transport.close()
            return
        if verb == "GET" and arg.isdigit():
            row = query("SELECT name, score FROM items WHERE id = ?", int(arg))
            reply = f"OK {arg} {row[0]} {row[1]}" if row else "ERR no such item"
        elif verb == "COUNT":
            reply = f"OK {query('SELECT count(*) FROM items WHERE name LIKE ?', arg + '%')[0]}"
        elif verb == "PING":
            reply = "PONG"
        else:
            reply = "ERR unknown command"
        time.sleep(self.work_s)  # blocking: releases the GIL; other workers go on
        self.transport.send_packet(reply.encode())  # thread-safe, keeps order


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    workers = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    Commands.work_s = float(sys.argv[3]) / 1000 if len(sys.argv) > 3 else 0.0
    server = netring.Server(Commands, "127.0.0.1", port, framing=netring.Delimited(b"\r\n"),
                            workers=workers)
    server.serve_forever(
        on_ready=lambda: print(
            f"line-workers on {server.host}:{server.port} ({server.backend}, "
            f"{workers} workers); Ctrl-C stops it"
        )
    )
