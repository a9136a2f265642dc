"""Soak: mixed, hostile traffic against one netring server for a while,
watching its memory, descriptors and threads (issue #7).

Usage: soak.py [--duration SECONDS] [--backend auto|io_uring|epoll]
               [--warmup SECONDS] [--out PREFIX] [--no-pin]

Runs ``soak_server.py`` (a raw echo and a packet echo on one IO pool) in a
subprocess pinned to CPU 0, and from this process (pinned to CPU 1) drives,
all at once, until the duration is over:

- steady: 64 long-lived connections (half raw, half packets) doing checked
  request/response round trips;
- churn: connect, one checked echo, close (client FIN, half-close with the
  server closing first, or RST), as fast as it goes;
- resets mid-write: ask for a 16 MiB reply (or start sending 2 MiB) and reset
  the connection (SO_LINGER 0) part way;
- 16 MiB writes: one 16 MiB packet each way, checked;
- slow readers: a 16 MiB reply read at ~8 MiB/s;
- bad frames: a length header over the server's limit (must close);
- handler exceptions: a message that makes the handler raise (must close,
  and be logged exactly once).

Every second it samples the server's RSS, open descriptors, threads and CPU
time from /proc. It passes (exit 0) when: RSS after warm-up grows < 5 %
(median of the first window after warm-up against the median of the last
window; windows are 10 % of the run, at least 5 s), descriptors and threads
return to their baseline (before any connection) once the traffic stops,
every echo was exact, every exception was logged exactly once, and the
server drains and exits 0 on SIGTERM. The server runs with glibc's mmap
threshold fixed at 1 MiB (``MALLOC_MMAP_THRESHOLD_``; ``--malloc-default``
turns that off): with the default dynamic threshold freed 16 MiB buffers are
kept or returned at glibc's whim and RSS steps by 16 MiB either way for
minutes, which says nothing about leaks. Prints a summary and writes
``PREFIX.md`` and ``PREFIX.json`` (default ``benchmarks/results/soak``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import selectors
import signal
import socket
import statistics
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
HOST = "127.0.0.1"
SPEW_BYTES = 16 << 20
BIG_PACKET = 16 << 20
SPEW_PATTERN = bytes(range(256)) * (SPEW_BYTES // 256)
STEADY_CONNS = 64
RSS_GROWTH_LIMIT = 5.0  # percent


# --- the server's vital signs ------------------------------------------------


def proc_sample(pid: int) -> dict[str, float]:
    rss_kib = 0
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                rss_kib = int(line.split()[1])
                break
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return {
        "rss_mib": rss_kib / 1024,
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "threads": len(os.listdir(f"/proc/{pid}/task")),
        "cpu_s": cpu,
    }


# --- traffic -------------------------------------------------------------------


class Counters:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.ok: dict[str, int] = {}
        self.errors: dict[str, int] = {}
        self.integrity: list[str] = []
        self.raised = 0

    def add(self, name: str, n: int = 1) -> None:
        with self.lock:
            self.ok[name] = self.ok.get(name, 0) + n

    def error(self, name: str, exc: BaseException) -> None:
        key = f"{name}: {type(exc).__name__}"
        with self.lock:
            self.errors[key] = self.errors.get(key, 0) + 1

    def corrupt(self, what: str) -> None:
        with self.lock:
            if len(self.integrity) < 20:
                self.integrity.append(what)

    def snapshot(self) -> dict[str, int]:
        with self.lock:
            return dict(self.ok)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(min(n - len(buf), 1 << 20))
        if not chunk:
            raise EOFError(f"EOF with {n - len(buf)} bytes still expected")
        buf += chunk
    return bytes(buf)


def expect_close(sock: socket.socket, timeout: float = 5.0) -> bool:
    """Read until the server closes (EOF or reset): False if it does not."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 16):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


def dial(port: int, timeout: float = 10.0) -> socket.socket:
    for _ in range(200):
        try:
            return socket.create_connection((HOST, port), timeout=timeout)
        except OSError as e:  # ephemeral ports all in TIME_WAIT: wait a little
            if e.errno != 99:
                raise
            time.sleep(0.01)
    return socket.create_connection((HOST, port), timeout=timeout)


