"""kv benchmark: netring's Redis-protocol server against redis-server, under redis-benchmark.

`python -m netring serve kv` (each backend, one IO thread) and a real
`redis-server` (no persistence) are driven by `redis-benchmark -t
ping_inline,ping_mbulk,set,get -c 50` at `-P 1` and `-P 16`, in the same run:
the server pinned to CPU 0 and redis-benchmark to CPU 1, each (server, test,
pipeline) repeated with the server order rotated per repetition, medians
reported with the ratio to redis-server. The server's CPU time per request
(utime + stime from /proc/PID/stat around each redis-benchmark run) is the
second figure. Every server is checked with redis-cli before it is measured.
The issue's targets (kv >= 0.8x redis-server on GET and SET at -P 1, >= 0.3x
at -P 16) are checked at the end. See benchmarks/README.md ("kv vs redis-server").

    .venv/bin/python benchmarks/kv_bench.py [--quick] [--repeat N] [--json OUT]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import platform
import resource
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from echo_bench import (
    OUT,
    QUIET_MAX_PCT,
    Server,
    add_noise_args,
    build_info,
    fmt,
    importable,
    wait_quiet,
)

SERVER_CPU, CLIENT_CPU = "0", "1"
REDIS_SERVER, REDIS_BENCHMARK, REDIS_CLI = "redis-server", "redis-benchmark", "redis-cli"
BASELINE = "redis-server"
CLIENTS = 50
PIPELINES = (1, 16)
# redis-benchmark's test names (-t) and the names it reports them under.
TESTS = {"ping_inline": "PING_INLINE", "ping_mbulk": "PING_MBULK", "set": "SET", "get": "GET"}
PRIME_REQUESTS = {1: 20_000, 16: 200_000}  # the unrecorded first run, also the calibration
MIN_REQUESTS = {1: 100_000, 16: 1_000_000}  # -n never below this (but with --quick)
READY_TIMEOUT_S = 15
CLK_TCK = os.sysconf("SC_CLK_TCK")

# The targets, per netring backend: (tests, pipeline, threshold) on
# requests/s vs redis-server.
TARGETS = [(("SET", "GET"), 1, 0.8), (("SET", "GET"), 16, 0.3)]
SPREAD = 0.10  # a run this far from its median req/s is named in the notes
BORDERLINE = 0.10  # a verdict this close to its threshold is within run-to-run noise
METRICS = (
    "rps",
    "p50_ms",
    "p99_ms",
    "server_cpu_us_per_req",
    "server_cpu_pct",
    "client_cpu_pct",
    "elapsed_s",
)


def free_port() -> int:
    """A port nothing listens on now (redis-server cannot bind port 0)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer(Server):
    """redis-server without persistence; ready when it answers PING; stopped by SHUTDOWN."""

    def start(self, pin: list[str]) -> bool:
        self.port = free_port()
        log_path = OUT / "logs" / "redis-server.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        argv = [
            *self.argv,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(OUT),
            "--logfile",
            "",
        ]
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(pin + argv, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return self._fail(f"exited with status {self.proc.returncode}", log_path)
            if cli(self.port, "PING") == "PONG":
                return True
            time.sleep(0.1)
        return self._fail(f"no PONG within {READY_TIMEOUT_S} s", log_path)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        cli(self.port, "SHUTDOWN", "NOSAVE")
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            super().stop()


def cli(port: int, *command: str) -> str | None:
    """One redis-cli command's raw reply, or None when it could not run."""
    cmd = [REDIS_CLI, "-h", "127.0.0.1", "-p", str(port), "--raw", *command]
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:
        return None
    return p.stdout.rstrip("\n") if p.returncode == 0 else None


def check(srv: Server) -> str | None:
    """What is wrong with a server's answers (None: nothing), before it is measured."""
    key, value = f"kv-bench:{secrets.token_hex(4)}", secrets.token_hex(8)
    expect = [
        (("PING",), "PONG"),
        (("SET", key, value), "OK"),
        (("GET", key), value),
        (("EXISTS", key), "1"),
        (("DEL", key), "1"),
        (("GET", key), ""),
        (("ECHO", "hello"), "hello"),
    ]
    for command, want in expect:
        got = cli(srv.port, *command)
        if got != want:
            return f"{' '.join(command)!r} answered {got!r}, expected {want!r}"
    return None


def check_after(srv: Server) -> str | None:
    """After the SET runs, redis-benchmark's key holds its 3-byte value."""
    got = cli(srv.port, "GET", "key:__rand_int__")
    ok = got is not None and len(got) == 3  # -d 3: redis-benchmark's 3 bytes of random data
    return None if ok else f"GET key:__rand_int__ answered {got!r}, expected 3 bytes"


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of a process (all its threads), in clock ticks."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # fields 14 and 15 of proc(5)


def machine_ticks() -> int:
    """Busy ticks of the whole machine, counted as echo_bench's load generator counts them."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(f[0:3]) + sum(f[5:7])


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_benchmark(srv: Server, test: str, pipeline: int, requests: int, pin: list[str]) -> dict:
    """One redis-benchmark run of one test, with the server's CPU time around it."""
    cmd = [
        *pin,
        REDIS_BENCHMARK,
        "-h",
        "127.0.0.1",
        "-p",
        str(srv.port),
        "-c",
        str(CLIENTS),
        "-P",
        str(pipeline),
        "-n",
        str(requests),
        "-t",
        test,
        "--csv",
    ]
    srv_before, mach_before = cpu_ticks(srv.proc.pid), machine_ticks()
    client_before = children_cpu_s()
    t0 = time.monotonic()
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=300)
    except subprocess.TimeoutExpired:
        return {"error": "redis-benchmark timed out"}
    elapsed = time.monotonic() - t0
    srv_after, mach_after = cpu_ticks(srv.proc.pid), machine_ticks()
    client_s = children_cpu_s() - client_before
    rows = [r for r in csv.DictReader(io.StringIO(p.stdout)) if r.get("test") == TESTS[test]]
    if p.returncode != 0 or len(rows) != 1:
        err = p.stderr.strip().splitlines() or p.stdout.strip().splitlines() or ["no output"]
        return {"error": f"redis-benchmark exit {p.returncode}: {err[-1][:200]}"}
    row = rows[0]
    r = {
        "requests": requests,
        "rps": float(row["rps"]),
        "p50_ms": float(row["p50_latency_ms"]),
        "p99_ms": float(row["p99_latency_ms"]),
        "elapsed_s": elapsed,
        "client_cpu_pct": client_s * 100 / elapsed,
    }
    if srv_before is not None and srv_after is not None:
        server_s = (srv_after - srv_before) / CLK_TCK
        r["server_cpu_us_per_req"] = server_s * 1e6 / requests
        r["server_cpu_pct"] = server_s * 100 / elapsed
        machine_s = (mach_after - mach_before) / CLK_TCK
        r["other_cpu_pct"] = (machine_s - server_s - client_s) * 100 / elapsed
    return r


