"""ThreadPoolLargePacketEchoServer's IO half: packets up to 16 MiB arrive
through 1 KiB IO buffers; the engine reassembles each and Python sees it
whole. Run: python examples/large_packet_echo_server.py [PORT]"""

import sys

import netring


class PacketEcho(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, packet: bytes) -> None:
        self.transport.send_packet(packet)


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    framing = netring.LengthPrefixed(header_size=4, max_packet=16 * 1024 * 1024)
    server = netring.Server(PacketEcho, "127.0.0.1", port, framing=framing, buffer_size=1024)
    server.serve_forever(
        on_ready=lambda: print(
            f"large packet echo on {server.host}:{server.port} ({server.backend})"
        )
    )
