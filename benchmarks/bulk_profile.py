"""Where a bulk echo server's CPU goes: kernel against user space, by `perf`.

Runs the same EchoProtocol on netring (each backend) and uvloop under the
native load generator (pinned as in bulk_bench.py), records the server with
`perf record` for a few seconds of each run, and prints, per server, the
share of its samples in the kernel and in user space and the heaviest
symbols. Issue #17 asks for CPU per MB at 0.8x uvloop's; when the kernel's
share of uvloop's own CPU is above 80 %, no user space can get there (the
kernel's work per byte - two copies and the TCP stack over loopback - is the
same for every server).

    .venv/bin/python benchmarks/bulk_profile.py [--size 65536] [--seconds 5] > profile.md

Needs `perf` (linux-perf) and permission to profile (root, or
kernel.perf_event_paranoid <= 1).
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from echo_bench import (
    LOADGEN,
    LOADGEN_CPU,
    PEERS,
    SERVER_CPU,
    Server,
    ensure_built,
)

SAMPLE_HZ = 2000
TOP = 8


def servers(backends: list[str]) -> list[Server]:
    py = sys.executable
    out = [
        Server(f"netring[{b}]", [py, str(PEERS / "netring_echo.py"), "--port", "0",
                                 "--backend", b, "--io-threads", "1"])
        for b in backends
    ]
    out.append(Server("uvloop", [py, str(PEERS / "asyncio_echo.py"), "--loop", "uvloop",
                                 "--port", "0"]))
    return out


def perf_report(data: Path, sort: str) -> list[tuple[float, str]]:
    """(percent, name) rows of `perf report --sort SORT`, heaviest first."""
    p = subprocess.run(
        ["perf", "report", "-i", str(data), "--no-children", "-g", "none", "--sort", sort,
         "--stdio"],
        capture_output=True, text=True, check=False,
    )
    rows = []
    for line in p.stdout.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(.*\S)", line)
        if m:
            rows.append((float(m.group(1)), m.group(2)))
    return rows


def profile(srv: Server, args: argparse.Namespace, tmp: Path) -> dict:
    if not srv.start(["taskset", "-c", SERVER_CPU]):
        return {"error": "did not start"}
    data = tmp / f"{srv.name}.data"
    try:
        load = subprocess.Popen(
            ["taskset", "-c", LOADGEN_CPU, str(LOADGEN), "--port", str(srv.port), "--conns", "10",
             "--size", str(args.size), "--depth", "1", "--warmup", "1",
             "--duration", str(args.seconds + 2), "--server-pid", str(srv.proc.pid)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        time.sleep(2)
        subprocess.run(
            ["perf", "record", "-F", str(SAMPLE_HZ), "-p", str(srv.proc.pid), "-o", str(data),
             "--", "sleep", str(args.seconds)],
            capture_output=True, check=False,
        )
        out, _ = load.communicate(timeout=args.seconds + 30)
    finally:
        srv.stop()
    symbols = perf_report(data, "sym")
    kernel = sum(pct for pct, name in symbols if name.startswith("[k]"))
    r = json.loads(out.strip().splitlines()[-1])
    per_msg = r.get("server_cpu_us_per_msg")
    cpu_per_mb = per_msg * 1e6 / args.size if per_msg else None
    return {"kernel": kernel, "top": symbols[:TOP], "cpu_us_per_mb": cpu_per_mb}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=65536, help="message size (default %(default)s)")
    ap.add_argument("--seconds", type=float, default=5, help="seconds recorded per server")
    ap.add_argument("--backends", default="io_uring,epoll")
    args = ap.parse_args()
    ensure_built("bulk_profile")
    with tempfile.TemporaryDirectory() as tmp:
        results = {s.name: profile(s, args, Path(tmp)) for s in servers(args.backends.split(","))}
    print(f"Bulk echo profile: {args.size} B messages, 10 connections, depth 1; "
          f"perf at {SAMPLE_HZ} Hz for {args.seconds:g} s of each server's run.\n")
    print("| server | CPU µs/MB | kernel share of its CPU | user share |")
    print("|---|---:|---:|---:|")
    for name, r in results.items():
        if "error" in r:
            print(f"| {name} | {r['error']} | | |")
            continue
        mb = f"{r['cpu_us_per_mb']:.0f}" if r["cpu_us_per_mb"] else "-"
        print(f"| {name} | {mb} | {r['kernel']:.1f}% | {100 - r['kernel']:.1f}% |")
    for name, r in results.items():
        if "top" in r:
            print(f"\n{name}, heaviest symbols:\n")
            for pct, sym in r["top"]:
                print(f"- {pct:.1f}% {sym}")


if __name__ == "__main__":
    main()