def reset(sock: socket.socket) -> None:
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def frame(payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + payload


class Traffic:
    def __init__(self, echo_port: int, packet_port: int, stop: threading.Event,
                 counters: Counters) -> None:
        self.echo_port, self.packet_port = echo_port, packet_port
        self.stop, self.c = stop, counters

    def loop(self, name: str, op: Callable[[random.Random], None], pause: float = 0.0) -> None:
        rng = random.Random(name)
        while not self.stop.is_set():
            try:
                op(rng)
                self.c.add(name)
            except (OSError, EOFError) as e:
                self.c.error(name, e)
            if pause:
                self.stop.wait(pause)

    # steady: long-lived connections, checked round trips, one selector
    def steady(self) -> None:
        sel = selectors.DefaultSelector()
        conns: list[dict[str, Any]] = []
        rng = random.Random(1)
        try:
            for i in range(STEADY_CONNS):
                packet = i % 2 == 1
                s = dial(self.packet_port if packet else self.echo_port)
                s.setblocking(False)
                conns.append({"sock": s, "packet": packet, "want": b"", "got": bytearray()})
                sel.register(s, selectors.EVENT_READ, conns[-1])

            def send(conn: dict[str, Any]) -> None:
                payload = rng.randbytes(rng.choice((16, 200, 1500, 9000)))
                wire = frame(payload) if conn["packet"] else payload
                conn["want"], conn["got"] = wire, bytearray()
                conn["sock"].setblocking(True)
                conn["sock"].sendall(wire)
                conn["sock"].setblocking(False)

            for conn in conns:
                send(conn)
            while not self.stop.is_set():
                for key, _ in sel.select(0.5):
                    conn = key.data
                    data = conn["sock"].recv(65536)
                    if not data:
                        raise EOFError("a steady connection was closed by the server")
                    conn["got"] += data
                    if len(conn["got"]) >= len(conn["want"]):
                        if bytes(conn["got"]) != conn["want"]:
                            self.c.corrupt("steady: echo differs")
                        self.c.add("steady round trips")
                        send(conn)
        except (OSError, EOFError) as e:
            self.c.error("steady", e)
            self.c.corrupt(f"steady: {e!r}")
        finally:
            for conn in conns:
                conn["sock"].close()
            sel.close()

    def churn(self, rng: random.Random) -> None:
        s = dial(self.echo_port)
        try:
            msg = rng.randbytes(64)
            s.sendall(msg)
            if recv_exactly(s, 64) != msg:
                self.c.corrupt("churn: echo differs")
            how = rng.random()
            if how < 0.3:  # half-close: the server closes first
                s.shutdown(socket.SHUT_WR)
                if not expect_close(s):
                    self.c.corrupt("churn: no close after our FIN")
            elif how < 0.4:
                reset(s)
        finally:
            s.close()

    def reset_mid_write(self, rng: random.Random) -> None:
        s = dial(self.echo_port)
        if rng.random() < 0.5:  # reset while the server writes 16 MiB
            s.sendall(b"SPEW")
            recv_exactly(s, rng.randrange(1, 4 << 20))
        else:  # reset in the middle of our own write
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.send(rng.randbytes(2 << 20))
        reset(s)

    def big(self, rng: random.Random) -> None:
        with dial(self.packet_port, timeout=30) as s:
            payload = rng.randbytes(BIG_PACKET)
            sender = threading.Thread(target=s.sendall, args=(frame(payload),))
            sender.start()
            header = recv_exactly(s, 4)
            back = recv_exactly(s, struct.unpack(">I", header)[0])
            sender.join()
            if back != payload:
                self.c.corrupt("big: 16 MiB packet differs")

    def slow_reader(self, rng: random.Random) -> None:
        with dial(self.echo_port, timeout=30) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
            s.sendall(b"SPEW")
            got = bytearray()
            while len(got) < SPEW_BYTES:  # ~8 MiB/s
                chunk = s.recv(min(65536, SPEW_BYTES - len(got)))
                if not chunk:
                    raise EOFError("slow reader: closed early")
                got += chunk
                time.sleep(0.008)
            if got != SPEW_PATTERN:
                self.c.corrupt("slow reader: 16 MiB reply differs")

    def bad_frame(self, rng: random.Random) -> None:
        with dial(self.packet_port) as s:
            s.sendall(frame(b"fine"))
            if recv_exactly(s, 8) != frame(b"fine"):
                self.c.corrupt("bad frame: echo before differs")
            s.sendall(struct.pack(">I", rng.randrange(1 << 25, 1 << 32)) + b"junk")
            if not expect_close(s):
                self.c.corrupt("bad frame: the connection stayed open")

    def exception(self, rng: random.Random) -> None:
        packet = rng.random() < 0.5
        with dial(self.packet_port if packet else self.echo_port) as s:
            hello = frame(b"hello") if packet else b"hello"
            s.sendall(hello)
            if recv_exactly(s, len(hello)) != hello:
                self.c.corrupt("exception: echo before differs")
            with self.c.lock:
                self.c.raised += 1
            s.sendall(frame(b"RAISE") if packet else b"RAISE")
            if not expect_close(s):
                self.c.corrupt("exception: the connection stayed open")


# --- the run -------------------------------------------------------------------


def window_median(samples: list[dict[str, float]], start: float, end: float,
                  key: str) -> float:
    values = [s[key] for s in samples if start <= s["t"] < end]
    return statistics.median(values) if values else float("nan")


def slope_per_minute(samples: list[dict[str, float]], key: str) -> float:
    if len(samples) < 3:
        return 0.0
    xs = [s["t"] for s in samples]
    ys = [s[key] for s in samples]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 60 * sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds of traffic")
    parser.add_argument("--warmup", type=float, default=None,
                        help="seconds before RSS counts (default: 25%% of the run, ≥ 10 s)")
    parser.add_argument("--backend", default=None)
    parser.add_argument("--io-threads", type=int, default=None)
    parser.add_argument("--out", default=str(HERE / "results" / "soak"),
                        help="write PREFIX.md and PREFIX.json")
    parser.add_argument("--no-pin", action="store_true", help="do not pin to CPUs 0 and 1")
    parser.add_argument("--malloc-default", action="store_true",
                        help="leave glibc's dynamic mmap threshold on in the server (RSS then "
                        "steps by 16 MiB as freed big buffers are kept or returned)")
    args = parser.parse_args()
    duration = args.duration
    warmup = args.warmup if args.warmup is not None else max(10.0, 0.25 * duration)
    window = max(5.0, 0.1 * duration)
    if warmup + 2 * window > duration:
        parser.error(f"--duration {duration} is too short for a {warmup} s warm-up "
                     f"and two {window} s windows")

    pin = not args.no_pin and (os.cpu_count() or 1) >= 2
    logs = HERE / "out" / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log_path = logs / "soak_server.log"
    cmd = [sys.executable, str(HERE / "soak_server.py")]
    if args.backend:
        cmd += ["--backend", args.backend]
    if args.io_threads:
        cmd += ["--io-threads", str(args.io_threads)]
    if pin:
        cmd = ["taskset", "-c", "0", *cmd]
        os.sched_setaffinity(0, {1})
    env = dict(os.environ)
    if not args.malloc_default:
        # A fixed 1 MiB mmap threshold: freed 16 MiB buffers go back to the
        # OS at once, so RSS follows live memory (leaks) rather than what
        # glibc chose to keep after the largest burst so far.
        env["MALLOC_MMAP_THRESHOLD_"] = str(1 << 20)
    with open(log_path, "w") as log:
        server = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env=env)
    assert server.stdout is not None
    ready = server.stdout.readline().split()
    if not ready or ready[0] != "READY":
        print(f"soak: the server did not start; see {log_path}", file=sys.stderr)
        server.kill()
        return 2
    echo_port, packet_port, backend = int(ready[1]), int(ready[2]), ready[3].split("=")[1]
    pid = server.pid
    time.sleep(0.5)
    base = proc_sample(pid)
    print(f"soak: {duration:.0f} s on netring[{backend}] (pid {pid}); baseline "
          f"RSS {base['rss_mib']:.1f} MiB, {base['fds']:.0f} fds, {base['threads']:.0f} threads",
          flush=True)

    stop = threading.Event()
    counters = Counters()
    traffic = Traffic(echo_port, packet_port, stop, counters)
    workers = [
        threading.Thread(target=traffic.steady, name="steady"),
        threading.Thread(target=traffic.loop, args=("churn", traffic.churn)),
        threading.Thread(target=traffic.loop, args=("churn", traffic.churn), name="churn2"),
        threading.Thread(target=traffic.loop, args=("reset mid-write", traffic.reset_mid_write,
                                                    0.05)),
        threading.Thread(target=traffic.loop, args=("16 MiB packets", traffic.big, 0.2)),
        threading.Thread(target=traffic.loop, args=("slow reader", traffic.slow_reader)),
        threading.Thread(target=traffic.loop, args=("bad frame", traffic.bad_frame, 0.02)),
        threading.Thread(target=traffic.loop, args=("handler exception", traffic.exception,
                                                    0.02)),
    ]
    samples: list[dict[str, float]] = []
    t0 = time.monotonic()
    for w in workers:
        w.start()
    next_tick = t0
    while True:
        now = time.monotonic()
        if now - t0 >= duration:
            break
        next_tick += 1.0
        time.sleep(max(0.0, next_tick - time.monotonic()))
        if server.poll() is not None:
            print("soak: the server died", file=sys.stderr)
            break
        sample = proc_sample(pid)
        sample["t"] = round(time.monotonic() - t0, 2)
        samples.append(sample)
        if len(samples) % 10 == 0:
            print(f"  {sample['t']:6.0f} s  RSS {sample['rss_mib']:7.1f} MiB  "
                  f"fds {sample['fds']:5.0f}  threads {sample['threads']:3.0f}  "
                  f"ops {sum(counters.snapshot().values())}", flush=True)
    stop.set()
    for w in workers:
        w.join(60)
    traffic_seconds = time.monotonic() - t0

    # Back to baseline once every client connection is gone.
    settle_deadline = time.monotonic() + 15
    end = proc_sample(pid) if server.poll() is None else base
    while server.poll() is None and time.monotonic() < settle_deadline:
        end = proc_sample(pid)
        if end["fds"] == base["fds"] and end["threads"] == base["threads"]:
            break
        time.sleep(0.1)
    # Still serving at the end.
    alive = False
    with contextlib.suppress(OSError, EOFError), dial(echo_port, timeout=5) as s:
        s.sendall(b"still there")
        alive = recv_exactly(s, 11) == b"still there"
    end_after = proc_sample(pid) if server.poll() is None else end
    t_stop = time.monotonic()
    if server.poll() is None:
        server.send_signal(signal.SIGTERM)
    try:
        code = server.wait(15)
    except subprocess.TimeoutExpired:
        server.kill()
        code = server.wait()
    stop_seconds = time.monotonic() - t_stop
    server.stdout.close()
    log_text = log_path.read_text()
    logged = log_text.count("netring: exception in")

    rss_start = window_median(samples, warmup, warmup + window, "rss_mib")
    rss_end = window_median(samples, duration - window, duration + 1, "rss_mib")
    growth = 100.0 * (rss_end - rss_start) / rss_start
    post = [s for s in samples if s["t"] >= warmup]
    cpu_used = (samples[-1]["cpu_s"] - base["cpu_s"]) if samples else 0.0
    checks = {
        f"RSS after warm-up grows < {RSS_GROWTH_LIMIT:g} %": growth < RSS_GROWTH_LIMIT,
        "descriptors back to baseline": end["fds"] == base["fds"],
        "threads back to baseline": end["threads"] == base["threads"],
        "every echo exact": not counters.integrity,
        "every handler exception logged exactly once": logged == counters.raised,
        "still serving at the end": alive,
        "drains and exits 0 on SIGTERM": code == 0,
        "every kind of traffic ran": all(counters.ok.get(k, 0) > 0 for k in (
            "steady round trips", "churn", "reset mid-write", "16 MiB packets",
            "slow reader", "bad frame", "handler exception")),
    }
    passed = all(checks.values())
    result = {
        "passed": passed,
        "checks": checks,
        "backend": backend,
        "duration_s": round(traffic_seconds, 1),
        "warmup_s": warmup,
        "window_s": window,
        "rss_mib": {"baseline_idle": round(base["rss_mib"], 1),
                    "after_warmup": round(rss_start, 1), "end": round(rss_end, 1),
                    "growth_pct": round(growth, 2),
                    "max": round(max(s["rss_mib"] for s in samples), 1),
                    "slope_after_warmup_mib_per_min": round(slope_per_minute(post, "rss_mib"), 2)},
        "fds": {"baseline": base["fds"], "max": max(s["fds"] for s in samples),
                "end": end["fds"], "after_final_echo": end_after["fds"]},
        "threads": {"baseline": base["threads"], "max": max(s["threads"] for s in samples),
                    "end": end["threads"]},
        "server_cpu_s": round(cpu_used, 1),
        "ops": counters.ok,
        "client_errors": counters.errors,
        "integrity_errors": counters.integrity,
        "exceptions_raised": counters.raised,
        "exceptions_logged": logged,
        "server_exit": code,
        "server_stop_s": round(stop_seconds, 2),
        "pinned": pin,
        "malloc_mmap_threshold": None if args.malloc_default else 1 << 20,
        "machine": f"Linux {platform.release()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "load_before": os.getloadavg(),
        "samples": samples,
    }
    md = render(result)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    out.with_suffix(".md").write_text(md)
    print(f"soak: {'PASSED' if passed else 'FAILED'}; wrote {out}.md and {out}.json "
          f"(server log: {log_path})")
    return 0 if passed else 1


