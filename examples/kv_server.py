"""A Redis-protocol (RESP2) key-value server: PING, ECHO, SET, GET, DEL,
EXISTS, INCR, MGET, MSET, inline commands, pipelining. The engine frames the
stream: CRLF lines for the ``*N`` and ``$len`` headers, then ``Exactly(len + 2)``
for each value and its CRLF. Try it with redis-cli or redis-benchmark.
Run: python examples/kv_server.py [PORT]   (the full version: python -m netring serve kv)"""

import sys
import threading

import netring

LINE = netring.Delimited(b"\r\n")
MAX_BULK = 512 * 1024 * 1024
store: dict[bytes, bytes] = {}
lock = threading.Lock()  # connections on different IO threads share the store


def bulk(v: bytes | None) -> bytes:
    return b"$-1\r\n" if v is None else b"$%d\r\n%b\r\n" % (len(v), v)


def incr(key: bytes) -> bytes:
    old = store.get(key, b"0")
    if not old.removeprefix(b"-").isdigit() or not -(1 << 63) <= int(old) + 1 < 1 << 63:
        return b"-ERR value is not an integer or out of range\r\n"
    store[key] = b"%d" % (int(old) + 1)
    return b":%b\r\n" % store[key]


KNOWN = {b"ping", b"echo", b"set", b"get", b"del", b"exists", b"incr", b"mget", b"mset"}


def execute(args: list[bytes]) -> bytes:
    """One command's reply."""
    name, n = args[0].lower(), len(args)
    with lock:
        if name == b"ping" and n <= 2:
            return b"+PONG\r\n" if n == 1 else bulk(args[1])
        if name == b"echo" and n == 2:
            return bulk(args[1])
        if name == b"set" and n == 3:
            store[args[1]] = args[2]
            return b"+OK\r\n"
        if name == b"get" and n == 2:
            return bulk(store.get(args[1]))
        if name == b"del" and n >= 2:
            return b":%d\r\n" % sum(store.pop(k, None) is not None for k in args[1:])
        if name == b"exists" and n >= 2:
            return b":%d\r\n" % sum(k in store for k in args[1:])
        if name == b"incr" and n == 2:
            return incr(args[1])
        if name == b"mget" and n >= 2:
            return b"*%d\r\n" % (n - 1) + b"".join(bulk(store.get(k)) for k in args[1:])
        if name == b"mset" and n >= 3 and n % 2:
            store.update(zip(args[1::2], args[2::2], strict=True))
            return b"+OK\r\n"
    if name == b"config" and n == 3 and args[1].lower() == b"get":  # redis-benchmark asks
        value = {b"save": b"", b"appendonly": b"no"}.get(args[2].lower())
        return b"*0\r\n" if value is None else b"*2\r\n" + bulk(args[2]) + bulk(value)
    if name == b"command":  # redis-cli asks at start
        return b"*0\r\n"
    if name in KNOWN:
        return b"-ERR wrong number of arguments for '%b' command\r\n" % name
    return b"-ERR unknown command '%b'\r\n" % args[0].replace(b"\r", b" ").replace(b"\n", b" ")


class KV(netring.Protocol):
    def connection_made(self, transport: netring.Transport) -> None:  # type: ignore[override]
        self.transport = transport
        self.args: list[bytes] = []
        self.want = 0  # bulk strings still expected for this request
        self.in_body = False  # the next packet is a value and its CRLF

    def packet_received(self, packet: bytes) -> None:
        if self.in_body:
            self.in_body = False
            self.transport.set_framing(LINE)
            self.args.append(packet[:-2])
            self.want -= 1
            if not self.want:
                self.transport.write(execute(self.args))
                self.args = []
        elif self.want:
            n = packet[1:]
            if packet[:1] != b"$" or not n.isdigit() or int(n) > MAX_BULK:
                return self.error(b"invalid bulk length")
            self.in_body = True
            self.transport.set_framing(netring.Exactly(int(n) + 2))
        elif packet[:1] == b"*":
            n = packet[1:]
            if not (n.isdigit() or n == b"-1") or int(n) > 1024 * 1024:
                return self.error(b"invalid multibulk length")
            self.want = max(int(n), 0)
        elif args := packet.split():  # an inline command: GET key
            self.transport.write(execute(args))

    def error(self, what: bytes) -> None:
        self.transport.write(b"-ERR Protocol error: %b\r\n" % what)
        self.transport.close()


if __name__ == "__main__":
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 6379
    server = netring.Server(KV, "127.0.0.1", port, framing=LINE)
    server.serve_forever(
        on_ready=lambda: print(
            f"kv server on {server.host}:{server.port} ({server.backend}); Ctrl-C stops it",
            flush=True,
        )
    )
