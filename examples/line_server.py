"""SimpleProtocolServer: CRLF-terminated command lines (like SMTP or POP3).
Each line is echoed with its CRLF; QUIT closes. Run: python examples/line_server.py [PORT]"""

import sys

import netring


class Lines(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport

    def packet_received(self, line: bytes) -> None:
        if line.upper() == b"QUIT":
            self.transport.send_packet(b"BYE")
            self.transport.close()
        else:
            self.transport.send_packet(line)  # appends CRLF


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 5050
    server = netring.Server(Lines, "127.0.0.1", port, framing=netring.Delimited(b"\r\n"))
    server.serve_forever(
        on_ready=lambda: print(
            f"line server on {server.host}:{server.port} ({server.backend}); Ctrl-C stops it"
        )
    )
