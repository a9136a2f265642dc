"""Receive-buffer shapes for bulk streams (#17): server CPU per MB of the
echo at large messages for several `buffers_per_thread` x `buffer_size`.

io_uring receives into a ring of provided buffers (default 512 x 16 KiB;
since a336d65 kept only as deep as the reads need and refilled with the
buffers given back last, with a bundle of buffers per completion; before,
one completion per buffer and the ring cycled through all of them). This
runs the same `netring.Server` echo (one IO thread,
pinned to --server-cpus) with each variant against the native load
generator (10 connections, depth 1, pinned to --loadgen-cpus), interleaved
(order flipped every round), and reports medians of CPU per MB and MB/s.
It measures what a second, large-buffer group for streams could gain
before one is built.

    .venv/bin/python benchmarks/recv_buffers_bench.py --sizes 65536,262144,1048576 \\
        --variants 512x16384,64x16384,32x65536,16x262144 --rounds 3 > results/recv_buffers.md
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from echo_bench import LOADGEN, ensure_built  # noqa: E402

SERVER = r"""
import sys, time, netring
class Echo(netring.Protocol):
    def connection_made(self, transport): self.transport = transport
    def data_received(self, data): self.transport.write(data)
count, size, backend = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
server = netring.Server(Echo, "127.0.0.1", 0, io_threads=1, backend=backend,
                        buffers_per_thread=count, buffer_size=size)
server.start()
print(server.port, flush=True)
time.sleep(3600)
"""


def run(args: argparse.Namespace, count: int, size: int, msg: int) -> dict:
    server = subprocess.Popen(["taskset", "-c", args.server_cpus, sys.executable, "-c", SERVER,
                               str(count), str(size), args.backend],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        out = subprocess.run(
            ["taskset", "-c", args.loadgen_cpus, str(LOADGEN), "--port", str(port),
             "--conns", "10", "--size", str(msg), "--depth", "1", "--duration",
             str(args.duration), "--warmup", "1", "--server-pid", str(server.pid)],
            capture_output=True, text=True, timeout=args.duration + 60)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        mb = r["bytes"] / 1e6
        return {"cpu_us_per_mb": r["server_cpu_us"] / mb, "mb_per_s": mb / r["window_s"]}
    finally:
        server.kill()
        server.wait(10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="io_uring")
    ap.add_argument("--sizes", default="65536,262144,1048576", help="message sizes")
    ap.add_argument("--variants", default="512x16384,64x16384,32x65536,16x262144",
                    help="COUNTxSIZE receive-buffer shapes; the first is the baseline")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--server-cpus", default="1")
    ap.add_argument("--loadgen-cpus", default="0")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    ensure_built("recv_buffers_bench.py")
    variants = [tuple(int(x) for x in v.split("x")) for v in args.variants.split(",")]
    sizes = [int(s) for s in args.sizes.split(",")]
    results: dict[str, list[dict]] = {}
    for msg in sizes:
        for rnd in range(args.rounds):
            for count, size in (variants if rnd % 2 == 0 else variants[::-1]):
                r = run(args, count, size, msg)
                results.setdefault(f"{msg} {count}x{size}", []).append(r)
                print(f"{msg} B, {count} x {size}: {r['cpu_us_per_mb']:.0f} µs/MB, "
                      f"{r['mb_per_s']:.0f} MB/s", file=sys.stderr)
    print(f"Receive-buffer shapes ({args.backend}, one IO thread on CPU {args.server_cpus}, "
          f"load generator on {args.loadgen_cpus}): echo x 10 connections depth 1, "
          f"{args.duration:g} s runs, medians of {args.rounds} interleaved rounds.\n")
    print("| message | buffers | CPU µs/MB | MB/s | CPU/MB vs the first | MB/s vs the first |")
    print("|---:|---|---:|---:|---:|---:|")
    for msg in sizes:
        base = None
        for count, size in variants:
            rs = results[f"{msg} {count}x{size}"]
            cpu = statistics.median(r["cpu_us_per_mb"] for r in rs)
            mbs = statistics.median(r["mb_per_s"] for r in rs)
            base = base or (cpu, mbs)
            print(f"| {msg // 1024} KiB | {count} x {size // 1024} KiB | {cpu:.0f} | {mbs:.0f} "
                  f"| {cpu / base[0]:.2f}x | {mbs / base[1]:.2f}x |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "runs": results}, indent=1))


if __name__ == "__main__":
    main()
