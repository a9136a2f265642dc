"""UDP echo on an IO pool. Run: python examples/udp_echo_server.py [PORT]

Try it: ``echo hi | nc -u -w1 127.0.0.1 5052``.
"""

import signal
import sys
import threading

import netring


class UdpEcho(netring.DatagramProtocol):
    def connection_made(self, transport: netring.DatagramTransport) -> None:  # type: ignore[override]
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.transport.sendto(data, addr)

    def error_received(self, exc: Exception) -> None:
        print(f"udp echo: {exc}")


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5052
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with netring.IOPool() as pool:
        transport, _ = pool.create_datagram_endpoint(UdpEcho, ("127.0.0.1", port)).result()
        host, port = transport.get_extra_info("sockname")[:2]
        print(f"udp echo on {host}:{port} ({pool.backend}); Ctrl-C stops it")
        while not stop.wait(0.1):
            pass
        transport.close()
