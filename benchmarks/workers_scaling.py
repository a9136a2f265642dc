"""Worker-process scaling: `netring serve echo --processes N` against the
native load generator, for each N asked, in one run.

The workers are pinned to --server-cpus and the load generator to
--loadgen-cpus (taskset), so on a machine with enough cores the figures
show how messages/s grow with workers while CPU per message stays put. On
this project's 2-core machine one core is the load generator's: every N
shares the other, so the figures cannot show scaling — they show what the
supervisor and SO_REUSEPORT cost (nothing measurable should change with N).

Server CPU is the sum over the supervisor and all its workers (from /proc,
at the window's edges), divided by the messages answered.

Usage:
  python benchmarks/workers_scaling.py --processes 1,2 [--server-cpus 0 --loadgen-cpus 1]
      [--conns 50 --size 64 --depth 1 --duration 5 --repeat 3] [--json OUT]
  # a 16-core machine:
  python benchmarks/workers_scaling.py --processes 1,2,4,8 --server-cpus 0-7 \\
      --loadgen-cpus 8-15 --conns 400
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from echo_bench import LOADGEN, ensure_built  # noqa: E402  (the same load generator)

TICK = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(root: int) -> float:
    """utime + stime of `root` and its descendants, in seconds."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        children.setdefault(int(fields[1]), []).append(int(entry))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        try:
            with open(f"/proc/{pid}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        total += (int(fields[11]) + int(fields[12])) / TICK
        todo.extend(children.get(pid, []))
    return total


def start_serving(cmd: list[str], who: str) -> tuple[subprocess.Popen[str], int]:
    """Run a `netring serve ...` command line; (the process, the port of its
    first ready line). Exits with `who`'s name when no ready line comes."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = re.search(r":(\d+) \(", line)
    if not match:
        proc.kill()
        sys.exit(f"{who}: no ready line from {' '.join(cmd)}: {line!r}")
    return proc, int(match.group(1))


def serve(processes: int, cpus: str) -> tuple[subprocess.Popen[str], int]:
    return start_serving(["taskset", "-c", cpus, sys.executable, "-m", "netring", "serve",
                          "echo", "--port", "0", "--processes", str(processes)],
                         "workers_scaling")


def run(args: argparse.Namespace, processes: int) -> dict:
    proc, port = serve(processes, args.server_cpus)
    try:
        time.sleep(0.5)
        opts = ["--port", str(port), "--conns", str(args.conns), "--size", str(args.size),
                "--depth", str(args.depth), "--duration", str(args.duration),
                "--warmup", str(args.warmup)]
        lg = subprocess.Popen(["taskset", "-c", args.loadgen_cpus, str(LOADGEN), *opts],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        time.sleep(args.warmup)
        cpu0, t0 = tree_cpu_s(proc.pid), time.monotonic()
        out, _ = lg.communicate(timeout=args.warmup + args.duration + 60)
        cpu1, t1 = tree_cpu_s(proc.pid), time.monotonic()
        result = json.loads(out.strip().splitlines()[-1])
        msgs = result["msgs_per_s"] * result["window_s"]
        result["server_cpu_pct"] = 100 * (cpu1 - cpu0) / (t1 - t0)
        result["server_cpu_us_per_msg"] = 1e6 * (cpu1 - cpu0) / max(msgs, 1)
        return result
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--processes", default="1,2", help="comma list of worker counts")
    ap.add_argument("--server-cpus", default="0", help="taskset list for the workers")
    ap.add_argument("--loadgen-cpus", default="1", help="taskset list for the load generator")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", default=None, help="write the rows here too")
    args = ap.parse_args()
    ensure_built("workers_scaling.py")
    counts = [int(n) for n in args.processes.split(",")]
    runs: dict[int, list[dict]] = {n: [] for n in counts}
    for _ in range(args.repeat):  # interleaved: a slow phase hits every N alike
        for n in counts:
            r = run(args, n)
            runs[n].append(r)
            print(f"processes={n}: {r['msgs_per_s'] / 1e3:.1f}k msg/s, "
                  f"{r['server_cpu_us_per_msg']:.2f} server CPU µs/msg", file=sys.stderr)
    rows = []
    for n in counts:
        med = {k: statistics.median(r[k] for r in runs[n])
               for k in ("msgs_per_s", "p50_us", "p99_us", "server_cpu_pct",
                         "server_cpu_us_per_msg")}
        rows.append({"processes": n, **med})
    print(f"Worker processes: echo {args.size} B x {args.conns} connections depth {args.depth}; "
          f"medians of {args.repeat} interleaved runs of {args.duration:g} s; workers on CPUs "
          f"{args.server_cpus}, load generator on {args.loadgen_cpus}; {os.cpu_count()} CPUs.\n")
    print("| processes | msgs/s | p50 µs | p99 µs | server CPU % | server CPU µs/msg |")
    print("|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['processes']} | {r['msgs_per_s'] / 1e3:.1f}k | {r['p50_us']:.0f} | "
              f"{r['p99_us']:.0f} | {r['server_cpu_pct']:.0f} | "
              f"{r['server_cpu_us_per_msg']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")


if __name__ == "__main__":
    main()
