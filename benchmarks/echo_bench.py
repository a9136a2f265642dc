"""Echo benchmark: netring against uvloop, asyncio and a C epoll server.

Every server runs the same echo workload, driven by one native load generator
(benchmarks/loadgen), in one run; each (server, scenario) is repeated and the
medians are printed as a markdown table with ratios to uvloop. The server is
pinned to CPU 1 and the load generator to CPU 0. See benchmarks/README.md.

    .venv/bin/python benchmarks/echo_bench.py [--quick] [--repeat N] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import queue
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
OUT = HERE / "out"
PEERS = HERE / "peers"
LOADGEN_DIR = HERE / "loadgen"
LOADGEN = OUT / "target" / "release" / "netring-loadgen"
C_SRC = HERE / "c_echo" / "echo.c"
C_ECHO = OUT / "echo"
SERVER_CPU, LOADGEN_CPU = "1", "0"
READY_TIMEOUT_S = 15
PRIME_S = 0.5
QUIET_MAX_PCT = 10  # other processes' CPU above which a run is noisy
SPREAD = 0.10  # a run this far from its median msgs/s is named in the notes
METRICS = (
    "msgs_per_s",
    "p50_us",
    "p99_us",
    "p999_us",
    "server_cpu_us_per_msg",
    "loadgen_cpu_pct",
)


@dataclass(frozen=True)
class Scenario:
    name: str
    size: int
    conns: int
    depth: int
    mode: str = "raw"  # the load generator's framing: raw, lp or line
    extra: tuple[str, ...] = ()  # more load generator arguments (tls_bench.py: --tls ...)
    group: str = ""  # which servers run it: those whose mode is this (default: `mode`)

    @property
    def servers(self) -> str:
        return self.group or self.mode


SCENARIOS = [
    Scenario("64B/50c/d1", 64, 50, 1),
    Scenario("64B/50c/d16", 64, 50, 16),
    Scenario("4KiB/50c/d1", 4096, 50, 1),
    Scenario("64B/1c/d1", 64, 1, 1),
]


# The line a server prints once it listens: the peers' `READY <port>`, or
# `python -m netring serve`'s `netring: serving NAME on H:P (...)`.
READY_LINE = re.compile(r"READY (\d+)|netring: serving \S+ on \S*:(\d+) ")


class Server:
    """One echo server process, started once and kept for the whole run."""

    def __init__(self, name: str, argv: list[str], mode: str = "raw"):
        self.name, self.argv, self.mode = name, argv, mode
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.note = ""  # why it was skipped or stopped early

    def start(self, pin: list[str]) -> bool:
        stem = self.name.replace("[", "-").strip("]")
        stem += "" if self.mode == "raw" else f"-{self.mode}"
        log_path = OUT / "logs" / (stem + ".log")
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "wb") as log:
            self.proc = subprocess.Popen(
                pin + self.argv, stdout=subprocess.PIPE, stderr=log, text=True
            )
        lines: queue.Queue[str | None] = queue.Queue()

        def drain() -> None:  # keep reading so a chatty server never blocks
            for line in self.proc.stdout:
                lines.put(line)
            lines.put(None)

        threading.Thread(target=drain, daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                return self._fail(f"no READY line within {READY_TIMEOUT_S} s", log_path)
            if line is None:
                return self._fail(f"exited with status {self.proc.wait()}", log_path)
            ready = READY_LINE.match(line)
            if ready:
                self.port = int(ready.group(1) or ready.group(2))
                return True

    def _fail(self, why: str, log_path: Path) -> bool:
        self.stop()
        tail = log_path.read_text(errors="replace").strip().splitlines()[-1:]
        self.note = why + "".join(f": {line.strip()}" for line in tail)
        return False

    def alive(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None and not self.note:
            self.note = f"died with status {self.proc.returncode} during the run"
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def ensure_built(prog: str = "echo_bench") -> None:
    """Build the load generator and the C server into out/ when missing or stale."""
    OUT.mkdir(exist_ok=True)
    manifest = LOADGEN_DIR / "Cargo.toml"
    cargo = ["cargo", "build", "--release", "--quiet", "--manifest-path", str(manifest)]
    cargo += ["--target-dir", str(OUT / "target")]
    gcc = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(C_ECHO), str(C_SRC)]
    for target, sources, cmd in [
        (LOADGEN, [manifest, *LOADGEN_DIR.glob("src/*.rs")], cargo),
        (C_ECHO, [C_SRC], gcc),
    ]:
        newest = max(p.stat().st_mtime for p in sources)
        if target.exists() and target.stat().st_mtime >= newest:
            continue
        print(f"building {target.relative_to(HERE)} with {cmd[0]}", file=sys.stderr)
        if shutil.which(cmd[0]) is None or subprocess.run(cmd, check=False).returncode:
            sys.exit(f"{prog}: could not build {target} (is {cmd[0]} installed?)")


def importable(module: str) -> bool:
    probe = [sys.executable, "-c", f"import {module}"]
    return subprocess.run(probe, check=False, capture_output=True).returncode == 0


def make_servers(args: argparse.Namespace) -> tuple[list[Server], dict[str, str]]:
    """The servers asked for, and a note for each one that cannot run here."""
    py, wanted = sys.executable, args.servers.split(",")
    servers, skipped = [], {}
    if "netring" in wanted:
        threads = ["--io-threads", str(args.io_threads)] if args.io_threads else []
        for backend in args.backends.split(","):
            name = f"netring[{backend}]"
            if importable("netring"):
                argv = [py, str(PEERS / "netring_echo.py"), "--port", "0"]
                argv += ["--backend", backend, *threads]
                servers.append(Server(name, argv))
            else:
                skipped[name] = f"`import netring` fails under {py}: build it first (make build)"
    if "aio" in wanted:
        # netring inside asyncio: the loop's own thread drives the engine.
        for loop in ("asyncio", "uvloop"):
            name = f"netring-aio[{loop}]"
            if loop == "uvloop" and not importable("uvloop"):
                skipped[name] = f"uvloop is not installed: {py} -m pip install uvloop"
                continue
            argv = [py, str(PEERS / "aio_echo.py"), "--loop", loop, "--port", "0"]
            servers.append(Server(name, argv))
    for loop in ("uvloop", "aiofastnet", "asyncio"):
        if loop not in wanted:
            continue
        if loop in ("uvloop", "aiofastnet") and not importable(loop):
            skipped[loop] = f"{loop} is not installed: {py} -m pip install {loop}"
            continue
        argv = [py, str(PEERS / "asyncio_echo.py"), "--loop", loop, "--port", "0"]
        servers.append(Server(loop, argv))
    if "c" in wanted:
        servers.append(Server("c-epoll", [str(C_ECHO), "0"]))
    return servers, skipped


def run_loadgen(srv: Server, sc: Scenario, pin: list[str], warmup: float, duration: float) -> dict:
    """One measured run; the load generator samples the server's CPU time itself."""
    opts = {
        "--port": srv.port,
        "--conns": sc.conns,
        "--size": sc.size,
        "--depth": sc.depth,
        "--duration": duration,
        "--warmup": warmup,
        "--mode": sc.mode,
        "--server-pid": srv.proc.pid,
    }
    cmd = pin + [str(LOADGEN)] + [str(x) for kv in opts.items() for x in kv] + list(sc.extra)
    try:
        p = subprocess.run(
            cmd,
            check=False,
            capture_output=True,
            text=True,
            timeout=warmup + duration + 30,
        )
    except subprocess.TimeoutExpired:
        return {"error": "load generator timed out"}
    out = p.stdout.strip().splitlines()
    if p.returncode != 0 or not out:
        err = [line for line in p.stderr.splitlines() if not line.startswith("MEASURE_")]
        return {"error": f"loadgen exit {p.returncode}: " + " | ".join(err[-3:])}
    r = json.loads(out[-1])
    pct = 100 / 1e6 / r["window_s"]
    if r["loadgen_cpu_us"] is not None:
        r["loadgen_cpu_pct"] = r["loadgen_cpu_us"] * pct
    cpu = [r[k] for k in ("machine_cpu_us", "server_cpu_us", "loadgen_cpu_us")]
    if None not in cpu:  # CPU that neither the server nor the load generator used
        r["other_cpu_pct"] = (cpu[0] - cpu[1] - cpu[2]) * pct
    return r


