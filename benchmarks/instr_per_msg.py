"""Instructions per message of netring builds, counted by callgrind.

Timings on this VM drift by 15-25 % between phases; instruction counts do
not. This serves `python -m netring serve SERVER` under
`valgrind --tool=callgrind` with instrumentation off, lets the load generator
warm it up, switches instrumentation on (`callgrind_control -i on`) for a
measured window of load, off again, and divides the instructions executed
in the window (every thread: the IO thread's engine and Python) by the
messages the load generator counted in the same window.

The server runs on the epoll backend: valgrind does not emulate io_uring
(a ring set up under it never completes anything). The state machine,
dispatch and framing measured are the same on both backends.

Builds are directories holding a ``netring`` package with its native module
(see ``ab_pairs.py``). Under callgrind the server is ~50x slower, so both
builds run saturated with large batches; the figure compares builds, it is
not what a message costs at full speed.

    python benchmarks/instr_per_msg.py --build A=/tmp/ab/A --build B=/tmp/ab/B \\
        --mode raw --depth 16

A build given as ``DIR+proxy-v2`` serves behind the PROXY protocol v2
(``--proxy-protocol v2``, the load generator sending HAProxy's header): the
same build plain and so is the PROXY layer's cost per message::

    python benchmarks/instr_per_msg.py --build plain=/tmp/ab/B \\
        --build proxy=/tmp/ab/B+proxy-v2 --mode raw --depth 1
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
LOADGEN = HERE / "out" / "target" / "release" / "netring-loadgen"
SERVERS = {"raw": "echo", "lp": "packet-echo", "line": "line"}


def total_instructions(out_prefix: str) -> int:
    """Sum the `totals:` of every callgrind dump written under the prefix."""
    total = 0
    for path in glob.glob(out_prefix + "*"):
        with open(path) as f:
            for line in f:
                if line.startswith("totals:"):
                    total += int(line.split()[1])
                    break
    return total


def measure(build: str, mode: str, depth: int, conns: int, seconds: float,
            keep: str | None = None, proxy: bool = False) -> tuple[int, int]:
    """(instructions, messages) in one measured window on `build`; with
    `keep`, the callgrind dump is kept under that name (for
    `callgrind_annotate`)."""
    with tempfile.TemporaryDirectory() as tmp:
        prefix = keep or os.path.join(tmp, "cg.out")
        env = dict(os.environ, PYTHONPATH=build, NETRING_BACKEND="epoll")
        server = subprocess.Popen(
            ["valgrind", "--tool=callgrind", "--instr-atstart=no",
             f"--callgrind-out-file={prefix}.%p", sys.executable, "-u", "-m", "netring", "serve",
             SERVERS[mode], "--port", "0",
             *(["--proxy-protocol", "v2", "--trusted-proxy", "127.0.0.1/32"] if proxy else [])],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        try:
            assert server.stdout is not None
            ready = server.stdout.readline()
            port = int(re.search(r":(\d+) ", ready).group(1))  # type: ignore[union-attr]
            load = [str(LOADGEN), "--port", str(port), "--conns", str(conns), "--size", "64",
                    "--depth", str(depth), "--mode", mode, "--warmup", "3",
                    "--duration", str(seconds), *(["--proxy-v2"] if proxy else [])]
            gen = subprocess.Popen(load, stdout=subprocess.PIPE, text=True)
            time.sleep(3)  # the load generator's warm-up
            subprocess.run(["callgrind_control", "-i", "on", str(server.pid)], check=True,
                           stdout=subprocess.DEVNULL)
            time.sleep(seconds)
            subprocess.run(["callgrind_control", "-i", "off", str(server.pid)], check=True,
                           stdout=subprocess.DEVNULL)
            out, _ = gen.communicate(timeout=60)
            msgs = int(json.loads(out.strip().splitlines()[-1])["msgs"])
        finally:
            server.send_signal(signal.SIGINT)
            server.wait(timeout=120)
        return total_instructions(prefix), msgs


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--build", action="append", required=True, help="NAME=DIR, repeatable")
    p.add_argument("--mode", choices=sorted(SERVERS), default="raw")
    p.add_argument("--depth", type=int, default=16)
    p.add_argument("--conns", type=int, default=50)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--keep", help="keep the dumps as KEEP.NAME.ROUND.PID")
    args = p.parse_args()
    builds = [b.split("=", 1) for b in args.build]
    results: dict[str, list[float]] = {name: [] for name, _ in builds}
    for rnd in range(args.rounds):
        order = builds if rnd % 2 == 0 else builds[::-1]
        for name, build in order:
            keep = f"{args.keep}.{name}.{rnd}" if args.keep else None
            path, proxy = build.removesuffix("+proxy-v2"), build.endswith("+proxy-v2")
            instr, msgs = measure(path, args.mode, args.depth, args.conns, args.seconds, keep,
                                  proxy)
            results[name].append(instr / max(msgs, 1))
            print(f"round {rnd} {name}: {instr / 1e6:.0f}M instructions / {msgs} msgs = "
                  f"{instr / max(msgs, 1):.0f} per msg", file=sys.stderr)
    print(f"| build | instructions/msg ({args.mode} 64 B x {args.conns} conns, depth "
          f"{args.depth}, under callgrind; per round) |")
    print("|---|---|")
    for name, per in results.items():
        print(f"| {name} | {', '.join(f'{x:.0f}' for x in per)} |")


if __name__ == "__main__":
    main()
