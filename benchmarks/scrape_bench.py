"""Metrics scrapes under load (#16): echo latency with and without 10
scrapes per second of the Prometheus endpoint.

`netring serve echo --metrics-port P` (one process; with `--processes 2`
the supervisor serves every worker's figures) under the native load
generator (64 B x 50 connections, depth 1). Each repetition runs the same
load twice on a fresh server, once quiet and once while this script
scrapes `/metrics` 10 times a second (order flipped every repetition), and
compares the load generator's p50/p99/p99.9 and the server's CPU per
message; the scrapes' own latency is reported too. A scrape is served by
`prometheus_client`'s HTTP thread, never an IO thread: the figure to watch
is p99 with scrapes against p99 without.

The server is pinned to --server-cpus, the load generator to
--loadgen-cpus, the scraper (this script) to --scraper-cpus (default: the
load generator's). With --processes the supervisor (every thread of it:
the endpoint's, and the thread per request it starts, which inherit it)
moves to --scraper-cpus once ready, the worker staying on --server-cpus: on
a machine with more cores than workers the scheduler puts it on an idle
one (`--supervisor-with-worker` leaves it on the worker's core).

On a 2-core machine both cores are saturated (the server's and the load
generator's), so a scrape's CPU (about 2 ms: HTTP, rendering) is taken
from one of them whatever the design, and p99 moves. On a larger machine:
    --server-cpus 1 --loadgen-cpus 2 --scraper-cpus 3

    .venv/bin/python benchmarks/scrape_bench.py [--repeat 5] [--json OUT] > results/scrape.md
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from echo_bench import LOADGEN, ensure_built  # noqa: E402
from workers_scaling import start_serving, tree_cpu_s  # noqa: E402

#: The issue's rate, and how far p99 may move before we call it changed.
SCRAPES_PER_S = 10.0
MAX_P99_RATIO = 1.10


def cpu_set(spec: str) -> set[int]:
    """A taskset-style list ("0", "2-3,5") as a set."""
    out: set[int] = set()
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        out.update(range(int(lo), int(hi or lo) + 1))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(args: argparse.Namespace, processes: int | None, mport: int | None,
          ) -> tuple[subprocess.Popen[str], int]:
    cmd = ["taskset", "-c", args.server_cpus, sys.executable, "-m", "netring", "serve", "echo",
           "--port", "0", "--io-threads", "1", "--backend", args.backend]
    if mport is not None:
        cmd += ["--metrics-port", str(mport)]
    if processes is not None:
        cmd += ["--processes", str(processes)]
    proc, port = start_serving(cmd, "scrape_bench")
    if processes is not None and not args.supervisor_with_worker:
        cpus = cpu_set(args.scraper_cpus)
        for tid in os.listdir(f"/proc/{proc.pid}/task"):
            os.sched_setaffinity(int(tid), cpus)
    return proc, port


class Scraper(threading.Thread):
    """GET url every 1/rate seconds (on a fixed schedule) until stopped;
    records each scrape's seconds and size."""

    def __init__(self, url: str, rate: float) -> None:
        super().__init__(daemon=True)
        self.url, self.period = url, 1.0 / rate
        self.stop = threading.Event()
        self.times: list[float] = []
        self.sizes: list[int] = []
        self.errors = 0

    def run(self) -> None:
        due = time.monotonic()
        while not self.stop.is_set():
            start = time.monotonic()
            try:
                with urllib.request.urlopen(self.url, timeout=5) as r:
                    self.sizes.append(len(r.read()))
                self.times.append(time.monotonic() - start)
            except OSError:
                self.errors += 1
            due += self.period
            self.stop.wait(max(0.0, due - time.monotonic()))


