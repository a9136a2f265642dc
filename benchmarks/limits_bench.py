"""Figures for issue #7: what idle connections cost, how fast a server
recovers from descriptor exhaustion, and how many connections it takes per
second — netring beside uvloop (and asyncio).

Usage: limits_bench.py [--runs 3] [--counts 10000,50000] [--servers ...]
                       [--only rss,recovery,churn] [--wait-quiet SECS] [--out PREFIX]

Every server is the same echo (``peers/``: ``EchoProtocol`` on netring,
uvloop or asyncio), pinned to CPU 0; clients run on CPU 1. Each figure is the
median of ``--runs`` runs, the servers interleaved within each run.

- **RSS per idle connection**: the server's RSS with N idle connections (each
  did one 16-byte echo, then sleeps) minus its RSS before them, over N; the
  baseline is taken after the same warm-up traffic for every server (1 s of
  churn, then 2.5 s quiet), and RSS 2.5 s after the last connect. The
  clients are ``limits_hold.py`` processes spread over 127.0.0.x source
  addresses. N is limited by RLIMIT_NOFILE (the server needs N descriptors);
  a count the hard limit cannot hold is reported as not measured, with the
  largest count that fits measured instead. Target: netring ≤ 0.5x uvloop.
- **Recovery from descriptor exhaustion**: the server runs with
  RLIMIT_NOFILE 256 and 512 clients connect; after 2 s exhausted (its CPU use
  over those 2 s is reported too) every client closes and the time until a
  new client's echo comes back is measured.
- **Connections per second**: ``churn/churn.c`` (built to
  ``out/churn``) keeps 64 connections in flight, each connect, a 64-byte
  echo, close, and counts completed ones over 5 s after a 1 s warm-up.
  Server CPU per connection is from /proc. Target: netring ≥ 1.5x uvloop.

Writes ``PREFIX.md`` and ``PREFIX.json`` (default ``benchmarks/results/limits``).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from echo_bench import build_info, machine_busy_pct  # noqa: E402

PEERS = HERE / "peers"
OUT = HERE / "out"
CHURN_SRC = HERE / "churn" / "churn.c"
CHURN = OUT / "churn"
WARMUP_S = 1.0  # churn traffic before an RSS baseline
SERVER_CPU, CLIENT_CPU = "0", "1"
PY = sys.executable
SERVERS: dict[str, list[str]] = {
    "netring[io_uring]": [str(PEERS / "netring_echo.py"), "--backend", "io_uring"],
    "netring[epoll]": [str(PEERS / "netring_echo.py"), "--backend", "epoll"],
    "uvloop": [str(PEERS / "asyncio_echo.py"), "--loop", "uvloop"],
    "asyncio": [str(PEERS / "asyncio_echo.py"), "--loop", "asyncio"],
}
BASELINE = "uvloop"
HOLD_PER_PROCESS = 9000
SOURCES_PER_HOLDER = 8
EXHAUST_LIMIT = 256
QUIET_PCT = 10

_soft, HARD_NOFILE = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (HARD_NOFILE, HARD_NOFILE))


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- servers -------------------------------------------------------------------


class Server:
    def __init__(self, name: str, nofile: int | None = None) -> None:
        self.name = name
        cmd = ["taskset", "-c", SERVER_CPU, PY, *SERVERS[name], "--port", "0"]

        def limit() -> None:
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        logs = OUT / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.log_path = logs / f"limits_{name.replace('[', '_').replace(']', '')}.log"
        with open(self.log_path, "w") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True,
                                         preexec_fn=limit)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().split()
        if not line or line[0] != "READY":
            self.stop()
            raise RuntimeError(f"{name} did not start; see {self.log_path}")
        self.port = int(line[1])
        self.pid = self.proc.pid

    def rss_kib(self) -> int:
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        return 0

    def fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def cpu_split(self) -> tuple[float, float]:
        """User and system CPU seconds so far."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / tick, int(fields[12]) / tick

    def cpu_s(self) -> float:
        return sum(self.cpu_split())

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()


@contextlib.contextmanager
def serving(name: str, nofile: int | None = None) -> Iterator[Server]:
    server = Server(name, nofile)
    try:
        yield server
    finally:
        server.stop()


def echo_once(port: int, timeout: float = 10.0) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(b"ping")
        got = b""
        while len(got) < 4:
            chunk = s.recv(4 - len(got))
            if not chunk:
                raise EOFError("closed before the echo")
            got += chunk


