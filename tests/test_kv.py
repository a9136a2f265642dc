"""The kv example server (a RESP2 subset) against real Redis clients:
redis-py, redis-cli, and raw sockets for inline commands, splits and bad
input (every test on each backend)."""

from __future__ import annotations

import functools
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import netring
import pytest
from conftest import cli_server, connect, recv_exactly, recv_until_eof, serving, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from netring.servers import SERVERS
from netring.servers.kv import KV, MAX_BULK_BYTES, Store, split_inline

ALL_BYTES = bytes(range(256))
REDIS_CLI = shutil.which("redis-cli")
needs_redis_cli = pytest.mark.skipif(
    REDIS_CLI is None, reason="redis-cli not on PATH (Debian package redis-tools)")


def resp(*args: bytes | str) -> bytes:
    """One request as a RESP array of bulk strings."""
    parts = [b"*%d\r\n" % len(args)]
    for a in args:
        b = a.encode() if isinstance(a, str) else a
        parts.append(b"$%d\r\n%b\r\n" % (len(b), b))
    return b"".join(parts)


@pytest.fixture
def kv(backend: str) -> Iterator[netring.Server]:
    """The kv server with a store of its own."""
    with serving(functools.partial(KV, Store()), backend, **SERVERS["kv"].options) as server:
        yield server