def measure(
    srv: Server, test: str, pipeline: int, requests: int, pin: list[str], args: argparse.Namespace
) -> dict:
    """One recorded run; with --retry-noisy, run again while other processes were busy."""
    for attempt in range(args.retry_noisy + 1):
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        r = run_benchmark(srv, test, pipeline, requests, pin)
        r["attempts"] = attempt + 1
        other = r.get("other_cpu_pct", 0)
        if other <= QUIET_MAX_PCT or attempt == args.retry_noisy:
            return r
        print(
            f"  {TESTS[test]} -P {pipeline} {srv.name}: other processes {other:.0f} % CPU, again",
            file=sys.stderr,
        )
    return r


def make_servers(args: argparse.Namespace) -> tuple[list[Server], dict[str, str]]:
    py, wanted = sys.executable, args.servers.split(",")
    servers: list[Server] = []
    skipped: dict[str, str] = {}
    if "redis-server" in wanted:
        if shutil.which(REDIS_SERVER):
            servers.append(RedisServer("redis-server", [REDIS_SERVER]))
        else:
            skipped["redis-server"] = "redis-server is not installed (apt-get install redis-server)"
    if "netring" in wanted:
        for backend in args.backends.split(","):
            name = f"netring[{backend}]"
            if not importable("netring"):
                skipped[name] = f"`import netring` fails under {py}: build it first (make build)"
                continue
            argv = [
                py,
                "-m",
                "netring",
                "serve",
                "kv",
                "--port",
                "0",
                "--backend",
                backend,
                "--io-threads",
                str(args.io_threads),
            ]
            servers.append(Server(name, argv))
    return servers, skipped


