"""PacketEchoServer: 4-byte big-endian length-prefixed packets, echoed framed
the same way. Run: python examples/packet_echo_server.py [PORT]"""

import sys

import netring


class PacketEcho(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, packet: bytes) -> None:
        self.transport.send_packet(packet)  # adds the 4-byte length header


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    framing = netring.LengthPrefixed(header_size=4, byteorder="big")
    server = netring.Server(PacketEcho, "127.0.0.1", port, framing=framing)
    server.serve_forever(
        on_ready=lambda: print(
            f"packet echo on {server.host}:{server.port} ({server.backend}); Ctrl-C stops it"
        )
    )