def wait_quiet(limit_s: float) -> float:
    """Wait up to limit_s for a quiet second; return the last busy % seen."""
    deadline = time.monotonic() + limit_s
    busy = machine_busy_pct(1.0)
    while busy > QUIET_PCT and time.monotonic() < deadline:
        busy = machine_busy_pct(1.0)
    return busy


def median_sample(fn: Callable[[], float], n: int = 5, gap: float = 0.2) -> float:
    values = []
    for _ in range(n):
        values.append(fn())
        time.sleep(gap)
    return statistics.median(values)


# --- RSS per idle connection ---------------------------------------------------


def feasible_count() -> int:
    """The most connections one server process can hold here."""
    return (HARD_NOFILE - 1000) // 1000 * 1000


def rss_run(name: str, count: int) -> dict[str, Any]:
    with serving(name) as server:
        echo_once(server.port)
        # Warm-up traffic before the baseline (the same for every server):
        # what a running server has touched whatever its connection count —
        # netring's receive buffers, each page of which the kernel touches
        # on first use — is then in the baseline, not charged to the idle
        # connections. Then a quiet spell for spare-buffer trimming.
        ensure_churn()
        churn(server.port, WARMUP_S, 0.0)
        time.sleep(2.5)
        base_rss, base_fds = median_sample(server.rss_kib), server.fds()
        holders: list[subprocess.Popen[str]] = []
        try:
            left, k = count, 0
            while left:
                n = min(left, HOLD_PER_PROCESS)
                holders.append(subprocess.Popen(
                    ["taskset", "-c", CLIENT_CPU, PY, str(HERE / "limits_hold.py"), "127.0.0.1",
                     str(server.port), str(n), "--sources", str(SOURCES_PER_HOLDER),
                     "--first", str(1 + k * SOURCES_PER_HOLDER)],
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
                left -= n
                k += 1
            for h in holders:
                assert h.stdout is not None
                line = h.stdout.readline().strip()
                if not line.startswith("OPEN"):
                    raise RuntimeError(f"{name}: holder failed: {line}")
            deadline = time.monotonic() + 30
            while server.fds() < base_fds + count and time.monotonic() < deadline:
                time.sleep(0.1)
            time.sleep(2.5)  # settled: as long as the quiet spell before the baseline
            rss = median_sample(server.rss_kib)
            fds = server.fds()
        finally:
            for h in holders:
                with contextlib.suppress(OSError):
                    assert h.stdin is not None
                    h.stdin.write("close\n")
                    h.stdin.flush()
            for h in holders:
                try:
                    h.wait(30)
                except subprocess.TimeoutExpired:
                    h.kill()
                    h.wait()
                for pipe in (h.stdin, h.stdout):
                    if pipe:
                        with contextlib.suppress(OSError):
                            pipe.close()
    return {"server": name, "count": count, "base_rss_mib": round(base_rss / 1024, 1),
            "rss_mib": round(rss / 1024, 1), "fds_held": fds - base_fds,
            "bytes_per_conn": round((rss - base_rss) * 1024 / count)}


# --- recovery from descriptor exhaustion ----------------------------------------


def recovery_run(name: str) -> dict[str, Any]:
    with serving(name, nofile=EXHAUST_LIMIT) as server:
        clients: list[socket.socket] = []
        try:
            for _ in range(2 * EXHAUST_LIMIT):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(("127.0.0.1", server.port))
                clients.append(s)
            last, since = -1, time.monotonic()
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                n = server.fds()
                if n != last:
                    last, since = n, time.monotonic()
                elif time.monotonic() - since > 0.5:
                    break
                time.sleep(0.02)
            held = last
            cpu0, t0 = server.cpu_s(), time.monotonic()
            time.sleep(2.0)
            cpu_share = (server.cpu_s() - cpu0) / (time.monotonic() - t0)
        finally:
            for s in clients:
                s.close()
        t0 = time.monotonic()
        recovered: float | None
        try:
            echo_once(server.port, timeout=15)
            recovered = time.monotonic() - t0
        except OSError:
            recovered = None
        alive = server.proc.poll() is None
    return {"server": name, "descriptors_held": held,
            "exhausted_cpu_pct": round(100 * cpu_share, 1),
            "recovery_s": None if recovered is None else round(recovered, 3),
            "server_survived": alive}


# --- connections per second -------------------------------------------------------


def ensure_churn() -> None:
    if CHURN.exists() and CHURN.stat().st_mtime >= CHURN_SRC.stat().st_mtime:
        return
    OUT.mkdir(parents=True, exist_ok=True)
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise RuntimeError("no C compiler (gcc) to build benchmarks/churn/churn.c")
    subprocess.run([cc, "-O2", "-Wall", "-o", str(CHURN), str(CHURN_SRC)], check=True)


def busy_cpu_s() -> float:
    """CPU seconds the whole machine has been busy (as echo_bench counts it)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(f[0:3]) + sum(f[5:7])) / os.sysconf("SC_CLK_TCK")


def churn(port: int, seconds: float, warmup: float) -> dict[str, Any]:
    """One run of the churn client (pinned to the client CPU): its JSON line."""
    cmd = ["taskset", "-c", CLIENT_CPU, str(CHURN), "127.0.0.1", str(port), "-d", str(seconds),
           "-w", str(warmup), "-c", "64", "-n", "16"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + warmup + 60)
    if done.returncode != 0:
        raise RuntimeError(f"churn failed ({done.returncode}): {done.stdout} {done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def churn_run(name: str, seconds: float, wait_quiet_s: float, retries: int) -> dict[str, Any]:
    with serving(name) as server:
        echo_once(server.port)
        churn(server.port, 1.0, 0.0)  # warm the server up
        for attempt in range(retries + 1):
            wait_quiet(wait_quiet_s)
            user0, sys0 = server.cpu_split()
            busy0, client0 = busy_cpu_s(), children_cpu_s()
            result = churn(server.port, seconds, 0.0)
            client = children_cpu_s() - client0
            user1, sys1 = server.cpu_split()
            server_cpu = (user1 - user0) + (sys1 - sys0)
            others = (busy_cpu_s() - busy0 - server_cpu - client) / result["seconds"]
            if others * 100 <= QUIET_PCT:
                break
            log(f"  others used {others:.0%} of a CPU during the run: "
                + ("again" if attempt < retries else "kept"))
        n = max(1, result["completed"])
    return {"server": name, "conns_per_s": round(result["rate"]),
            "server_cpu_us_per_conn": round(1e6 * server_cpu / n, 1),
            "server_user_us_per_conn": round(1e6 * (user1 - user0) / n, 1),
            "server_sys_us_per_conn": round(1e6 * (sys1 - sys0) / n, 1),
            "server_cpu_pct": round(100 * server_cpu / result["seconds"]),
            "client_cpu_pct": round(100 * client / result["seconds"]),
            "others_cpu_pct": round(100 * others), "retries": attempt,
            "errors": result["errors"], "addr_busy": result["addr_busy"],
            "connect_ms_max": result["connect_ms_max"]}


def children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# --- report -------------------------------------------------------------------------


def med(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None]
    return statistics.median(values) if values else None


def verdict(ratio: float | None, target: float, lower_is_better: bool) -> str:
    if ratio is None:
        return "not measured"
    met = ratio <= target if lower_is_better else ratio >= target
    return "met" if met else "**missed**"


def render(doc: dict[str, Any]) -> str:
    build = doc.get("build") or {}
    dirty = " (engine tree modified)" if build.get("engine_tree_dirty") else ""
    out = [f"Limits figures (issue #7): medians of {doc['runs']} run(s); servers on CPU "
           f"{SERVER_CPU}, clients on CPU {CLIENT_CPU}; {doc['machine']}; "
           f"RLIMIT_NOFILE hard limit {doc['hard_nofile']}; netring at commit "
           f"{build.get('commit')}{dirty}"
           f", native module built {build.get('native_built')}.", ""]
    if doc.get("rss"):
        out += ["### RSS per idle connection", "",
                "| server | idle connections | bytes per connection | RSS before → with them "
                "(MiB) | vs uvloop | target ≤ 0.5x |", "|---|---:|---:|---:|---:|---|"]
        for row in doc["rss"]:
            out.append(f"| {row['server']} | {row['count']:,} | {row['bytes_per_conn']:,} | "
                       f"{row['base_rss_mib']} → {row['rss_mib']} | "
                       f"{fmt_ratio(row.get('ratio'))} | "
                       f"{row.get('verdict', '')} |")
        out += [f"- {note}" for note in doc.get("rss_notes", [])] + [""]
    if doc.get("recovery"):
        out += ["### Recovery from descriptor exhaustion", "",
                f"RLIMIT_NOFILE {EXHAUST_LIMIT} in the server, {2 * EXHAUST_LIMIT} clients; "
                "after 2 s exhausted all close, then one new client's echo is timed.", "",
                "| server | descriptors held | CPU while exhausted | new client served after "
                "| target < 1 s |", "|---|---:|---:|---:|---|"]
        for row in doc["recovery"]:
            s = row["recovery_s"]
            took = "never (15 s)" if s is None else "< 1 ms" if s < 0.0005 else f"{s * 1000:.0f} ms"
            ok = "met" if s is not None and s < 1 else "**missed**"
            out.append(f"| {row['server']} | {row['descriptors_held']} | "
                       f"{row['exhausted_cpu_pct']} % | {took} | "
                       f"{ok if row['server'].startswith('netring') else ''} |")
        out.append("")
    if doc.get("churn"):
        out += ["### Connections per second (connect, 64-byte echo, close; 64 in flight)", "",
                "| server | connections/s | server CPU µs/conn (user + sys) | server CPU "
                "| client CPU | vs uvloop | target ≥ 1.5x |",
                "|---|---:|---:|---:|---:|---:|---|"]
        for row in doc["churn"]:
            out.append(f"| {row['server']} | {row['conns_per_s']:,} | "
                       f"{row['server_cpu_us_per_conn']} ({row['server_user_us_per_conn']} + "
                       f"{row['server_sys_us_per_conn']}) | {row['server_cpu_pct']} % | "
                       f"{row['client_cpu_pct']} % | {fmt_ratio(row.get('ratio'))} | "
                       f"{row.get('verdict', '')} |")
        out.append("")
    out += [f"- {note}" for note in doc.get("notes", [])]
    return "\n".join(out) + "\n"


def fmt_ratio(r: float | None) -> str:
    return "" if r is None else f"{r:.2f}x"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--counts", default="10000,50000", help="idle connection counts")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--only", default="rss,recovery,churn")
    ap.add_argument("--churn-seconds", type=float, default=5.0)
    ap.add_argument("--wait-quiet", type=float, default=30.0,
                    help="before each churn run, wait up to SECS for a quiet second")
    ap.add_argument("--retry-noisy", type=int, default=2,
                    help="run a churn measurement again (up to N times) when other processes "
                    f"used over {QUIET_PCT} %% of a CPU during it")
    ap.add_argument("--out", default=str(HERE / "results" / "limits"))
    ap.add_argument("--render", metavar="JSON", help="only print the table of a saved run")
    args = ap.parse_args()
    if args.render:
        print(render(json.loads(Path(args.render).read_text())), end="")
        return 0
    names = [n for n in args.servers.split(",") if n]
    for n in names:
        if n not in SERVERS:
            ap.error(f"unknown server {n}; known: {', '.join(SERVERS)}")
    parts = set(args.only.split(","))
    counts = [int(c) for c in args.counts.split(",") if c]
    doc: dict[str, Any] = {
        "runs": args.runs, "hard_nofile": HARD_NOFILE, "build": build_info(),
        "machine": f"Linux {platform.release()}, {os.cpu_count()} CPUs, "
                   f"Python {platform.python_version()}",
        "argv": sys.argv, "notes": [], "raw": {},
    }

    if "rss" in parts:
        rss_notes: list[str] = []
        plan: list[int] = []
        for c in counts:
            if c + 1000 > HARD_NOFILE:
                fit = feasible_count()
                rss_notes.append(
                    f"{c:,} idle connections not measured: the server needs {c:,} descriptors "
                    f"and the hard RLIMIT_NOFILE here is {HARD_NOFILE:,} (raising it needs "
                    f"CAP_SYS_RESOURCE); measured at {fit:,} instead")
                if fit not in plan:
                    plan.append(fit)
            elif c not in plan:
                plan.append(c)
        raw: list[dict[str, Any]] = []
        for run in range(args.runs):
            for c in plan:
                for n in names:
                    log(f"rss: run {run + 1}, {n}, {c:,} idle connections")
                    try:
                        raw.append(rss_run(n, c))
                        log(f"  {raw[-1]['bytes_per_conn']:,} B/conn")
                    except Exception as e:  # a failed run is reported, not fatal
                        log(f"  failed: {e}")
                        doc["notes"].append(f"rss {n} {c}: run {run + 1} failed: {e}")
        doc["raw"]["rss"] = raw
        rows = []
        for c in plan:
            base = med([r for r in raw if r["server"] == BASELINE and r["count"] == c],
                       "bytes_per_conn")
            for n in names:
                mine = [r for r in raw if r["server"] == n and r["count"] == c]
                if not mine:
                    continue
                row = {"server": n, "count": c, "runs": len(mine)}
                for key in ("bytes_per_conn", "base_rss_mib", "rss_mib"):
                    row[key] = round(med(mine, key), 2)  # a median of an even count averages
                row["bytes_per_conn"] = round(row["bytes_per_conn"])
                if base and n.startswith("netring"):
                    row["ratio"] = row["bytes_per_conn"] / base
                    row["verdict"] = verdict(row["ratio"], 0.5, lower_is_better=True)
                elif base:
                    row["ratio"] = row["bytes_per_conn"] / base
                rows.append(row)
        doc["rss"], doc["rss_notes"] = rows, rss_notes

    if "recovery" in parts:
        raw = []
        for run in range(args.runs):
            for n in names:
                log(f"recovery: run {run + 1}, {n}")
                try:
                    raw.append(recovery_run(n))
                    log(f"  {raw[-1]}")
                except Exception as e:
                    log(f"  failed: {e}")
                    doc["notes"].append(f"recovery {n}: run {run + 1} failed: {e}")
        doc["raw"]["recovery"] = raw
        rows = []
        for n in names:
            mine = [r for r in raw if r["server"] == n]
            if mine:
                never = any(r["recovery_s"] is None for r in mine)
                rows.append({"server": n, "runs": len(mine),
                             "descriptors_held": med(mine, "descriptors_held"),
                             "exhausted_cpu_pct": med(mine, "exhausted_cpu_pct"),
                             "recovery_s": None if never else med(mine, "recovery_s"),
                             "recovery_s_all": [r["recovery_s"] for r in mine]})
        doc["recovery"] = rows

    if "churn" in parts:
        ensure_churn()
        raw = []
        for run in range(args.runs):
            for n in names:
                log(f"churn: run {run + 1}, {n}")
                try:
                    raw.append(churn_run(n, args.churn_seconds, args.wait_quiet, args.retry_noisy))
                    log(f"  {raw[-1]}")
                except Exception as e:
                    log(f"  failed: {e}")
                    doc["notes"].append(f"churn {n}: run {run + 1} failed: {e}")
        doc["raw"]["churn"] = raw
        base = med([r for r in raw if r["server"] == BASELINE], "conns_per_s")
        rows = []
        for n in names:
            mine = [r for r in raw if r["server"] == n]
            if not mine:
                continue
            row = {"server": n, "runs": len(mine),
                   "conns_per_s": round(med(mine, "conns_per_s") or 0),
                   "conns_per_s_all": [r["conns_per_s"] for r in mine]}
            for key in ("server_cpu_us_per_conn", "server_user_us_per_conn",
                        "server_sys_us_per_conn", "server_cpu_pct", "client_cpu_pct"):
                row[key] = med(mine, key)
            if base:
                row["ratio"] = row["conns_per_s"] / base
                if n.startswith("netring"):
                    row["verdict"] = verdict(row["ratio"], 1.5, lower_is_better=False)
            rows.append(row)
        doc["churn"] = rows
        noisy = [r for r in raw if r["others_cpu_pct"] > QUIET_PCT]
        if noisy:
            doc["notes"].append(
                f"{len(noisy)} of {len(raw)} churn runs had other processes using over "
                f"{QUIET_PCT} % of a CPU even after {args.retry_noisy} retries (noise)")
        retried = sum(r["retries"] for r in raw)
        if retried:
            doc["notes"].append(f"{retried} churn run(s) were repeated because other "
                                "processes were busy")
        errors = sum(r["errors"] for r in raw)
        if errors:
            doc["notes"].append(f"churn: {errors} failed connections in all runs")
    if math.isfinite(os.getloadavg()[0]):
        doc["notes"].append(f"load average at the end: {os.getloadavg()[0]:.2f}")

    md = render(doc)
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(doc, indent=1) + "\n")
    out.with_suffix(".md").write_text(md)
    log(f"wrote {out}.md and {out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