def calibrate(
    live: list[Server], configs: list[tuple[int, str]], pin: list[str], args: argparse.Namespace
) -> dict[tuple[int, str], int]:
    """Prime every server once per (pipeline, test) and size -n for >= --duration s on the
    fastest of them (every server gets the same -n)."""
    rates: dict[tuple[int, str], list[float]] = {c: [] for c in configs}
    for srv in live:
        for pipeline, test in configs:
            n = PRIME_REQUESTS[pipeline] // (4 if args.quick else 1)
            if args.wait_quiet:  # a busy machine would size -n too small
                wait_quiet(args.wait_quiet)
            r = run_benchmark(srv, test, pipeline, n, pin)
            if "rps" in r:
                rates[(pipeline, test)].append(r["rps"])
            print(
                f"primed {srv.name:18} {TESTS[test]:11} -P {pipeline:<2}: "
                + (r.get("error") or f"{fmt(r['rps'], 'rate')} req/s"),
                file=sys.stderr,
            )
    sizes = {}
    for c, rs in rates.items():
        if args.requests:
            sizes[c] = args.requests
        else:
            fastest = max(rs, default=PRIME_REQUESTS[c[0]])
            least = 10_000 if args.quick else MIN_REQUESTS[c[0]]
            sizes[c] = max(least, math.ceil(fastest * args.duration / 10_000) * 10_000)
    return sizes


def run_all(live: list[Server], args: argparse.Namespace, pin: list[str]) -> tuple[list, dict]:
    configs = [(p, t) for p in args.pipeline_list for t in args.test_list]
    sizes = calibrate(live, configs, pin, args)
    runs: list[dict] = []
    for rep in range(args.repeat):
        for pipeline, test in configs:
            k = rep % max(1, len(live))
            for srv in live[k:] + live[:k]:
                if not srv.alive():
                    continue
                r = measure(srv, test, pipeline, sizes[(pipeline, test)], pin, args)
                r.update(server=srv.name, test=TESTS[test], pipeline=pipeline, rep=rep)
                runs.append(r)
                msg = r.get("error") or (
                    f"{fmt(r['rps'], 'rate')} req/s in {r['elapsed_s']:.1f} s,"
                    f" {fmt(r.get('server_cpu_us_per_req'), 'cpu')} CPU µs/req,"
                    f" client {r['client_cpu_pct']:.0f} %"
                )
                if r.get("other_cpu_pct", 0) > QUIET_MAX_PCT:
                    msg += f" (other processes: {r['other_cpu_pct']:.0f} % CPU)"
                print(
                    f"[{rep + 1}/{args.repeat}] {TESTS[test]:11} -P {pipeline:<2}"
                    f" {srv.name:18} {msg}",
                    file=sys.stderr,
                )
    return runs, {f"{t}/P{p}": n for (p, t), n in sizes.items()}


