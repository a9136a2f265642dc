"""The proxy example (inbound and outbound on one pool, backpressure both
ways) and the CLI running several servers on one pool."""

from __future__ import annotations

import os
import signal
import socket
import struct
import threading
from typing import Any, ClassVar

import netring
from conftest import cli_server, connect, recv_exactly, recv_until_eof, wait_until
from netring.servers.echo import Echo
from netring.servers.proxy import proxy_factory


class Firehose(netring.Protocol):
    """Writes 64 MiB as soon as a client connects, respecting backpressure."""

    size = 64 * 1024 * 1024
    instances: ClassVar[list[Firehose]] = []

    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        Firehose.instances.append(self)
        self.transport = transport
        self.sent = 0
        self.paused = False
        self._pump()

    def _pump(self) -> None:
        chunk = bytes(range(256)) * 256
        while self.sent < self.size and not self.paused:
            self.transport.write(chunk)
            self.sent += len(chunk)
        if self.sent >= self.size:
            self.transport.close()

    def pause_writing(self) -> None:
        self.paused = True

    def resume_writing(self) -> None:
        self.paused = False
        self._pump()


def test_proxy_relays_both_ways(backend: str) -> None:
    with netring.IOPool(io_threads=2, backend=backend) as pool:
        upstream = netring.Server(Echo, pool=pool)
        upstream.start()
        proxy = netring.Server(proxy_factory(pool, "127.0.0.1", upstream.port), pool=pool)
        proxy.start()
        payload = os.urandom(1 << 20)
        with connect(proxy) as s:
            t = threading.Thread(target=s.sendall, args=(payload,))
            t.start()
            assert recv_exactly(s, len(payload)) == payload
            t.join()
            s.shutdown(socket.SHUT_WR)
            assert recv_until_eof(s) == b""


def test_slow_reader_pauses_the_other_side(backend: str) -> None:
    inbound: list[Any] = []
    with netring.IOPool(io_threads=1, backend=backend) as pool:
        upstream = netring.Server(Firehose, pool=pool)
        upstream.start()
        base = proxy_factory(pool, "127.0.0.1", upstream.port)

        class Recorded(base):  # type: ignore[misc, valid-type]
            def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
                inbound.append(self)
                super().connection_made(transport)

        proxy = netring.Server(Recorded, pool=pool)
        proxy.start()
        Firehose.instances.clear()
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            s.settimeout(30)
            s.connect(proxy.address)
            # Not reading: the chain must stall (the proxy stops reading
            # upstream, the upstream stops writing), not buffer 64 MiB.
            assert wait_until(lambda: bool(inbound) and bool(Firehose.instances))
            source = Firehose.instances[0]

            def stalled() -> bool:
                before = source.sent
                threading.Event().wait(0.3)
                return source.sent == before and source.paused

            assert wait_until(stalled, 20)
            assert source.sent < Firehose.size
            held = inbound[0].transport.get_write_buffer_size()
            assert held < 1024 * 1024, f"proxy buffered {held} bytes for a stalled reader"
            got = recv_until_eof(s)
        assert len(got) == Firehose.size
        assert got == (bytes(range(256)) * 256) * (Firehose.size // 65536)


def test_cli_runs_several_servers_on_one_pool_and_a_proxy(backend: str) -> None:
    with cli_server("echo", "packet-echo", backend=backend, args=["--io-threads", "1"]) as cli:
        assert all(line.endswith(f"(backend={backend}, io_threads=1)") for line in cli.ready)
        assert set(cli.ports) == {"echo", "packet-echo"}
        with socket.create_connection(("127.0.0.1", cli.ports["packet-echo"]), timeout=5) as s:
            s.sendall(struct.pack(">I", 2) + b"hi")
            assert recv_exactly(s, 6) == struct.pack(">I", 2) + b"hi"
        upstream = ["--upstream", f"127.0.0.1:{cli.ports['echo']}"]
        with cli_server("proxy", backend=backend, args=upstream) as proxy:
            assert proxy.ready[0].startswith("netring: serving proxy on 127.0.0.1:")
            with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as s:
                s.sendall(b"via proxy")
                assert recv_exactly(s, 9) == b"via proxy"
            for p in (cli, proxy):
                assert p.stop(signal.SIGTERM) == 0
