"""File-serving benchmark (#17): a 1 GiB file through transport.sendfile.

Servers (each the file protocol of examples/file_server.py: ``GET name`` ->
``OK <size>`` + the file): netring on both backends (``transport.sendfile``),
asyncio (``loop.sendfile``: ``os.sendfile`` on its selector loop) and uvloop
(it has no ``loop.sendfile``: 256 KiB reads written and drained, as aiohttp
falls back to). The client (this process, pinned to CPU 0) downloads the
file with ``recv_into``; the server is pinned to CPU 1 and its CPU time is
read from /proc. Each (server, run) fetches the file once after one priming
fetch; medians of the runs, ratios to uvloop and asyncio. With
``--clients N`` each fetch is N clients downloading the file at once (one
thread each, every thread on CPU 0), MB/s counting all of them.

    .venv/bin/python benchmarks/sendfile_bench.py [--repeat N] [--size-mib M] [--clients N]
        [--json OUT]
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from echo_bench import PEERS, Server, headline, importable, pinning, save_json, table

CLK = os.sysconf("SC_CLK_TCK")
# Issue #17's targets: MB/s at least uvloop's, CPU per MB at most 0.8x its.
MBS_VS_UVLOOP, CPU_VS_UVLOOP = 1.0, 0.8


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK


def fetch(port: int, name: str, buf: memoryview) -> int:
    with socket.create_connection(("127.0.0.1", port), timeout=60) as c:
        c.sendall(b"GET %s\n" % name.encode())
        head = b""
        while not head.endswith(b"\n"):
            byte = c.recv(1)
            if not byte:
                raise RuntimeError("closed before the answer")
            head += byte
        status, _, size = head.strip().partition(b" ")
        if status != b"OK":
            raise RuntimeError(head.decode())
        left = int(size)
        while left:
            n = c.recv_into(buf, min(left, len(buf)))
            if not n:
                raise RuntimeError(f"closed with {left} bytes to go")
            left -= n
        return int(size)


def fetch_all(port: int, name: str, bufs: list[memoryview]) -> int:
    """One fetch per buffer, all at once (a thread each); the bytes of all."""
    if len(bufs) == 1:
        return fetch(port, name, bufs[0])
    sizes: list[int] = []
    errors: list[BaseException] = []

    def one(buf: memoryview) -> None:
        try:
            sizes.append(fetch(port, name, buf))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=one, args=(b,)) for b in bufs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(sizes)


def make_servers(root: str, args: argparse.Namespace) -> tuple[list[Server], dict[str, str]]:
    py, servers, skipped = sys.executable, [], {}
    for backend in args.backends.split(","):
        argv = [py, str(PEERS / "file_netring.py"), "--root", root, "--backend", backend]
        servers.append(Server(f"netring[{backend}]", argv))
    for loop in ("uvloop", "asyncio"):
        if loop == "uvloop" and not importable("uvloop"):
            skipped[loop] = f"uvloop is not installed: {py} -m pip install uvloop"
            continue
        argv = [py, str(PEERS / "file_asyncio.py"), "--root", root, "--loop", loop]
        servers.append(Server(loop, argv))
    return servers, skipped


def run(servers: list[Server], args: argparse.Namespace) -> list[dict]:
    bufs = [memoryview(bytearray(4 << 20)) for _ in range(args.clients)]
    for srv in servers:
        fetch(srv.port, "prime", bufs[0])
    runs = []
    for rep in range(args.repeat):
        k = rep % len(servers)
        for srv in servers[k:] + servers[:k]:
            cpu0, t0 = cpu_seconds(srv.proc.pid), time.perf_counter()
            size = fetch_all(srv.port, "big", bufs)
            wall, cpu = time.perf_counter() - t0, cpu_seconds(srv.proc.pid) - cpu0
            mb = size / 1e6
            scenario = f"{(size // args.clients) >> 20} MiB"
            if args.clients > 1:
                scenario += f" x {args.clients} clients"
            r = {"server": srv.name, "scenario": scenario, "rep": rep,
                 "mb_per_s": mb / wall, "server_cpu_pct": 100 * cpu / wall,
                 "server_cpu_us_per_mb": cpu * 1e6 / mb}
            runs.append(r)
            print(f"[{rep + 1}/{args.repeat}] {srv.name:18} {r['mb_per_s']:7.0f} MB/s,"
                  f" server CPU {r['server_cpu_pct']:3.0f} %,"
                  f" {r['server_cpu_us_per_mb']:5.0f} µs/MB", file=sys.stderr)
    return runs


def medians(runs: list[dict]) -> list[dict]:
    rows = []
    for name in dict.fromkeys(r["server"] for r in runs):
        mine = [r for r in runs if r["server"] == name]
        row = {"server": name, "scenario": mine[0]["scenario"], "runs": len(mine)}
        for k in ("mb_per_s", "server_cpu_pct", "server_cpu_us_per_mb"):
            row[k] = statistics.median(r[k] for r in mine)
        rows.append(row)
    by = {r["server"]: r for r in rows}
    for row in rows:
        for base in ("uvloop", "asyncio"):
            b = by.get(base)
            row[f"mbs_vs_{base}"] = row["mb_per_s"] / b["mb_per_s"] if b else None
            row[f"cpu_vs_{base}"] = (row["server_cpu_us_per_mb"] / b["server_cpu_us_per_mb"]
                                     if b and b["server_cpu_us_per_mb"] else None)
    return rows


COLUMNS = [
    ("MB/s", "mb_per_s", "cpu"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("CPU µs/MB", "server_cpu_us_per_mb", "us"),
    ("MB/s vs uvloop", "mbs_vs_uvloop", "ratio"),
    ("CPU/MB vs uvloop", "cpu_vs_uvloop", "ratio"),
    ("MB/s vs asyncio", "mbs_vs_asyncio", "ratio"),
    ("CPU/MB vs asyncio", "cpu_vs_asyncio", "ratio"),
]


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        if not row["server"].startswith("netring") or row.get("mbs_vs_uvloop") is None:
            continue
        for what, got, target, ok in (
            ("MB/s vs uvloop", row["mbs_vs_uvloop"], MBS_VS_UVLOOP,
             row["mbs_vs_uvloop"] >= MBS_VS_UVLOOP),
            ("CPU/MB vs uvloop", row["cpu_vs_uvloop"], CPU_VS_UVLOOP,
             row["cpu_vs_uvloop"] <= CPU_VS_UVLOOP),
        ):
            op = ">=" if what.startswith("MB/s") else "<="
            out.append(f"- {'met' if ok else 'MISSED'}: {row['server']} {what} {got:.2f}x"
                       f" (target {op} {target:.2f}x)")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="io_uring,epoll")
    ap.add_argument("--repeat", type=int, default=5, help="fetches of the file per server")
    ap.add_argument("--size-mib", type=int, default=1024, help="the file's size (default 1 GiB)")
    ap.add_argument("--clients", type=int, default=1, help="clients fetching at once")
    ap.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    ap.add_argument("--json", metavar="OUT", help="save every run and the medians here")
    args = ap.parse_args()
    args.duration, args.warmup = 0, 0  # for headline()
    pinned, pin_server, _ = pinning(args)
    if pinned:
        os.sched_setaffinity(0, {0})
    with tempfile.TemporaryDirectory(prefix="netring-sendfile-") as root:
        block = os.urandom(1 << 20)
        with open(os.path.join(root, "big"), "wb") as f:
            for _ in range(args.size_mib):
                f.write(block)
        Path(root, "prime").write_bytes(block * 64)
        servers, skipped = make_servers(root, args)
        try:
            live = [srv for srv in servers if srv.start(pin_server)]
            runs = run(live, args)
        finally:
            for srv in servers:
                srv.stop()
    skipped |= {srv.name: srv.note for srv in servers if srv.note}
    rows = medians(runs)
    who = "one client" if args.clients == 1 else f"{args.clients} clients at once"
    title = f"File serving ({args.size_mib} MiB, {who})"
    print(headline(title, args, pinned).replace(" of 0 s after 0 s warm-up", "") + "\n")
    print(table(rows, COLUMNS))
    checks = verdicts(rows)
    if checks:
        print("\nTargets (#17):\n\n" + "\n".join(checks))
    for name, why in skipped.items():
        print(f"\n- skipped {name}: {why}")
    if args.json:
        save_json(args.json, args, pinned, {"skipped": skipped, "runs": runs, "medians": rows})


if __name__ == "__main__":
    main()