def medians(runs: list[dict], names: list[str], args: argparse.Namespace) -> list[dict]:
    rows = []
    for pipeline in args.pipeline_list:
        for test in args.test_list:
            for name in names:
                ok = [
                    r
                    for r in runs
                    if r["server"] == name
                    and r["test"] == TESTS[test]
                    and r["pipeline"] == pipeline
                    and "error" not in r
                ]
                if not ok:
                    continue
                row = {"test": TESTS[test], "pipeline": pipeline, "server": name, "runs": len(ok)}
                for m in METRICS:
                    vals = [r[m] for r in ok if r.get(m) is not None]
                    row[m] = statistics.median(vals) if vals else None
                rows.append(row)
    base = {(r["test"], r["pipeline"]): r for r in rows if r["server"] == BASELINE}
    for row in rows:
        b = base.get((row["test"], row["pipeline"]))
        for m, key in (("rps", "rps_vs_redis"), ("server_cpu_us_per_req", "cpu_vs_redis")):
            ok = b is not None and row.get(m) is not None and b.get(m)
            row[key] = row[m] / b[m] if ok else None
    return rows


def verdicts(rows: list[dict]) -> list[dict]:
    out = []
    for row in rows:
        if not row["server"].startswith("netring") or row.get("rps_vs_redis") is None:
            continue
        for tests, pipeline, threshold in TARGETS:
            if row["test"] in tests and row["pipeline"] == pipeline:
                v = row["rps_vs_redis"]
                out.append(
                    {
                        "server": row["server"],
                        "test": row["test"],
                        "pipeline": pipeline,
                        "target": f"req/s ≥ {threshold:g}x redis-server",
                        "ratio": v,
                        "met": v >= threshold,
                        "borderline": abs(v - threshold) <= BORDERLINE * threshold,
                    }
                )
    return out