def control_endpoint(args: argparse.Namespace, port: int) -> subprocess.Popen[bytes]:
    """The control: Python's http.server with a file of a scrape's size, on
    the scraper's CPUs, in place of netring's endpoint."""
    root = HERE / "out" / "scrape_control"
    root.mkdir(parents=True, exist_ok=True)
    (root / "metrics").write_bytes(b"x 1\n" * 2000)
    proc = subprocess.Popen(["taskset", "-c", args.scraper_cpus, sys.executable, "-m",
                             "http.server", str(port), "--bind", "127.0.0.1",
                             "--directory", str(root)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    sys.exit("scrape_bench: the control endpoint did not start")


def run(args: argparse.Namespace, processes: int | None, scrape: bool,
        control: bool = False) -> dict:
    mport = free_port()
    proc, port = serve(args, processes, None if control else mport)
    other = control_endpoint(args, mport) if control else None
    scraper = None
    try:
        time.sleep(0.5)
        opts = ["--port", str(port), "--conns", str(args.conns), "--size", "64",
                "--depth", "1", "--duration", str(args.duration), "--warmup", str(args.warmup)]
        lg = subprocess.Popen(["taskset", "-c", args.loadgen_cpus, str(LOADGEN), *opts],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        if scrape:
            scraper = Scraper(f"http://127.0.0.1:{mport}/metrics", SCRAPES_PER_S)
            scraper.start()
        time.sleep(args.warmup)
        cpu0, t0 = tree_cpu_s(proc.pid), time.monotonic()
        out, _ = lg.communicate(timeout=args.warmup + args.duration + 60)
        cpu1, t1 = tree_cpu_s(proc.pid), time.monotonic()
        result = json.loads(out.strip().splitlines()[-1])
        msgs = result["msgs_per_s"] * result["window_s"]
        result["server_cpu_us_per_msg"] = 1e6 * (cpu1 - cpu0) / max(msgs, 1)
        result["server_cpu_pct"] = 100 * (cpu1 - cpu0) / (t1 - t0)
        if scraper is not None:
            scraper.stop.set()
            scraper.join(10)
            ts = sorted(scraper.times)
            result["scrapes"] = len(ts)
            result["scrape_errors"] = scraper.errors
            result["scrape_p50_ms"] = 1e3 * ts[len(ts) // 2] if ts else None
            result["scrape_max_ms"] = 1e3 * ts[-1] if ts else None
            result["scrape_bytes"] = statistics.median(scraper.sizes) if scraper.sizes else None
        return result
    finally:
        if scraper is not None:
            scraper.stop.set()
        if other is not None:
            other.terminate()
            other.wait(10)
        proc.terminate()
        proc.wait(30)


LABELS = {0: "one process", -1: "control: no metrics, scrapes to another server"}
KEYS = ("msgs_per_s", "p50_us", "p99_us", "p999_us", "server_cpu_us_per_msg")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="io_uring")
    ap.add_argument("--modes", default="0,1,2,-1",
                    help="comma list: 0 = one process serving its own metrics, "
                         "N >= 1 = --processes N (the supervisor serves them), -1 = the "
                         "control: one process without metrics, the scrapes going to "
                         "Python's http.server on the scraper's CPUs")
    ap.add_argument("--server-cpus", default="1")
    ap.add_argument("--loadgen-cpus", default="0")
    ap.add_argument("--scraper-cpus", default=None,
                    help="the scraper and the supervisor (default: --loadgen-cpus)")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--supervisor-with-worker", action="store_true",
                    help="leave the supervisor on the worker's CPU")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ensure_built("scrape_bench.py")
    args.scraper_cpus = args.scraper_cpus or args.loadgen_cpus
    os.sched_setaffinity(0, cpu_set(args.scraper_cpus))  # the scraper
    modes = [int(m) for m in args.modes.split(",")]
    pairs: dict[int, list[tuple[dict, dict]]] = {m: [] for m in modes}
    for rep in range(args.repeat):
        for m in modes:
            processes = None if m <= 0 else m
            order = (False, True) if rep % 2 == 0 else (True, False)
            got = {s: run(args, processes, s, control=m < 0) for s in order}
            pairs[m].append((got[False], got[True]))
            q, s = got[False], got[True]
            print(f"[{rep + 1}/{args.repeat}] processes={m}: p99 {q['p99_us']:.0f} -> "
                  f"{s['p99_us']:.0f} µs, {s.get('scrapes')} scrapes "
                  f"(max {s.get('scrape_max_ms') or 0:.1f} ms)", file=sys.stderr)
    print(f"Scrapes under load: `netring serve echo --metrics-port` ({args.backend}), 64 B x "
          f"{args.conns} connections depth 1, {args.duration:g} s per run, "
          f"{SCRAPES_PER_S:g} scrapes/s of /metrics in one run of each pair (order flipped "
          f"every repetition); medians of {args.repeat} pairs; server on CPU "
          f"{args.server_cpus}, load generator on {args.loadgen_cpus}, scraper on "
          f"{args.scraper_cpus}"
          f"{'' if args.supervisor_with_worker else ' (with --processes: the supervisor too)'}"
          f"; {os.cpu_count()} CPUs.\n")
    print("| server | scrapes | msgs/s | p50 µs | p99 µs | p99.9 µs | server CPU µs/msg "
          "| scrape p50 ms | scrape max ms | scrape KiB |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    summary = []
    for m in modes:
        label = LABELS.get(m, f"--processes {m} (supervisor serves)")
        rows = {}
        for idx, name in ((0, "none"), (1, "10/s")):
            runs = [p[idx] for p in pairs[m]]
            med = {k: statistics.median(r[k] for r in runs) for k in KEYS}
            if idx == 1:
                for k in ("scrape_p50_ms", "scrape_max_ms", "scrape_bytes"):
                    vals = [r[k] for r in runs if r.get(k) is not None]
                    med[k] = statistics.median(vals) if vals else None
                med["scrape_max_ms"] = max((r.get("scrape_max_ms") or 0) for r in runs)
            rows[name] = med
            sp50 = f"{med['scrape_p50_ms']:.1f}" if idx else "-"
            smax = f"{med['scrape_max_ms']:.1f}" if idx else "-"
            skib = f"{med['scrape_bytes'] / 1024:.1f}" if idx and med["scrape_bytes"] else "-"
            print(f"| {label} | {name} | {med['msgs_per_s']:,.0f} | {med['p50_us']:.0f} "
                  f"| {med['p99_us']:.0f} | {med['p999_us']:.0f} "
                  f"| {med['server_cpu_us_per_msg']:.2f} | {sp50} | {smax} | {skib} |")
        ratios = {k: statistics.median(s[k] / q[k] for q, s in pairs[m] if q[k])
                  for k in KEYS}
        summary.append({"processes": m, "rows": rows, "pair_ratios": ratios,
                        "runs": [{"quiet": q, "scraped": s} for q, s in pairs[m]]})
    print("\nPer-pair ratios (with scrapes / without, medians):\n")
    for item in summary:
        r = item["pair_ratios"]
        ok = r["p99_us"] <= MAX_P99_RATIO
        label = LABELS.get(item["processes"], f"--processes {item['processes']}")
        print(f"- {'met' if ok else 'MISSED'}: {label}: p99 {r['p99_us']:.3f}x, p99.9 "
              f"{r['p999_us']:.3f}x, p50 {r['p50_us']:.3f}x, msgs/s {r['msgs_per_s']:.3f}x, "
              f"server CPU/msg {r['server_cpu_us_per_msg']:.3f}x (target: p99 within "
              f"{MAX_P99_RATIO - 1:.0%})")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "modes": summary},
                                              indent=1))


if __name__ == "__main__":
    main()