RATIOS = [("msgs_per_s", "rate_vs_base"), ("server_cpu_us_per_msg", "cpu_vs_base")]


def medians(runs: list[dict], scenarios: list[Scenario], names: list[str]) -> list[dict]:
    """One row per (scenario, server name): the median of each metric over its runs."""
    rows = []
    for sc in scenarios:
        for name in dict.fromkeys(names):
            ok = [r for r in runs if r["scenario"] == sc.name and r["server"] == name]
            ok = [r for r in ok if "error" not in r]
            if ok:
                row = {"scenario": sc.name, "server": name, "runs": len(ok)}
                for m in METRICS:
                    vals = [r[m] for r in ok if r.get(m) is not None]
                    row[m] = statistics.median(vals) if vals else None
                rows.append(row)
    return rows


def ratio(row: dict, base: dict | None, metric: str) -> float | None:
    """row[metric] / base[metric], or None when either is unknown."""
    if base is None or row.get(metric) is None or not base.get(metric):
        return None
    return row[metric] / base[metric]


def add_ratios(rows: list[dict], baseline: str) -> None:
    """Each row's ratios to the baseline server's row in the same scenario."""
    bases = {r["scenario"]: r for r in rows if r["server"] == baseline}
    for row in rows:
        for m, key in RATIOS:
            row[key] = ratio(row, bases.get(row["scenario"]), m)


