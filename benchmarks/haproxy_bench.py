"""netring behind a real HAProxy (#16): the echo through HAProxy with
``send-proxy-v2`` against the same echo reached directly.

``netring serve echo`` (one IO thread) on --server-cpus, plain for the
direct runs and with ``--proxy-protocol v2 --trusted-proxy 127.0.0.1/32``
behind HAProxy (Debian ``haproxy``: TCP mode, one thread, ``send-proxy-v2``
on its one backend server), which runs on --haproxy-cpus; the native load
generator on --loadgen-cpus. Each repetition runs the direct case and the
HAProxy case on fresh processes (order flipped every repetition); the
figures are medians, the ratios medians of the per-repetition ratios.

On a 2-core machine HAProxy shares a core with the load generator (the
default), so the fronted figure is mostly what that core can do: the
server's CPU per message is the figure that shows the PROXY layer's cost
there, and HAProxy's own CPU per message is reported beside it.

    .venv/bin/python benchmarks/haproxy_bench.py [--repeat 5] [--json OUT] > results/haproxy.md
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from echo_bench import LOADGEN, ensure_built  # noqa: E402
from workers_scaling import start_serving  # noqa: E402

KEYS = ("msgs_per_s", "p50_us", "p99_us", "server_cpu_us_per_msg", "haproxy_cpu_us_per_msg")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve(args: argparse.Namespace, proxied: bool) -> tuple[subprocess.Popen[str], int]:
    cmd = ["taskset", "-c", args.server_cpus, sys.executable, "-m", "netring", "serve", "echo",
           "--port", "0", "--io-threads", "1", "--backend", args.backend]
    if proxied:
        cmd += ["--proxy-protocol", "v2", "--trusted-proxy", "127.0.0.1/32"]
    return start_serving(cmd, "haproxy_bench")


def front(args: argparse.Namespace, backend_port: int, tmp: Path,
          ) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cfg = tmp / "haproxy.cfg"
    cfg.write_text(f"""
global
    maxconn 4000
    nbthread 1
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend front
    bind 127.0.0.1:{port}
    default_backend netring
backend netring
    server s0 127.0.0.1:{backend_port} send-proxy-v2
""")
    proc = subprocess.Popen(["taskset", "-c", args.haproxy_cpus, "haproxy", "-db", "-f",
                             str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
                s.sendall(b"up?")
                if s.recv(3) == b"up?":
                    return proc, port
        except OSError:
            pass
        if proc.poll() is not None:
            break
        time.sleep(0.05)
    proc.kill()
    sys.exit("haproxy_bench: haproxy did not come up")


def run(args: argparse.Namespace, fronted: bool) -> dict:
    server, port = serve(args, proxied=fronted)
    haproxy = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            target = port
            if fronted:
                haproxy, target = front(args, port, Path(tmp))
            opts = ["--port", str(target), "--conns", str(args.conns), "--size", str(args.size),
                    "--depth", str(args.depth), "--duration", str(args.duration),
                    "--warmup", str(args.warmup), "--server-pid", str(server.pid)]
            if haproxy is not None:
                opts += ["--extra-pid", str(haproxy.pid)]
            out = subprocess.run(["taskset", "-c", args.loadgen_cpus, str(LOADGEN), *opts],
                                 capture_output=True, text=True,
                                 timeout=args.warmup + args.duration + 60)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            msgs = max(result["msgs"], 1)
            extra = result.get("extra_cpu_us")
            result["haproxy_cpu_us_per_msg"] = extra / msgs if extra is not None else None
            return result
    finally:
        for proc in (haproxy, server):
            if proc is not None:
                proc.terminate()
                proc.wait(30)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="io_uring")
    ap.add_argument("--server-cpus", default="1")
    ap.add_argument("--loadgen-cpus", default="0")
    ap.add_argument("--haproxy-cpus", default=None, help="default: --loadgen-cpus")
    ap.add_argument("--conns", type=int, default=50)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--duration", type=float, default=4.0)
    ap.add_argument("--warmup", type=float, default=1.0)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    if shutil.which("haproxy") is None:
        sys.exit("haproxy_bench: haproxy not on PATH (Debian package haproxy)")
    args.haproxy_cpus = args.haproxy_cpus or args.loadgen_cpus
    ensure_built("haproxy_bench.py")
    pairs: list[dict[str, dict]] = []
    for rep in range(args.repeat):
        order = (False, True) if rep % 2 == 0 else (True, False)
        got = {("haproxy" if f else "direct"): run(args, f) for f in order}
        pairs.append(got)
        print(f"[{rep + 1}/{args.repeat}] direct {got['direct']['msgs_per_s'] / 1e3:.1f}k, "
              f"haproxy {got['haproxy']['msgs_per_s'] / 1e3:.1f}k msg/s", file=sys.stderr)
    print(f"netring behind HAProxy {haproxy_version()} (TCP mode, one thread, send-proxy-v2) "
          f"against direct: echo {args.size} B x {args.conns} connections depth {args.depth}, "
          f"{args.duration:g} s per run, {args.repeat} pairs (order flipped each repetition); "
          f"netring ({args.backend}) on CPU {args.server_cpus}, load generator on "
          f"{args.loadgen_cpus}, HAProxy on {args.haproxy_cpus}; {os.cpu_count()} CPUs.\n")
    print("| path | msgs/s | p50 µs | p99 µs | netring CPU µs/msg | HAProxy CPU µs/msg |")
    print("|---|---:|---:|---:|---:|---:|")
    medians: dict[str, dict] = {}
    for path in ("direct", "haproxy"):
        runs = [p[path] for p in pairs]
        med = {}
        for k in KEYS:
            vals = [r[k] for r in runs if r.get(k) is not None]
            med[k] = statistics.median(vals) if vals else None
        medians[path] = med
        hp = f"{med['haproxy_cpu_us_per_msg']:.2f}" if med["haproxy_cpu_us_per_msg"] else "-"
        print(f"| {path} | {med['msgs_per_s']:,.0f} | {med['p50_us']:.0f} | "
              f"{med['p99_us']:.0f} | {med['server_cpu_us_per_msg']:.2f} | {hp} |")
    ratios = {k: statistics.median(p["haproxy"][k] / p["direct"][k] for p in pairs)
              for k in ("msgs_per_s", "p50_us", "p99_us", "server_cpu_us_per_msg")}
    print(f"\nPer-pair ratios (through HAProxy / direct, medians): msgs/s "
          f"{ratios['msgs_per_s']:.3f}x, p50 {ratios['p50_us']:.3f}x, p99 "
          f"{ratios['p99_us']:.3f}x, netring CPU/msg {ratios['server_cpu_us_per_msg']:.3f}x "
          f"(the PROXY layer and the extra hop's segment sizes on netring's side).")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "medians": medians,
                                               "ratios": ratios, "pairs": pairs}, indent=1))


def haproxy_version() -> str:
    try:
        out = subprocess.run(["haproxy", "-v"], capture_output=True, text=True).stdout
    except OSError:
        return "?"
    match = re.search(r"version (\S+)", out)
    return match.group(1) if match else "?"


if __name__ == "__main__":
    main()