def render(r: dict[str, Any]) -> str:
    rss, ops = r["rss_mib"], r["ops"]
    lines = [
        f"Soak: {r['duration_s']:.0f} s of mixed traffic against netring[{r['backend']}] "
        f"({r['machine']}; server on CPU 0, clients on CPU 1)"
        if r["pinned"] else
        f"Soak: {r['duration_s']:.0f} s of mixed traffic against netring[{r['backend']}] "
        f"({r['machine']})",
        "",
        "| check | result |",
        "|---|---|",
        *(f"| {name} | {'pass' if ok else '**FAIL**'} |" for name, ok in r["checks"].items()),
        "",
        f"RSS: {rss['baseline_idle']} MiB idle; {rss['after_warmup']} MiB after the "
        f"{r['warmup_s']:.0f} s warm-up, {rss['end']} MiB at the end (medians of "
        f"{r['window_s']:.0f} s windows): **{rss['growth_pct']:+.2f} %** "
        f"(trend {rss['slope_after_warmup_mib_per_min']:+.2f} MiB/min, max {rss['max']} MiB). "
        f"Descriptors {r['fds']['baseline']} → max {r['fds']['max']} → {r['fds']['end']}; "
        f"threads {r['threads']['baseline']} → max {r['threads']['max']} → "
        f"{r['threads']['end']}. Server CPU {r['server_cpu_s']} s; "
        f"drained and exited {r['server_exit']} in {r['server_stop_s']} s after SIGTERM.",
        "",
        "| traffic | completed |",
        "|---|---:|",
        *(f"| {k} | {v:,} |" for k, v in sorted(ops.items())),
        "",
        f"Handler exceptions raised {r['exceptions_raised']:,}, logged "
        f"{r['exceptions_logged']:,}. Client-side errors (expected kinds: resets, "
        f"closes): {r['client_errors'] or 'none'}. Integrity errors: "
        f"{r['integrity_errors'] or 'none'}.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
