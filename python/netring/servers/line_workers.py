"""line-workers: CRLF command lines, each doing blocking work on a WorkerPool.

SimpleProtocolServer2's case: every command runs a real SQLite query (the
database is generated at start-up in a temporary directory) and then,
optionally, sleeps ``work_ms`` milliseconds, standing in for a call to a
remote service. Both block; on a ``WorkerPool`` they do not stall the IO
thread. Commands (one per line, replies one line each):

==================  ====================================================
``GET <id>``        ``OK <id> <name> <score>`` (``ERR no such item``)
``COUNT <prefix>``  ``OK <n>``: items whose name starts with the prefix
``PING``            ``PONG`` (no query, no sleep)
``QUIT``            ``BYE``, then the server closes the connection
anything else       looks up the item keyed by the line's CRC-32 and
                    replies the line itself: an echo that does the work
                    (what the benchmark's load generator checks)
==================  ====================================================

Verbs are case-insensitive and the syntax is exact (``GET`` takes a decimal
id and nothing else; ``PING`` and ``QUIT`` are the whole line): a line that
is not exactly a command is echoed, never answered ``ERR``, so the load
generator's random lines can never be mistaken for a command.

sqlite3 connections are per thread: each worker opens its own, read-only
(and immutable: the file never changes after start-up).
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import tempfile
import threading
import time
import weakref
import zlib
from collections.abc import Callable

from .._native import Transport
from ..protocol import Protocol

#: Rows in the generated table.
ITEMS = 10_000
_WORDS = ("alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel")


class Database:
    """A generated SQLite file and one read-only connection per thread."""

    def __init__(self, items: int = ITEMS, directory: str | None = None) -> None:
        self.items = items
        self._dir = tempfile.mkdtemp(prefix="netring-line-workers-", dir=directory)
        self.path = os.path.join(self._dir, "items.sqlite3")
        self._local = threading.local()
        with sqlite3.connect(self.path) as db:
            db.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT NOT NULL,"
                       " score INTEGER NOT NULL)")
            db.executemany("INSERT INTO items VALUES (?, ?, ?)",
                           ((i, f"{_WORDS[i % len(_WORDS)]}-{i:05d}", (i * 7919) % 1000)
                            for i in range(items)))
            db.execute("CREATE INDEX items_name ON items (name)")
        db.close()
        self._cleanup = weakref.finalize(self, shutil.rmtree, self._dir, True)

    def connection(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        db: sqlite3.Connection | None = getattr(self._local, "db", None)
        if db is None:
            # immutable: the file never changes once generated, so SQLite
            # may skip its per-query file locks and change checks (fcntl and
            # stat calls: ~5 % of the server's CPU at 29k queries/s).
            db = sqlite3.connect(f"file:{self.path}?mode=ro&immutable=1", uri=True)
            self._local.db = db
        return db

    def get(self, item: int) -> tuple[str, int] | None:
        row = self.connection().execute(
            "SELECT name, score FROM items WHERE id = ?", (item,)).fetchone()
        return None if row is None else (str(row[0]), int(row[1]))

    def count(self, prefix: str) -> int:
        # The index serves the range scan: name >= prefix AND name < prefix + U+FFFF.
        row = self.connection().execute(
            "SELECT count(*) FROM items WHERE name >= ? AND name < ?",
            (prefix, prefix + "\uffff")).fetchone()
        return int(row[0])

    def close(self) -> None:
        """Remove the database file (connections of other threads die with them)."""
        self._cleanup()


class LineWorkers(Protocol):
    """One command per line; see the module docstring. Blocking: serve it
    with ``workers=``."""

    transport: Transport

    def __init__(self, db: Database, work_s: float = 0.0) -> None:
        self.db = db
        self.work_s = work_s

    def connection_made(self, transport: Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        verb = line.upper()
        if verb == b"PING":
            self.transport.send_packet(b"PONG")
            return
        if verb == b"QUIT":
            self.transport.send_packet(b"BYE")
            self.transport.close()
            return
        reply = execute(self.db, line)
        if self.work_s:
            time.sleep(self.work_s)  # the remote call
        self.transport.send_packet(reply)


def execute(db: Database, line: bytes) -> bytes:
    """The reply to one command line other than PING and QUIT: runs its
    query (the benchmark's asyncio peer calls this too, for the same work)."""
    verb, _, rest = line.partition(b" ")
    verb = verb.upper()
    if verb == b"GET" and rest.isdigit() and len(rest) <= 18:
        item = int(rest)
        row = db.get(item)
        if row is None:
            return b"ERR no such item"
        return f"OK {item} {row[0]} {row[1]}".encode()
    if verb == b"COUNT":
        return b"OK %d" % db.count(rest.decode("utf-8", "replace"))
    db.get(zlib.crc32(line) % db.items)
    return line


def line_workers_factory(work_ms: float = 0.0, db: Database | None = None
                         ) -> Callable[[], LineWorkers]:
    """A protocol factory over one generated database (made here if not given)."""
    if work_ms < 0:
        raise ValueError(f"work_ms: must be >= 0, not {work_ms}")
    database = db if db is not None else Database()
    work_s = work_ms / 1000.0

    def make() -> LineWorkers:
        return LineWorkers(database, work_s)

    return make
