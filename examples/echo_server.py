"""EchoServer: the classic first server. Run: python examples/echo_server.py [PORT]"""

import sys

import netring


class Echo(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.transport.write(data)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    server = netring.Server(Echo, "127.0.0.1", port)
    server.serve_forever(
        on_ready=lambda: print(
            f"echo server on {server.host}:{server.port} ({server.backend}); Ctrl-C stops it"
        )
    )