COLUMNS = [  # (heading, key in the row, format)
    ("req/s", "rps", "rate"),
    ("vs redis-server", "rps_vs_redis", "ratio"),
    ("p50 ms", "p50_ms", "ms"),
    ("p99 ms", "p99_ms", "ms"),
    ("server CPU µs/req", "server_cpu_us_per_req", "cpu"),
    ("CPU/req vs redis-server", "cpu_vs_redis", "ratio"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("client CPU", "client_cpu_pct", "pct"),
]


def report(rows: list[dict], checks: list[dict]) -> str:
    head = ["server", "test", "-P"] + [c[0] for c in COLUMNS]
    lines = ["| " + " | ".join(head) + " |", "|---|---|---:|" + "---:|" * len(COLUMNS)]
    for r in rows:
        cells = [r["server"], r["test"], str(r["pipeline"])]
        for _, key, kind in COLUMNS:
            v = r.get(key)
            cells.append(f"{v:.3f}" if kind == "ms" and v is not None else fmt(v, kind))
        lines.append("| " + " | ".join(cells) + " |")
    if checks:
        lines += [
            "",
            "Targets (the issue: kv ≥ 0.8x redis-server on SET and GET at -P 1,"
            " ≥ 0.3x at -P 16; medians of this run):",
            "",
        ]
        lines += [
            "| server | test | -P | target | ratio | verdict |",
            "|---|---|---:|---|---:|---|",
        ]
        for c in checks:
            verdict = "met" if c["met"] else "**missed**"
            verdict += " (within 10 %: noise)" if c["borderline"] else ""
            cells = [
                c["server"],
                c["test"],
                str(c["pipeline"]),
                c["target"],
                fmt(c["ratio"], "ratio"),
                verdict,
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def footnotes(doc: dict) -> list[str]:
    runs, meta = doc["runs"], doc["meta"]
    notes = [f"- skipped {name}: {why}" for name, why in doc["skipped"].items()]
    notes += [
        f"- {name} answered wrongly, not measured: {why}"
        for name, why in doc["wrong_answers"].items()
    ]
    start, end = meta["build_at_start"], meta["build_at_end"]
    if start.get("native_built") != end.get("native_built"):
        notes.append(
            f"- the native module was rebuilt during the run ({start.get('native_built')}"
            f" -> {end.get('native_built')}): the servers ran the build read at the start"
        )
    noisy = [r["other_cpu_pct"] for r in runs if r.get("other_cpu_pct", 0) > QUIET_MAX_PCT]
    if noisy:
        notes.append(
            f"- {len(noisy)} of {len(runs)} runs had other processes using"
            f" {QUIET_MAX_PCT}-{max(noisy):.0f} % of a CPU: the machine was not quiet"
        )
    else:
        notes.append(f"- no recorded run had other processes above {QUIET_MAX_PCT} % of a CPU")
    retried = sum(r.get("attempts", 1) > 1 for r in runs)
    if retried:
        notes.append(f"- {retried} run(s) were retried because other processes were busy")
    failed = [r for r in runs if "error" in r]
    if failed:
        notes.append(f"- {len(failed)} run(s) failed, e.g. {failed[0]['error']}")
    median_of = {(m["server"], m["test"], m["pipeline"]): m["rps"] for m in doc["medians"]}
    off = []
    for r in runs:
        med = median_of.get((r["server"], r["test"], r["pipeline"]))
        if med and "rps" in r and abs(r["rps"] / med - 1) > SPREAD:
            off.append(
                f"{r['server']} {r['test']} -P {r['pipeline']} rep {r['rep'] + 1}"
                f" {r['rps'] / med - 1:+.0%}"
            )
    if off:
        notes.append(
            f"- {len(off)} of {len(runs)} runs were more than {SPREAD:.0%} from their median"
            f" req/s: {'; '.join(off)}"
        )
    else:
        notes.append(f"- every run was within {SPREAD:.0%} of its median req/s")
    elapsed = [r["elapsed_s"] for r in runs if "elapsed_s" in r]
    if elapsed:
        notes.append(f"- runs took {min(elapsed):.1f}-{max(elapsed):.1f} s each")
    return notes


def render(doc: dict) -> str:
    """The markdown report of a run (also of a saved one: --render)."""
    meta = doc["meta"]
    build = meta["build_at_start"]
    where = (
        f"server on CPU {meta['server_cpu']}, redis-benchmark on CPU {meta['client_cpu']}"
        if meta["pinned"]
        else "unpinned"
    )
    head = (
        f"kv benchmark: redis-benchmark -c {meta['clients']}, -n sized for"
        f" ≥ {meta['duration_s']:g} s on the fastest server; medians of {meta['repeat']}"
        f" run(s); {where}; netring --io-threads {meta['io_threads']};"
        f" {meta['redis_server'].split(' sha=')[0]}; {meta['redis_benchmark']};"
        f" {meta['system']}, {meta['cpus']} CPUs, Python {meta['python_version']}; {meta['time']}."
    )
    dirty = ", engine tree dirty" if build.get("engine_tree_dirty") else ""
    prov = (
        f"netring: checkout {build.get('commit')}{dirty}, native module built"
        f" {build.get('native_built')} (read at the start of the run)."
    )
    parts = [head, "", prov, "", report(doc["medians"], doc["targets"]), ""]
    return "\n".join(parts + footnotes(doc)) + "\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--servers",
        default="redis-server,netring",
        help="comma list of redis-server,netring (default: both)",
    )
    ap.add_argument(
        "--backends",
        default="io_uring,epoll",
        help="netring backends (default: both, in the same run)",
    )
    ap.add_argument("--io-threads", type=int, default=1, help="netring IO threads (default 1)")
    ap.add_argument(
        "--tests",
        default=",".join(TESTS),
        help="comma list of redis-benchmark tests (default: %(default)s)",
    )
    ap.add_argument("--pipelines", default="1,16", help="-P values (default: %(default)s)")
    ap.add_argument("--repeat", type=int, help="runs of each (server, test, -P); default 3")
    ap.add_argument(
        "--duration",
        type=float,
        help="size -n for this many seconds on the fastest server; default 4",
    )
    ap.add_argument("--requests", type=int, help="a fixed -n for every run instead")
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: defaults become 1 repeat of ~1 s runs"
    )
    add_noise_args(ap)
    ap.add_argument("--json", metavar="OUT", help="save meta, every run and the medians here")
    ap.add_argument("--render", metavar="JSON", help="only print the report of a saved run")
    args = ap.parse_args()
    if args.repeat is None:
        args.repeat = 1 if args.quick else 3
    if args.duration is None:
        args.duration = 1.0 if args.quick else 4.0
    args.test_list = args.tests.split(",")
    unknown = [t for t in args.test_list if t not in TESTS]
    if unknown:
        ap.error(f"unknown test(s) {unknown}; choose from {list(TESTS)}")
    args.pipeline_list = [int(p) for p in args.pipelines.split(",")]
    if any(p not in PRIME_REQUESTS for p in args.pipeline_list):
        ap.error(f"--pipelines: choose from {list(PRIME_REQUESTS)}")
    return args


