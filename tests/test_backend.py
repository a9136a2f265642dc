"""Backend choice: auto falls back to epoll for real when io_uring is refused,
an explicit io_uring never silently falls back, and the choice is visible."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import netring
import pytest
from netring.servers.echo import Echo

# A child process whose io_uring_setup(2) fails with EPERM, as under Docker's
# default seccomp profile, then does what the test asks.
CHILD_PRELUDE = textwrap.dedent("""
    import errno, json, socket, sys
    import pyseccomp as seccomp
    f = seccomp.SyscallFilter(seccomp.ALLOW)
    f.add_rule(seccomp.ERRNO(errno.EPERM), "io_uring_setup")
    f.load()
    import netring
    from netring.servers.echo import Echo
""")


def run_child(body: str) -> dict:
    pytest.importorskip("pyseccomp")
    code = CHILD_PRELUDE + textwrap.dedent(body)
    env = {k: v for k, v in os.environ.items() if k != "NETRING_BACKEND"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env=env)
    assert out.returncode == 0, out.stderr
    import json
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_auto_falls_back_to_epoll_when_io_uring_is_refused() -> None:
    result = run_child("""
        import logging
        records = []
        class Keep(logging.Handler):
            def emit(self, record):
                records.append((record.levelname, record.getMessage()))
        logging.getLogger("netring").addHandler(Keep())
        logging.getLogger("netring").setLevel(logging.INFO)
        info = netring.backend_info()
        with netring.Server(Echo, "127.0.0.1", 0, io_threads=1) as server:
            with socket.create_connection(server.address, timeout=5) as s:
                s.sendall(b"fallback")
                got = b""
                while len(got) < 8:
                    got += s.recv(100)
            stats = server.stats()
        print(json.dumps({"info": info, "backend": stats["backend"],
                          "reason": stats["backend_fallback_reason"], "echo": got.decode(),
                          "logs": records}))
    """)
    assert result["info"] == {"backend": "epoll", "reason": "io_uring_setup: EPERM"}
    assert result["backend"] == "epoll"
    assert result["reason"] == "io_uring_setup: EPERM"
    assert result["echo"] == "fallback"
    fallback_logs = [m for level, m in result["logs"] if "using epoll" in m]
    assert fallback_logs == ["netring: io_uring unavailable (io_uring_setup: EPERM); using epoll"]
    assert all(level == "INFO" for level, m in result["logs"] if "using epoll" in m)


def test_explicit_io_uring_where_refused_raises_backend_unavailable() -> None:
    result = run_child("""
        try:
            netring.Server(Echo, "127.0.0.1", 0, backend="io_uring").start()
            print(json.dumps({"raised": None}))
        except netring.BackendUnavailableError as e:
            print(json.dumps({"raised": type(e).__name__, "message": str(e)}))
    """)
    assert result["raised"] == "BackendUnavailableError"
    assert "EPERM" in result["message"]


def test_environment_variable_chooses_and_argument_wins(
        backend: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NETRING_BACKEND", backend)
    with netring.Server(Echo, "127.0.0.1", 0, io_threads=1) as server:
        assert server.backend == backend
    other = "epoll" if backend == "io_uring" else "io_uring"
    try:
        with netring.Server(Echo, "127.0.0.1", 0, io_threads=1, backend=other) as server:
            assert server.backend == other
    except netring.BackendUnavailableError:
        pytest.skip(f"{other} unavailable here")


def test_backend_info_reports_io_uring_here_or_says_why_not() -> None:
    info = netring.backend_info()
    if info["backend"] == "io_uring":
        assert info["reason"] is None
    else:
        assert info["reason"]
