"""Interleaved A/B pairs of two netring builds under one benchmark.

Comparing two bench runs on this VM says little (slow phases of a minute or
two cost 15-25 %). This runs the same benchmark alternately on build A and
build B, round after round (the order flips every round), and reports per
scenario the median msgs/s and server CPU per message of each build and the
median of the per-round B/A ratios.

A build is a directory holding a ``netring`` package with its native module
(``netring/_native.abi3.so``); the benchmark's netring servers import it
through ``PYTHONPATH``. Make one from a checkout with::

    cargo build --release -p netring-py
    mkdir -p /tmp/ab/A && cp -r python/netring /tmp/ab/A/
    cp target/release/lib_native.so /tmp/ab/A/netring/_native.abi3.so

Example (the architecture issue's check)::

    python benchmarks/ab_pairs.py --a /tmp/ab/A --b /tmp/ab/B --rounds 5 \\
        --bench echo --scenarios 64B/50c/d1,64B/50c/d16
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHES = {"echo": "echo_bench.py", "framed": "framed_bench.py", "bulk": "bulk_bench.py"}


def run_once(build: str, bench: str, scenarios: str, backend: str, duration: float) -> list[dict]:
    """One run of `bench` with netring from `build`; its netring runs."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "out.json")
        env = dict(os.environ, PYTHONPATH=build)
        cmd = [sys.executable, str(HERE / BENCHES[bench]), "--servers", "netring",
               "--backends", backend, "--scenarios", scenarios, "--repeat", "1",
               "--duration", str(duration), "--json", out]
        subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
        with open(out) as f:
            return [r for r in json.load(f)["runs"] if r["server"].startswith("netring")]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--a", required=True, help="directory with build A's netring package")
    p.add_argument("--b", required=True, help="directory with build B's netring package")
    p.add_argument("--bench", choices=sorted(BENCHES), default="echo")
    p.add_argument("--scenarios", required=True, help="the bench's scenario list")
    p.add_argument("--backend", default="io_uring")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--duration", type=float, default=3.0)
    p.add_argument("--json", help="save every run here")
    args = p.parse_args()
    for build in (args.a, args.b):
        if not (Path(build) / "netring").is_dir():
            p.error(f"{build}: no netring package there")
    runs: list[dict] = []
    for rnd in range(args.rounds):
        order = [("A", args.a), ("B", args.b)]
        if rnd % 2:
            order.reverse()
        for name, build in order:
            for r in run_once(build, args.bench, args.scenarios, args.backend, args.duration):
                r.update(build=name, round=rnd)
                runs.append(r)
                print(f"round {rnd} {name} {r['scenario']}: {r['msgs_per_s'] / 1e3:.0f}k msgs/s, "
                      f"{r['server_cpu_us_per_msg']:.3f} us/msg", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "runs": runs}, f, indent=1)
    print(f"| scenario ({args.bench}, {args.backend}, {args.rounds} rounds) | A msgs/s | "
          "B msgs/s | B/A msgs/s (median of rounds) | A us/msg | B us/msg | "
          "B/A CPU/msg (median of rounds) |")
    print("|---|---|---|---|---|---|---|")
    for scen in dict.fromkeys(r["scenario"] for r in runs):
        print(summary_row(scen, runs))


def summary_row(scen: str, runs: list[dict]) -> str:
    """One table row: each build's medians and the median per-round B/A."""
    by = {(r["build"], r["round"]): r for r in runs if r["scenario"] == scen}
    rounds = sorted({rnd for _, rnd in by if ("A", rnd) in by and ("B", rnd) in by})

    def med(build: str, key: str) -> float:
        return statistics.median(by[(build, rnd)][key] for rnd in rounds)

    def ratio(key: str) -> float:
        return statistics.median(by[("B", rnd)][key] / by[("A", rnd)][key] for rnd in rounds)

    cpu = "server_cpu_us_per_msg"
    return (f"| {scen} | {med('A', 'msgs_per_s') / 1e3:.0f}k | {med('B', 'msgs_per_s') / 1e3:.0f}k"
            f" | {ratio('msgs_per_s'):.3f} | {med('A', cpu):.3f} | {med('B', cpu):.3f}"
            f" | {ratio(cpu):.3f} |")


if __name__ == "__main__":
    main()