def main() -> None:
    args = parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())), end="")
        return
    build = build_info()  # what the servers load, read before they start
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for tool in (REDIS_BENCHMARK, REDIS_CLI):
        if shutil.which(tool) is None:
            sys.exit(f"kv_bench: {tool} is not installed (Debian: apt-get install redis-tools)")
    can_pin = not args.no_pin and shutil.which("taskset") and {0, 1} <= os.sched_getaffinity(0)
    if not can_pin and not args.no_pin:
        print("warning: not pinning (needs taskset and CPUs 0 and 1)", file=sys.stderr)
    pin_server = ["taskset", "-c", SERVER_CPU] if can_pin else []
    pin_client = ["taskset", "-c", CLIENT_CPU] if can_pin else []

    servers, skipped = make_servers(args)
    bad: dict[str, str] = {}
    runs: list[dict] = []
    sizes: dict[str, int] = {}
    try:
        live = [srv for srv in servers if srv.start(pin_server)]
        for srv in list(live):
            why = check(srv)
            if why:
                bad[srv.name] = why
                live.remove(srv)
                srv.stop()
        runs, sizes = run_all(live, args, pin_client)
        for srv in live:  # the SET runs stored redis-benchmark's value
            why = check_after(srv) if srv.alive() and "set" in args.test_list else None
            if why:
                bad[srv.name] = why + " (after the run)"
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        for srv in servers:
            srv.stop()
    for srv in servers:
        if srv.note:
            skipped[srv.name] = srv.note

    rows = medians(runs, [s.name for s in servers if s.name not in bad], args)

    def version(tool: str) -> str:
        if shutil.which(tool) is None:
            return f"{tool} not installed"
        cmd = [tool, "--version"]
        return subprocess.run(cmd, check=False, capture_output=True, text=True).stdout.strip()

    meta = {
        "argv": sys.argv,
        "python": sys.executable,
        "python_version": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
        "cpus": os.cpu_count(),
        "pinned": bool(can_pin),
        "server_cpu": SERVER_CPU,
        "client_cpu": CLIENT_CPU,
        "clients": CLIENTS,
        "io_threads": args.io_threads,
        "time": started,
        "repeat": args.repeat,
        "duration_s": args.duration,
        "requests": sizes,
        "redis_server": version(REDIS_SERVER),
        "redis_benchmark": version(REDIS_BENCHMARK),
        "build_at_start": build,
        "build_at_end": build_info(),
    }
    doc = {
        "meta": meta,
        "skipped": skipped,
        "wrong_answers": bad,
        "runs": runs,
        "medians": rows,
        "targets": verdicts(rows),
    }
    print(render(doc), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(doc, indent=1) + "\n")
    if not rows or bad:
        sys.exit(1)


if __name__ == "__main__":
    main()