def fmt(v, kind: str) -> str:
    if v is None:
        return "-"
    if kind == "rate":
        return f"{v / 1e6:.2f}M" if v >= 1e6 else f"{v / 1e3:.1f}k"
    if kind == "us":
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    if kind == "ratio":
        return f"{v:.2f}x"
    return f"{v:.0f}%" if kind == "pct" else f"{v:.2f}"


def echo_columns(baseline: str) -> list[tuple[str, str, str]]:
    return [  # (heading, key in the row, format)
        ("msgs/s", "msgs_per_s", "rate"),
        ("p50 µs", "p50_us", "us"),
        ("p99 µs", "p99_us", "us"),
        ("p99.9 µs", "p999_us", "us"),
        ("server CPU µs/msg", "server_cpu_us_per_msg", "cpu"),
        (f"msgs/s vs {baseline}", "rate_vs_base", "ratio"),
        (f"CPU/msg vs {baseline}", "cpu_vs_base", "ratio"),
        ("loadgen CPU", "loadgen_cpu_pct", "pct"),
    ]


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A markdown table: server, scenario, then one column per (heading, key, format)."""
    head = ["server", "scenario"] + [c[0] for c in columns]
    lines = [
        "| " + " | ".join(head) + " |",
        "|" + "---|" * 2 + "---:|" * (len(head) - 2),
    ]
    for r in rows:
        cells = [r["server"], r["scenario"]] + [fmt(r.get(k), kind) for _, k, kind in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def add_run_args(ap: argparse.ArgumentParser) -> None:
    """The options every benchmark driver shares (see finish_run_args)."""
    ap.add_argument("--backends", default="io_uring,epoll",
                    help="netring backends (default: both, in the same run)")
    ap.add_argument(
        "--io-threads",
        type=int,
        default=1,
        help="netring IO threads (0: netring's default)",
    )
    ap.add_argument("--repeat", type=int, help="runs of each (server, scenario); default 3")
    ap.add_argument("--duration", type=float, help="measured seconds per run; default 5")
    ap.add_argument("--warmup", type=float, help="unmeasured seconds before each run; default 1")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: defaults become 1 repeat of 2 s",
    )
    add_noise_args(ap)
    ap.add_argument("--json", metavar="OUT", help="save meta, every run and the medians here")


def add_noise_args(ap: argparse.ArgumentParser) -> None:
    """--no-pin, --wait-quiet and --retry-noisy, shared by the drivers."""
    ap.add_argument("--no-pin", action="store_true", help="do not pin with taskset")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0,
        metavar="SECS",
        help="before each run, wait up to SECS for a second with the machine"
        f" under {QUIET_MAX_PCT} %% busy (default 0: do not wait)",
    )
    ap.add_argument(
        "--retry-noisy",
        type=int,
        default=0,
        metavar="N",
        help="run again, up to N times, a run during which other processes"
        f" used over {QUIET_MAX_PCT} %% of a CPU; the last attempt is kept (default 0)",
    )


def finish_run_args(args: argparse.Namespace) -> None:
    defaults = (1, 2.0, 0.5) if args.quick else (3, 5.0, 1.0)
    for key, default in zip(("repeat", "duration", "warmup"), defaults, strict=True):
        if getattr(args, key) is None:
            setattr(args, key, default)


def pick_scenarios(ap: argparse.ArgumentParser, spec: str, known: list[Scenario]) -> list[Scenario]:
    by_name = {s.name: s for s in known}
    unknown = [n for n in spec.split(",") if n not in by_name]
    if unknown:
        ap.error(f"unknown scenario(s) {unknown}; choose from {list(by_name)}")
    return [by_name[n] for n in spec.split(",")]


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--servers",
        default="netring,aio,uvloop,aiofastnet,asyncio,c",
        help="comma list of netring,aio (netring inside asyncio and uvloop),uvloop,"
             "aiofastnet,asyncio,c (default: all)",
    )
    ap.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma list (default: all): %(default)s",
    )
    ap.add_argument("--baseline", default="uvloop", help="server the ratios are relative to")
    add_run_args(ap)
    args = ap.parse_args()
    finish_run_args(args)
    args.scenario_list = pick_scenarios(ap, args.scenarios, SCENARIOS)
    return args


def machine_busy_pct(seconds: float) -> float:
    """CPU the whole machine used over the next `seconds`, in % of one CPU.

    Counted as the load generator counts it (user, nice, system, irq, softirq).
    """

    def busy_ticks() -> int:
        f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(f[0:3]) + sum(f[5:7])

    before = busy_ticks()
    time.sleep(seconds)
    return (busy_ticks() - before) * 100 / os.sysconf("SC_CLK_TCK") / seconds


def wait_quiet(limit_s: float) -> None:
    """Wait (up to limit_s) for one second in which the machine is nearly idle."""
    deadline, said = time.monotonic() + limit_s, False
    while (busy := machine_busy_pct(1.0)) > QUIET_MAX_PCT:
        if time.monotonic() >= deadline:
            print(f"  still {busy:.0f} % busy after {limit_s:g} s; running anyway", file=sys.stderr)
            return
        if not said:
            print(f"  machine {busy:.0f} % busy: waiting up to {limit_s:g} s", file=sys.stderr)
            said = True


def measure(srv: Server, sc: Scenario, pin: list[str], args: argparse.Namespace) -> dict:
    """One recorded run; with --retry-noisy, run again while other processes were busy."""
    retries = getattr(args, "retry_noisy", 0)
    for attempt in range(retries + 1):
        if getattr(args, "wait_quiet", 0):
            wait_quiet(args.wait_quiet)
        r = run_loadgen(srv, sc, pin, args.warmup, args.duration)
        r["attempts"] = attempt + 1
        other = r.get("other_cpu_pct", 0)
        if other <= QUIET_MAX_PCT or attempt == retries:
            return r
        print(f"  {sc.name} {srv.name}: other processes {other:.0f} % CPU, again", file=sys.stderr)
    return r


def run_all(
    scenarios: list[Scenario],
    live: list[Server],
    args: argparse.Namespace,
    pin: list[str],
) -> list[dict]:
    """Every repetition runs each scenario on each server of its mode, in a rotated order."""
    for srv in live:
        # NOTE: a fresh CPython server is ~4x slower per message on its first
        # connections: asyncio's 256 KiB recv buffers are mmap'd (mmap, mremap,
        # munmap per read) until glibc's dynamic mmap threshold rises. One short
        # unrecorded run per server reaches the steady state first.
        first = next((sc for sc in scenarios if sc.servers == srv.mode), None)
        if first is None:
            continue
        r = run_loadgen(srv, first, pin, warmup=0.0, duration=PRIME_S)
        label = srv.name if srv.mode == "raw" else f"{srv.name} ({srv.mode})"
        print(f"primed {label}: {r.get('error', 'ok')}", file=sys.stderr)
    runs: list[dict] = []
    for rep in range(args.repeat):
        for sc in scenarios:
            mine = [srv for srv in live if srv.mode == sc.servers]
            k = rep % max(1, len(mine))
            for srv in mine[k:] + mine[:k]:
                if not srv.alive():
                    continue
                r = measure(srv, sc, pin, args)
                r.update(server=srv.name, scenario=sc.name, rep=rep)
                runs.append(r)
                rate, p99 = fmt(r.get("msgs_per_s"), "rate"), fmt(r.get("p99_us"), "us")
                cpu = fmt(r.get("server_cpu_us_per_msg"), "cpu")
                msg = r.get("error") or f"{rate} msg/s, p99 {p99} µs, {cpu} CPU µs/msg"
                if r.get("other_cpu_pct", 0) > QUIET_MAX_PCT:
                    msg += f" (other processes: {r['other_cpu_pct']:.0f} % CPU)"
                line = f"[{rep + 1}/{args.repeat}] {sc.name:16} {srv.name:18} {msg}"
                print(line, file=sys.stderr)
    return runs


def pinning(args: argparse.Namespace) -> tuple[bool, list[str], list[str]]:
    """(pinned?, taskset prefix for servers, taskset prefix for the load generator)."""
    can_pin = not args.no_pin and shutil.which("taskset") and {0, 1} <= os.sched_getaffinity(0)
    if not can_pin and not args.no_pin:
        print("warning: not pinning (needs taskset and CPUs 0 and 1)", file=sys.stderr)
    pin_server = ["taskset", "-c", SERVER_CPU] if can_pin else []
    pin_gen = ["taskset", "-c", LOADGEN_CPU] if can_pin else []
    return bool(can_pin), pin_server, pin_gen


def run_servers(
    servers: list[Server],
    scenarios: list[Scenario],
    args: argparse.Namespace,
    pins: tuple[bool, list[str], list[str]],
) -> tuple[list[dict], dict[str, str]]:
    """Start every server, run everything, stop them; (runs, notes on servers that failed)."""
    _, pin_server, pin_gen = pins
    runs: list[dict] = []
    try:
        live = [srv for srv in servers if srv.start(pin_server)]
        runs = run_all(scenarios, live, args, pin_gen)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        for srv in servers:
            srv.stop()
    notes = {}
    for srv in servers:
        if srv.note:
            notes[srv.name if srv.mode == "raw" else f"{srv.name} ({srv.mode})"] = srv.note
    return runs, notes


def headline(title: str, args: argparse.Namespace, pinned: bool) -> str:
    where = f"server on CPU {SERVER_CPU}, load generator on CPU {LOADGEN_CPU}"
    where = where if pinned else "unpinned"
    return (
        f"{title}: medians of {args.repeat} run(s)"
        f" of {args.duration:g} s after {args.warmup:g} s warm-up; {where};"
        f" {platform.system()} {platform.release()}, {os.cpu_count()} CPUs,"
        f" Python {platform.python_version()}."
    )


def footnotes(runs: list[dict], skipped: dict[str, str]) -> list[str]:
    """Skipped servers, noisy runs and failed runs, one markdown bullet each."""
    notes = [f"- skipped {name}: {why}" for name, why in skipped.items()]
    noisy = [r["other_cpu_pct"] for r in runs if r.get("other_cpu_pct", 0) > QUIET_MAX_PCT]
    if noisy:
        notes.append(
            f"- {len(noisy)} of {len(runs)} runs had other processes using"
            f" {QUIET_MAX_PCT}-{max(noisy):.0f} % of a CPU: the machine was not quiet"
        )
    retried = sum(r.get("attempts", 1) > 1 for r in runs)
    if retried:
        notes.append(f"- {retried} run(s) were retried because other processes were busy")
    failed = sum("error" in r for r in runs)
    if failed:
        notes.append(f"- {failed} run(s) failed; see the progress lines (stderr)")
    notes.extend(spread_note(runs))
    return notes


def spread_note(runs: list[dict]) -> list[str]:
    """Name every run more than SPREAD from its (scenario, server) median msgs/s:
    the VM has slow phases, and a median of a few runs can land in one."""
    rates: dict[tuple[str, str], list[float]] = {}
    for r in runs:
        if r.get("msgs_per_s") is not None:
            rates.setdefault((r["scenario"], r["server"]), []).append(r["msgs_per_s"])
    med = {k: statistics.median(v) for k, v in rates.items()}
    off = [
        f"{r['server']} {r['scenario']} rep {r.get('rep', 0) + 1} {r['msgs_per_s'] / m - 1:+.0%}"
        for r in runs
        if r.get("msgs_per_s") is not None
        and (m := med[(r["scenario"], r["server"])]) > 0
        and abs(r["msgs_per_s"] / m - 1) > SPREAD
    ]
    counted = sum(len(v) for v in rates.values())
    if not counted:
        return []
    if not off:
        return [f"- every run was within {SPREAD:.0%} of its median msgs/s"]
    return [
        f"- {len(off)} of {counted} runs were more than {SPREAD:.0%} from their median"
        f" msgs/s: {'; '.join(off)}"
    ]


def build_info() -> dict:
    """Which netring was measured: the checkout's commit, and the native module's mtime."""
    git = ["git", "-C", str(HERE), "rev-parse", "--short", "HEAD"]
    head = subprocess.run(git, check=False, capture_output=True, text=True).stdout.strip()
    status = ["git", "-C", str(HERE.parent), "status", "--porcelain", "--", "crates", "python"]
    dirty = subprocess.run(status, check=False, capture_output=True, text=True).stdout.strip()
    native = sorted((HERE.parent / "python" / "netring").glob("_native*.so"))
    built = None
    if native:
        built = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(native[0].stat().st_mtime))
    return {"commit": head or None, "engine_tree_dirty": bool(dirty), "native_built": built}


def save_json(path: str, args: argparse.Namespace, pinned: bool, doc: dict) -> None:
    meta = {
        "argv": sys.argv,
        "python": sys.executable,
        "pinned": pinned,
        "kernel": platform.release(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "repeat": args.repeat,
        "duration_s": args.duration,
        "warmup_s": args.warmup,
        **build_info(),
    }
    Path(path).write_text(json.dumps({"meta": meta, **doc}, indent=1) + "\n")


def main() -> None:
    args = parse_args()
    ensure_built()
    pins = pinning(args)
    servers, skipped = make_servers(args)
    runs, notes = run_servers(servers, args.scenario_list, args, pins)
    skipped |= notes

    rows = medians(runs, args.scenario_list, [srv.name for srv in servers])
    add_ratios(rows, args.baseline)
    print(headline("Echo benchmark, raw mode", args, pins[0]) + "\n")
    print(table(rows, echo_columns(args.baseline)))
    for note in footnotes(runs, skipped):
        print("\n" + note)
    if args.json:
        save_json(args.json, args, pins[0], {"skipped": skipped, "runs": runs, "medians": rows})
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    main()
