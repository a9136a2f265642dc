"""The engine's log records reach Python's ``logging`` under ``netring``.

Engine records (Rust ``log`` targets ``netring_core::...``) go to loggers
under ``netring`` (``netring.core``, ``netring.driver``...), at their own
level, so handlers and levels set on ``logging.getLogger("netring")`` apply
to them; DEBUG records arrive when that logger allows DEBUG, decided when
each record is emitted (a level changed at run time counts).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import subprocess
import sys
import textwrap
from typing import Any

import netring
import pytest
from conftest import connect, serving, wait_until


class Keep(logging.Handler):
    """Keeps every record it is handed."""

    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


class Flooder(netring.Protocol):
    """Writes 8 MiB at once to a peer that does not read."""

    def connection_made(self, transport: Any) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(b"f" * (8 << 20))


def test_engine_warning_reaches_the_netring_logger_at_warning(backend: str) -> None:
    keep = Keep()
    logger = logging.getLogger("netring")
    old_level = logger.level
    logger.addHandler(keep)
    logger.setLevel(logging.WARNING)
    try:
        with serving(Flooder, backend, max_write_buffer=1 << 20) as server, \
                connect(server) as stuck:
            stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stuck.sendall(b"go")
            assert wait_until(lambda: any("max_write_buffer" in r.getMessage()
                                          for r in keep.records), 10), \
                [r.getMessage() for r in keep.records]
    finally:
        logger.removeHandler(keep)
        logger.setLevel(old_level)
    [record] = [r for r in keep.records if "max_write_buffer" in r.getMessage()]
    assert record.levelno == logging.WARNING and record.levelname == "WARNING"
    assert record.name.startswith("netring."), record.name  # the engine's module, under netring
    assert "not reading" in record.getMessage()


# A child server on epoll whose accept4(2) always fails with EPERM (a
# seccomp filter), which the engine logs at DEBUG ("accept error ignored")
# and retries while the connection stays queued. Prints the DEBUG records
# seen with the ``netring`` logger at INFO, then at DEBUG.
DEBUG_CHILD = textwrap.dedent("""
    import errno, json, logging, socket, threading, time
    import pyseccomp as seccomp
    import netring
    from netring.servers.echo import Echo

    got = threading.Event()
    records = []
    class Keep(logging.Handler):
        def emit(self, record):
            if record.levelno == logging.DEBUG:
                records.append((record.name, record.levelname, record.getMessage()))
                got.set()
    logger = logging.getLogger("netring")
    logger.addHandler(Keep())
    logger.setLevel(logging.INFO)
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    for call in ("accept", "accept4"):
        f.add_rule(seccomp.ERRNO(errno.EPERM), call)
    f.load()
    server = netring.Server(Echo, "127.0.0.1", 0, backend="epoll", io_threads=1)
    server.start()
    client = socket.create_connection(server.address, timeout=5)
    # NOTE: the engine retries the queued connection on every loop turn, so
    # it fails hundreds of times in this window: none may reach the handler.
    time.sleep(0.3)
    at_info = list(records)
    logger.setLevel(logging.DEBUG)
    got.wait(10)
    at_debug = list(records)
    client.close()
    server.shutdown(0)
    print(json.dumps({"at_info": at_info, "at_debug": at_debug[:3]}))
""")


@pytest.mark.timeout(60)
def test_engine_debug_records_reach_python_once_netring_allows_debug() -> None:
    pytest.importorskip("pyseccomp")
    env = {k: v for k, v in os.environ.items() if k != "NETRING_BACKEND"}
    out = subprocess.run([sys.executable, "-c", DEBUG_CHILD], capture_output=True, text=True,
                         timeout=50, env=env)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["at_info"] == []
    assert result["at_debug"], "no DEBUG record after setLevel(DEBUG)"
    name, level, message = result["at_debug"][0]
    assert level == "DEBUG"
    assert name.startswith("netring."), name
    assert "accept error ignored" in message and "Operation not permitted" in message, message