@pytest.fixture(params=[2, 3], ids=["resp2", "resp3"])
def client(kv: netring.Server, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A redis-py client speaking RESP2, or RESP3 after HELLO 3."""
    redis = pytest.importorskip("redis")
    r = redis.Redis(host="127.0.0.1", port=kv.port, socket_timeout=10,
                    protocol=request.param)
    try:
        yield r
    finally:
        r.close()


def read_reply(f: Any) -> Any:
    """One reply from a binary file over the socket: str for +, Exception
    for -, int, bytes or None, list for * (and RESP3 dict for %)."""
    line = f.readline()
    assert line.endswith(b"\r\n"), line
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        return Exception(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"_":
        return None
    if kind == b"$":
        if rest == b"-1":
            return None
        body = f.read(int(rest) + 2)
        assert body.endswith(b"\r\n")
        return body[:-2]
    if kind == b"*":
        return [read_reply(f) for _ in range(int(rest))]
    if kind == b"%":
        return {read_reply(f): read_reply(f) for _ in range(int(rest))}
    raise AssertionError(f"not a reply: {line!r}")


def ask(server: netring.Server, stream: bytes, expect_bytes: int) -> bytes:
    with connect(server) as s:
        s.sendall(stream)
        return recv_exactly(s, expect_bytes)


# -- redis-py ----------------------------------------------------------------------


def test_every_command_through_redis_py(client: Any) -> None:
    assert client.ping() is True
    assert client.echo(b"hello") == b"hello"
    assert client.set("k", "v") is True
    assert client.get("k") == b"v"
    assert client.get("missing") is None
    assert client.exists("k", "k", "missing") == 2
    assert client.delete("k", "missing") == 1
    assert client.exists("k") == 0
    assert client.incr("n") == 1
    assert client.incr("n") == 2
    assert client.incrby("n", 40) == 42
    assert client.decr("n") == 41
    assert client.decrby("n", 50) == -9
    assert client.get("n") == b"-9"
    assert client.mset({"a": "1", "b": b"\x00\xff"}) is True
    assert client.mget("a", "b") == [b"1", b"\x00\xff"]
    assert client.dbsize() == 3
    assert client.config_get("save") == {"save": ""}
    assert client.config_get("appendonly") == {"appendonly": "no"}
    assert client.execute_command("SELECT", 0) is True
    assert client.flushdb() is True
    assert client.dbsize() == 0


def test_set_options_nx_xx_get_and_expiry(client: Any) -> None:
    assert client.set("k", "1", nx=True) is True
    assert client.set("k", "2", nx=True) is None
    assert client.set("other", "x", xx=True) is None
    assert client.set("k", "3", xx=True) is True
    assert client.set("k", "4", get=True) == b"3"
    assert client.get("k") == b"4"
    client.set("gone", "soon", px=1)
    assert wait_until(lambda: client.get("gone") is None, timeout=5)
    assert client.exists("gone") == 0
    client.set("t", "a", ex=100)
    client.set("t", "b", keepttl=True)
    assert client.get("t") == b"b"
    redis = pytest.importorskip("redis")
    with pytest.raises(redis.ResponseError, match="syntax error"):
        client.execute_command("SET", "k", "v", "NX", "XX")
    with pytest.raises(redis.ResponseError, match="invalid expire time in 'set' command"):
        client.execute_command("SET", "k", "v", "EX", "0")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        client.execute_command("SET", "k", "v", "PX", "soon")


def test_pipeline_of_1000_commands_replies_in_order(client: Any) -> None:
    pipe = client.pipeline(transaction=False)
    for i in range(1000):
        if i % 4 == 0:
            pipe.set(f"key:{i}", f"value:{i}")
        elif i % 4 == 1:
            pipe.get(f"key:{i - 1}")
        elif i % 4 == 2:
            pipe.incr("counter")
        else:
            pipe.echo(f"echo:{i}")
    replies = pipe.execute()
    assert len(replies) == 1000
    for i, reply in enumerate(replies):
        expect = [True, f"value:{i - 1}".encode(), i // 4 + 1, f"echo:{i}".encode()][i % 4]
        assert reply == expect, i


def test_binary_safe_keys_and_values(client: Any) -> None:
    client.set(ALL_BYTES, ALL_BYTES)
    assert client.get(ALL_BYTES) == ALL_BYTES
    big = ALL_BYTES * 4096  # 1 MiB, CRLF included many times
    client.set("big", big)
    assert client.get("big") == big
    assert client.mget("big", ALL_BYTES, "missing") == [big, ALL_BYTES, None]
    assert client.echo(b"") == b""
    assert client.get(b"\r\n") is None


def test_mget_with_missing_keys(client: Any) -> None:
    client.mset({"a": "1", "c": "3"})
    assert client.mget("missing") == [None]
    assert client.mget("a", "b", "c", "d") == [b"1", None, b"3", None]


def test_incr_on_non_integers_and_overflow(client: Any) -> None:
    redis = pytest.importorskip("redis")
    for bad in ["abc", "1.5", "", " 1", "+1", "01", "-0", "9223372036854775808"]:
        client.set("s", bad)
        with pytest.raises(redis.ResponseError,
                           match=r"^value is not an integer or out of range$"):
            client.incr("s")
        assert client.get("s") == bad.encode()
    client.set("m", "9223372036854775807")
    with pytest.raises(redis.ResponseError, match="increment or decrement would overflow"):
        client.incr("m")
    with pytest.raises(redis.ResponseError, match="not an integer"):
        client.incrby("m", "x")
    client.set("z", "-9223372036854775808")
    assert client.incr("z") == -(1 << 63) + 1


@pytest.mark.parametrize(("command", "name"), [
    (["GET"], "get"), (["GET", "a", "b"], "get"), (["set", "k"], "set"),
    (["ECHO"], "echo"), (["INCR"], "incr"), (["MGET"], "mget"), (["MSET", "k"], "mset"),
    (["MSET", "a", "1", "b"], "mset"), (["DEL"], "del"), (["EXISTS"], "exists"),
    (["PING", "a", "b"], "ping"),
])
def test_wrong_number_of_arguments(client: Any, command: list[str], name: str) -> None:
    redis = pytest.importorskip("redis")
    with pytest.raises(redis.ResponseError) as e:
        client.execute_command(*command)
    assert str(e.value) == f"wrong number of arguments for '{name}' command"
    assert client.ping() is True


def test_unknown_command(client: Any) -> None:
    redis = pytest.importorskip("redis")
    with pytest.raises(redis.ResponseError) as e:
        client.execute_command("NOPE", "a", "b\r\nc")
    assert str(e.value) == "unknown command 'NOPE', with args beginning with: 'a' 'b  c' "
    with pytest.raises(redis.ResponseError, match=r"^unknown command 'x', with args"):
        client.execute_command("x")
    assert client.ping() is True


def test_many_clients_incr_one_counter_exactly(backend: str) -> None:
    redis = pytest.importorskip("redis")
    n_clients, n_incr = 16, 250
    # Two IO threads share one store; no framing= either: KV sets its own rule.
    with serving(functools.partial(KV, Store()), backend, io_threads=2) as server:
        def work() -> None:
            r = redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10)
            with r:
                for _ in range(n_incr):
                    r.incr("c")

        threads = [threading.Thread(target=work) for _ in range(n_clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        with redis.Redis(host="127.0.0.1", port=server.port, socket_timeout=10) as r:
            assert r.get("c") == b"%d" % (n_clients * n_incr)


# -- raw sockets: inline commands, splits, bad input -----------------------------------


def test_hello_switches_between_resp2_and_resp3(kv: netring.Server) -> None:
    with connect(kv) as s, s.makefile("rb") as f:
        def run(*args: str) -> Any:
            s.sendall(resp(*args))
            return read_reply(f)

        hello = run("HELLO")
        assert isinstance(hello, list) and hello[:2] == [b"server", b"redis"]
        assert dict(zip(hello[::2], hello[1::2], strict=True))[b"proto"] == 2
        assert run("GET", "missing") is None
        s.sendall(resp("HELLO", "3"))
        assert f.peek(1)[:1] == b"%"
        hello3 = read_reply(f)
        assert hello3[b"proto"] == 3 and hello3[b"id"] == dict(
            zip(hello[::2], hello[1::2], strict=True))[b"id"]
        s.sendall(resp("GET", "missing") + resp("MGET", "missing", "x") + resp("CLIENT", "GETNAME"))
        nulls = b"_\r\n" + b"*2\r\n_\r\n_\r\n" + b"_\r\n"
        assert f.read(len(nulls)) == nulls
        assert run("CONFIG", "GET", "appendonly") == {b"appendonly": b"no"}
        assert run("COMMAND", "DOCS") == {}
        assert run("HELLO", "2", "AUTH", "default", "pw", "SETNAME", "me")[4:6] == [b"proto", 2]
        s.sendall(resp("GET", "missing"))
        assert f.read(5) == b"$-1\r\n"
        assert str(run("HELLO", "4")) == "NOPROTO unsupported protocol version"
        assert str(run("HELLO", "x")) == (
            "ERR Protocol version is not an integer or out of range")
        assert str(run("HELLO", "3", "AUTH")) == "ERR Syntax error in HELLO option 'AUTH'"
        assert run("CONFIG", "GET", "save", "appendonly") == [b"save", b"", b"appendonly", b"no"]
        assert run("CONFIG", "GET", "*max*") == [b"proto-max-bulk-len", b"%d" % MAX_BULK_BYTES]
        assert str(run("CONFIG", "SET", "save", "")) == (
            "ERR unknown subcommand 'SET'. Try CONFIG HELP.")
        assert run("COMMAND", "COUNT") > 10
        assert run("COMMAND") == []
        assert run("COMMAND", "DOCS") == []
        assert run("CLIENT", "SETINFO", "LIB-NAME", "x") == "OK"
        assert run("SELECT", "0") == "OK"
        assert str(run("SELECT", "1")) == "ERR DB index is out of range"



def test_inline_commands(kv: netring.Server) -> None:
    stream = (b"PING\r\n"
              b"\r\n"                                   # an empty line is skipped
              b"  set   k   v  \r\n"
              b"GET k\r\n"
              b'SET "a key" "x\\x41\\r\\n\\"y"\r\n'
              b"GET 'a key'\r\n"
              b"MGET k nope\r\n"
              b"INCR k\r\n"
              b"ECHO\r\n")
    expect = (b"+PONG\r\n+OK\r\n$1\r\nv\r\n+OK\r\n$6\r\nxA\r\n\"y\r\n"
              b"*2\r\n$1\r\nv\r\n$-1\r\n"
              b"-ERR value is not an integer or out of range\r\n"
              b"-ERR wrong number of arguments for 'echo' command\r\n")
    assert ask(kv, stream, len(expect)) == expect
    # The splitter is Redis's sdssplitargs:
    assert split_inline(b"a  b\tc") == [b"a", b"b", b"c"]
    assert split_inline(b'"a b" \'c d\' "\\x00\\xff\\n"') == [b"a b", b"c d", b"\x00\xff\n"]
    assert split_inline(b"'it\\'s'") == [b"it's"]
    assert split_inline(b'x"y z"') == [b"xy z"]
    assert split_inline(b'""') == [b""]
    for bad in [b'"open', b"'open", b'"a"b', b"'a'b"]:
        assert split_inline(bad) is None, bad


PIPELINE = b"".join([
    resp("SET", b"k\r\n", b"v\r\nw\r\n"), b"PING\r\n", resp("GET", b"k\r\n"),
    resp("ECHO", b""), resp("ECHO", ALL_BYTES), b"*0\r\n", b"*-1\r\n", resp("MGET", "x", "k\r\n"),
    b"EXISTS x\r\n",
])
PIPELINE_REPLIES = b"".join([
    b"+OK\r\n", b"+PONG\r\n", b"$6\r\nv\r\nw\r\n\r\n", b"$0\r\n\r\n",
    b"$256\r\n" + ALL_BYTES + b"\r\n", b"*2\r\n$-1\r\n$6\r\nv\r\nw\r\n\r\n", b":0\r\n",
])


def test_pipelined_stream_cut_at_every_point(kv: netring.Server) -> None:
    with connect(kv) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for cut in range(1, len(PIPELINE)):
            s.sendall(PIPELINE[:cut])
            s.sendall(PIPELINE[cut:])
            assert recv_exactly(s, len(PIPELINE_REPLIES)) == PIPELINE_REPLIES, cut


def test_pipelined_stream_one_byte_at_a_time(kv: netring.Server) -> None:
    with connect(kv) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        for i in range(len(PIPELINE)):
            s.send(PIPELINE[i:i + 1])
        assert recv_exactly(s, len(PIPELINE_REPLIES)) == PIPELINE_REPLIES


def test_ten_thousand_pipelined_sets_in_one_send(kv: netring.Server) -> None:
    stream = b"".join(resp("SET", b"k%d" % i, b"v" * (i % 100)) for i in range(10_000))
    stream += resp("DBSIZE") + resp("GET", "k9999")
    expect = b"+OK\r\n" * 10_000 + b":10000\r\n" + b"$99\r\n" + b"v" * 99 + b"\r\n"
    with connect(kv) as s:
        t = threading.Thread(target=s.sendall, args=(stream,))
        t.start()
        assert recv_exactly(s, len(expect)) == expect
        t.join()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(values=st.lists(st.binary(max_size=40_000), min_size=1, max_size=12),
       cuts=st.lists(st.integers(min_value=1, max_value=20_000), min_size=1, max_size=8))
def test_any_values_in_any_split_echo_back(kv: netring.Server, values: list[bytes],
                                           cuts: list[int]) -> None:
    stream = b"".join(resp("ECHO", v) for v in values)
    expect = b"".join(b"$%d\r\n%b\r\n" % (len(v), v) for v in values)
    with connect(kv) as s:
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def send() -> None:
            pos, i = 0, 0
            while pos < len(stream):
                s.sendall(stream[pos:pos + cuts[i % len(cuts)]])
                pos, i = pos + cuts[i % len(cuts)], i + 1

        t = threading.Thread(target=send)
        t.start()
        assert recv_exactly(s, len(expect)) == expect
        t.join()


@pytest.mark.parametrize(("junk", "error"), [
    (b"*x\r\n", b"invalid multibulk length"),
    (b"*-2\r\n", b"invalid multibulk length"),
    (b"*1048577\r\n", b"invalid multibulk length"),
    (b"*1\r\n+PING\r\n", b"expected '$', got '+'"),
    (b"*2\r\n$3\r\nGET\r\n$x\r\n", b"invalid bulk length"),
    (b"*1\r\n$-1\r\n", b"invalid bulk length"),
    (b"*1\r\n$-5\r\n", b"invalid bulk length"),
    (b"*1\r\n$%d\r\n" % (MAX_BULK_BYTES + 1), b"invalid bulk length"),
    (b"*1\r\n$4\r\nPINGxx\r\n", b"expected CRLF after bulk string"),
    (b'SET "k v\r\n', b"unbalanced quotes in request"),
])
def test_bad_input_gets_a_protocol_error_and_closes_only_that_connection(
        kv: netring.Server, client: Any, junk: bytes, error: bytes) -> None:
    assert client.set("before", "1") is True
    with connect(kv) as bad:
        # Replies due before the bad header still arrive, then the error, then EOF.
        bad.sendall(b"PING\r\n" + resp("GET", "before") + junk + b"PING\r\n")
        got = recv_until_eof(bad)
    assert got == b"+PONG\r\n$1\r\n1\r\n-ERR Protocol error: " + error + b"\r\n"
    assert client.get("before") == b"1"
    assert client.ping() is True


def test_huge_bulk_length_is_refused_before_any_body(kv: netring.Server) -> None:
    with connect(kv) as s:
        s.sendall(b"*2\r\n$3\r\nSET\r\n$%d\r\n" % (MAX_BULK_BYTES + 1))
        assert recv_until_eof(s) == b"-ERR Protocol error: invalid bulk length\r\n"
    with connect(kv) as s:  # the limit itself is allowed: the server waits for the body
        s.sendall(b"*2\r\n$4\r\nECHO\r\n$%d\r\n" % MAX_BULK_BYTES + b"x" * 1000)
        s.settimeout(0.2)
        with pytest.raises(TimeoutError):
            s.recv(1)
    assert wait_until(lambda: kv.stats()["connections_open"] == 0)


def test_quit_replies_ok_and_closes(kv: netring.Server) -> None:
    with connect(kv) as s:
        s.sendall(resp("QUIT") + b"PING\r\n")
        assert recv_until_eof(s) == b"+OK\r\n"


def test_inline_line_over_64_kib_gets_a_protocol_error(kv: netring.Server,
                                                       client: Any) -> None:
    with connect(kv) as s:
        s.sendall(b"SET k " + b"v" * 70_000 + b"\r\n")
        assert recv_until_eof(s) == b"-ERR Protocol error: too big inline request\r\n"
    assert client.ping() is True


# -- redis-cli -------------------------------------------------------------------------


def redis_cli(server: netring.Server, *args: str, stdin: bytes = b"") -> bytes:
    assert REDIS_CLI is not None
    out = subprocess.run([REDIS_CLI, "-h", "127.0.0.1", "-p", str(server.port), *args],
                         input=stdin, capture_output=True, timeout=30, check=True)
    return out.stdout


@needs_redis_cli
def test_redis_cli_runs_every_command(kv: netring.Server) -> None:
    script = b"\n".join([
        b"PING", b"PING hello", b'ECHO "a b"', b"SET k v", b"GET k", b"GET missing",
        b"EXISTS k missing k", b"DEL k missing", b"INCR n", b"INCRBY n 9", b"SET s abc",
        b"INCR s", b"MSET a 1 b 2", b"MGET a missing b", b"GET", b"NOPE x", b"DBSIZE",
        b"CONFIG GET appendonly",
    ]) + b"\n"
    assert redis_cli(kv, "--no-raw", stdin=script).decode().splitlines() == [
        "PONG", '"hello"', '"a b"', "OK", '"v"', "(nil)", "(integer) 2", "(integer) 1",
        "(integer) 1", "(integer) 10", "OK",
        "(error) ERR value is not an integer or out of range", "OK",
        '1) "1"', "2) (nil)", '3) "2"',
        "(error) ERR wrong number of arguments for 'get' command",
        "(error) ERR unknown command 'NOPE', with args beginning with: 'x' ",
        "(integer) 4", '1) "appendonly"', '2) "no"',
    ]


@needs_redis_cli
def test_redis_cli_binary_values(kv: netring.Server) -> None:
    big = ALL_BYTES * 4096
    assert redis_cli(kv, "-x", "SET", "bin", stdin=ALL_BYTES) == b"OK\n"
    assert redis_cli(kv, "--raw", "GET", "bin") == ALL_BYTES + b"\n"
    assert redis_cli(kv, "-x", "SET", "big", stdin=big) == b"OK\n"
    assert redis_cli(kv, "--raw", "GET", "big") == big + b"\n"
    assert redis_cli(kv, "--raw", "STRLEN", "big").startswith(b"ERR unknown command")


@needs_redis_cli
def test_redis_cli_resp3(kv: netring.Server) -> None:
    script = b"SET k v\nMGET k missing\nGET missing\nCONFIG GET save\n"
    assert redis_cli(kv, "-3", "--no-raw", stdin=script).decode().splitlines() == [
        "OK", '1) "v"', "2) (nil)", "(nil)", '1# "save" => ""',
    ]


@needs_redis_cli
def test_redis_cli_pipe_mode(kv: netring.Server) -> None:
    stream = b"".join(resp("SET", b"p%d" % i, b"%d" % i) for i in range(5000))
    stream += b"".join(resp("INCR", b"p%d" % i) for i in range(5000))
    out = redis_cli(kv, "--pipe", stdin=stream).decode()
    assert "errors: 0, replies: 10000" in out, out
    assert redis_cli(kv, "--raw", "GET", "p4999") == b"5000\n"


# -- the command line ------------------------------------------------------------------


def handles(pid: int, signum: int) -> bool:
    """Whether process ``pid`` has a handler installed for ``signum``."""
    with open(f"/proc/{pid}/status") as f:
        caught = next(int(line.split()[1], 16) for line in f if line.startswith("SigCgt:"))
    return bool(caught & (1 << (signum - 1)))


def test_cli_serves_kv(backend: str) -> None:
    with cli_server("kv", backend=backend, args=["--io-threads", "1"]) as cli:
        assert cli.ready == [
            f"netring: serving kv on 127.0.0.1:{cli.port} (backend={backend}, io_threads=1)"]
        with socket.create_connection(("127.0.0.1", cli.port), timeout=5) as s:
            s.sendall(b"SET k v\r\n" + resp("GET", "k"))
            assert recv_exactly(s, 12) == b"+OK\r\n$1\r\nv\r\n"
        # The CLI installs its handlers before its ready line: SIGTERM drains.
        assert cli.stop(signal.SIGTERM) == 0


def test_example_file_serves_kv(backend: str) -> None:
    example = os.path.join(os.path.dirname(__file__), "..", "examples", "kv_server.py")
    proc = subprocess.Popen([sys.executable, example, "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "NETRING_BACKEND": backend})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = int(line.split("127.0.0.1:")[1].split()[0])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(resp("SET", "k", ALL_BYTES) + b"GET k\r\nINCR k\r\nMGET k x\r\n"
                      + resp("MSET", "a", "-9", "b", "2") + b"INCR a\r\nEXISTS a b c\r\n"
                      + b"DEL a b c\r\nECHO\r\nNOPE\r\nPING\r\n*x\r\n")
            expect = (b"+OK\r\n$256\r\n" + ALL_BYTES + b"\r\n"
                      b"-ERR value is not an integer or out of range\r\n"
                      b"*2\r\n$256\r\n" + ALL_BYTES + b"\r\n$-1\r\n"
                      b"+OK\r\n:-8\r\n:2\r\n:2\r\n"
                      b"-ERR wrong number of arguments for 'echo' command\r\n"
                      b"-ERR unknown command 'NOPE'\r\n+PONG\r\n"
                      b"-ERR Protocol error: invalid multibulk length\r\n")
            assert recv_until_eof(s) == expect
        # NOTE: a signal before its handlers are in place would kill it (-15);
        # serve_forever installs them before on_ready prints, checked here.
        assert wait_until(lambda: handles(proc.pid, signal.SIGTERM))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for f in (proc.stdout, proc.stderr):
            if f:
                f.close()
