"""Inside-asyncio benchmark (#18): netring hosted by the asyncio loop's own
thread against uvloop, aiofastnet and granian, with the same application
code on each.

Four parts, each server pinned to CPU 1 and its load to CPU 0, every
(server, scenario) repeated in a rotated order and the medians reported:

- **protocol**: the same ``asyncio.Protocol`` echo (peers/echo_protocol.py)
  through ``netring.aio.create_server`` on the stdlib loop and on uvloop,
  against uvloop's and aiofastnet's transports (64 B x 50 at depth 1 and
  16, 4 KiB x 50), under the native load generator;
- **streams**: ``asyncio.start_server`` with ``readexactly`` / ``write`` /
  ``drain`` (a length-prefixed echo, peers/app_server.py) on
  ``netring.aio.new_event_loop`` loops against uvloop's and aiofastnet's;
- **websockets**: the websockets server echoing 64 B messages to 50
  connections (the load generator's ws mode), on each loop;
- **http**: uvicorn (httptools, ``loop="none"``) and aiohttp serving a
  "hello world" with keep-alive to 50 connections of ``wrk`` (Debian's),
  on each loop, and granian (one worker) serving the same ASGI app;
- **https**: the same over TLS 1.3 (a throwaway trustme certificate, ECDSA
  P-256): uvicorn's ``ssl_certfile``/``ssl_keyfile`` and aiohttp's
  ``ssl_context``, each loop serving the ``ssl.SSLContext`` with its own TLS
  (netring's engine through ``install()``'s ``ssl=``, uvloop's SSL
  protocol, aiofastnet's transports), and granian's ``--ssl-*``.

On netring the application runs on ``netring.aio.new_event_loop(loop=...)``
(what ``install()`` gives ``asyncio.run``), unchanged. The targets of #18
are checked at the end.

    .venv/bin/python benchmarks/aio_bench.py [--quick] [--repeat N] [--json OUT] > aio.md
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from echo_bench import (
    PEERS,
    PRIME_S,
    Scenario,
    Server,
    add_noise_args,
    ensure_built,
    finish_run_args,
    footnotes,
    headline,
    importable,
    machine_busy_pct,
    make_servers,
    medians,
    pinning,
    ratio,
    run_servers,
    save_json,
    table,
    wait_quiet,
)

PROTOCOL = [
    Scenario("64B/50c/d1", 64, 50, 1),
    Scenario("64B/50c/d16", 64, 50, 16),
    Scenario("4KiB/50c/d1", 4096, 50, 1),
]
STREAMS = [
    Scenario("streams 64B/50c/d1", 64, 50, 1, mode="lp", group="streams"),
    Scenario("streams 64B/50c/d16", 64, 50, 16, mode="lp", group="streams"),
]
WEBSOCKETS = [Scenario("ws 64B/50c/d1", 64, 50, 1, mode="ws", group="ws")]
LOOPS = ("netring", "netring-asyncio", "uvloop", "aiofastnet")
HTTP_APPS = ("uvicorn", "aiohttp")
HTTP_CONNS = 50
PARTS = ("protocol", "streams", "ws", "http", "https")

# Targets of issue #18 (medians, same run).
PROTO_RATE_VS_UVLOOP, PROTO_CPU_VS_UVLOOP = 1.1, 0.9
STREAMS_RATE_VS_UVLOOP = 1.3
HTTP_RATE_VS_UVLOOP = 1.2


def app_servers(app: str, mode: str, extra: tuple[str, ...] = ()) -> list[Server]:
    """The peers/app_server.py application on each loop, as servers of `mode`."""
    py = sys.executable
    return [
        Server(f"{app}[{loop}]", [py, str(PEERS / "app_server.py"), "--app", app, "--loop", loop,
                                  *extra], mode=mode)
        for loop in LOOPS
    ]


# --- HTTP under wrk ------------------------------------------------------------------------

WRK_LATENCY = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
WRK_RATE = re.compile(r"^Requests/sec:\s+([\d.]+)", re.M)
WRK_TOTAL = re.compile(r"^\s+(\d+) requests in", re.M)
WRK_BAD = re.compile(r"Non-2xx or 3xx responses: (\d+)|Socket errors: (.*)$", re.M)
UNIT_US = {"us": 1.0, "ms": 1e3, "s": 1e6}


def tree_cpu_ticks(pid: int) -> int:
    """utime + stime of `pid` and every live descendant (granian's worker), in ticks."""
    parents: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        total += ticks.get(p, 0)
        todo += [c for c, parent in parents.items() if parent == p]
    return total


def wait_accepting(port: int, limit_s: float = 15.0) -> bool:
    end = time.monotonic() + limit_s
    while time.monotonic() < end:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return True
        except OSError:
            time.sleep(0.1)
    return False


def run_wrk(srv: Server, pin: list[str], duration: float, scheme: str = "http") -> dict:
    """One wrk run; the server's CPU (its whole process tree) sampled around it."""
    url = f"{scheme}://127.0.0.1:{srv.port}/"
    cmd = [*pin, "wrk", "-t1", f"-c{HTTP_CONNS}", f"-d{duration:g}s", "--latency", url]
    hz = os.sysconf("SC_CLK_TCK")
    before, busy_at = tree_cpu_ticks(srv.proc.pid), time.monotonic()
    try:
        p = subprocess.run(cmd, check=False, capture_output=True, text=True,
                           timeout=duration + 30)
    except subprocess.TimeoutExpired:
        return {"error": "wrk timed out"}
    window = time.monotonic() - busy_at
    after = tree_cpu_ticks(srv.proc.pid)
    rate, total = WRK_RATE.search(p.stdout), WRK_TOTAL.search(p.stdout)
    if p.returncode != 0 or rate is None or total is None:
        return {"error": f"wrk exit {p.returncode}: {(p.stderr or p.stdout).strip()[-200:]}"}
    r: dict = {"msgs_per_s": float(rate.group(1)), "requests": int(total.group(1))}
    for pct, val, unit in WRK_LATENCY.findall(p.stdout):
        r[f"p{pct}_us"] = float(val) * UNIT_US[unit]
    bad = WRK_BAD.findall(p.stdout)
    if bad:
        r["error"] = "wrk: " + "; ".join(a or b for a, b in bad)
    cpu_us = (after - before) / hz * 1e6
    r["server_cpu_us_per_msg"] = cpu_us / max(1, r["requests"])
    r["server_cpu_pct"] = cpu_us / window / 1e4
    return r


def http_servers(tls: tuple[str, ...] = ()) -> list[Server]:
    """The HTTP servers; with ``tls`` (``--tls CERT KEY``) serving HTTPS."""
    servers = [srv for app in HTTP_APPS for srv in app_servers(app, "http", tls)]
    if importable("granian"):
        servers.insert(len(LOOPS), Server("granian", [sys.executable,
                                                       str(PEERS / "granian_hello.py"), *tls],
                                          mode="http"))
    return servers


def https_files(where: str) -> tuple[str, ...]:
    """``--tls CERT KEY`` for a throwaway certificate made in `where`."""
    from tls_bench import make_certs

    certs = make_certs(Path(where), "ecdsa")
    return ("--tls", certs["cert"], certs["key"])


def run_http(args: argparse.Namespace, pins: tuple[bool, list[str], list[str]],
             tls: tuple[str, ...] = ()) -> tuple[list[dict], dict[str, str]]:
    """Every HTTP server under wrk: started, primed, then measured in a
    rotated order; with ``tls``, over HTTPS."""
    _, pin_server, pin_gen = pins
    scheme = "https" if tls else "http"
    servers, notes, runs = http_servers(tls), {}, []
    if shutil.which("wrk") is None:
        return [], {"http": "wrk is not installed (apt-get install wrk)"}
    try:
        live = []
        for srv in servers:
            if srv.start(pin_server) and wait_accepting(srv.port):
                r = run_wrk(srv, pin_gen, PRIME_S * 2, scheme)
                print(f"primed {srv.name} ({scheme}): {r.get('error', 'ok')}", file=sys.stderr)
                live.append(srv)
        for rep in range(args.repeat):
            k = rep % max(1, len(live))
            for srv in live[k:] + live[:k]:
                if not srv.alive():
                    continue
                if args.wait_quiet:
                    wait_quiet(args.wait_quiet)
                time.sleep(args.warmup)
                r = run_wrk(srv, pin_gen, args.duration, scheme)
                r.update(server=srv.name, scenario=f"{scheme} hello/{HTTP_CONNS}c", rep=rep)
                runs.append(r)
                msg = r.get("error") or (f"{r['msgs_per_s'] / 1e3:.1f}k req/s,"
                                         f" {r['server_cpu_us_per_msg']:.2f} CPU µs/req")
                print(f"[{rep + 1}/{args.repeat}] {scheme} {srv.name:22} {msg}", file=sys.stderr)
    finally:
        for srv in servers:
            srv.stop()
            if srv.note:
                notes[f"{srv.name} ({scheme})"] = srv.note
    return runs, notes


# --- report -----------------------------------------------------------------------------------

def baseline(row: dict) -> str:
    """The row's reference: the same application on uvloop (granian's: uvicorn's)."""
    name = row["server"]
    if name in ("netring-aio[asyncio]", "netring-aio[uvloop]", "uvloop", "aiofastnet"):
        return "uvloop"
    app = name.split("[")[0]
    return f"{'uvicorn' if app == 'granian' else app}[uvloop]"


def add_ratios(rows: list[dict]) -> None:
    """Ratios to the baseline's row (and its aiofastnet twin) in the same scenario."""
    by = {(r["scenario"], r["server"]): r for r in rows}
    for row in rows:
        name = baseline(row)
        base = by.get((row["scenario"], name))
        fast = by.get((row["scenario"], name.replace("uvloop", "aiofastnet")))
        row["rate_vs_base"] = ratio(row, base, "msgs_per_s")
        row["cpu_vs_base"] = ratio(row, base, "server_cpu_us_per_msg")
        row["rate_vs_fast"] = ratio(row, fast, "msgs_per_s")


COLUMNS = [
    ("msgs/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("server CPU µs/msg", "server_cpu_us_per_msg", "cpu"),
    ("msgs/s vs uvloop", "rate_vs_base", "ratio"),
    ("CPU/msg vs uvloop", "cpu_vs_base", "ratio"),
    ("msgs/s vs aiofastnet", "rate_vs_fast", "ratio"),
]


def verdict(ok: bool, what: str) -> str:
    return f"- {'met' if ok else 'MISSED'}: {what}"


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    by = {(r["scenario"], r["server"]): r for r in rows}
    for row in rows:
        name, sc = row["server"], row["scenario"]
        rate, cpu, fast = row.get("rate_vs_base"), row.get("cpu_vs_base"), row.get("rate_vs_fast")
        if name.startswith("netring-aio") and rate is not None and cpu is not None:
            out.append(verdict(rate >= PROTO_RATE_VS_UVLOOP and cpu <= PROTO_CPU_VS_UVLOOP
                               and (fast is None or fast >= 1.0),
                               f"{name} {sc}: msgs/s {rate:.2f}x uvloop"
                               f" (>= {PROTO_RATE_VS_UVLOOP}),"
                               f" CPU/msg {cpu:.2f}x (<= {PROTO_CPU_VS_UVLOOP}), msgs/s"
                               f" {fast or 0:.2f}x aiofastnet (>= 1)"))
        elif name.startswith("streams[netring") and rate is not None:
            out.append(verdict(rate >= STREAMS_RATE_VS_UVLOOP,
                               f"{name} {sc}: {rate:.2f}x uvloop's streams"
                               f" (>= {STREAMS_RATE_VS_UVLOOP})"))
        elif name.split("[")[0] in ("uvicorn", "aiohttp", "ws") and "[netring" in name \
                and rate is not None:
            line = (f"{name} {sc}: {rate:.2f}x on uvloop (>= {HTTP_RATE_VS_UVLOOP}),"
                    f" {fast or 0:.2f}x on aiofastnet")
            ok = rate >= HTTP_RATE_VS_UVLOOP
            granian = by.get((sc, "granian"))
            if name.startswith("uvicorn") and granian is not None:
                vs = ratio(row, granian, "msgs_per_s")
                line += f", {vs or 0:.2f}x granian (>= 1)"
                ok = ok and vs is not None and vs >= 1.0
            out.append(verdict(ok, line))
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parts", default=",".join(PARTS),
                    help="comma list of %(default)s (default: all)")
    ap.add_argument("--repeat", type=int, help="runs of each (server, scenario); default 3")
    ap.add_argument("--duration", type=float, help="measured seconds per run; default 5")
    ap.add_argument("--warmup", type=float, help="unmeasured seconds before each run; default 1")
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat of 2 s")
    add_noise_args(ap)
    ap.add_argument("--json", metavar="OUT", help="save meta, every run and the medians here")
    args = ap.parse_args()
    finish_run_args(args)
    args.part_list = args.parts.split(",")
    unknown = set(args.part_list) - set(PARTS)
    if unknown:
        ap.error(f"unknown part(s) {sorted(unknown)}; choose from {PARTS}")
    # What echo_bench.make_servers reads: netring inside asyncio (both
    # loops), uvloop and aiofastnet, on the engine's default backend.
    args.servers, args.backends, args.io_threads = "aio,uvloop,aiofastnet", "", 1
    return args


def main() -> None:
    args = parse_args()
    ensure_built("aio_bench")
    pins = pinning(args)
    scenarios: list[Scenario] = []
    servers: list[Server] = []
    skipped: dict[str, str] = {}
    if "protocol" in args.part_list:
        proto, skipped = make_servers(args)
        servers += proto
        scenarios += PROTOCOL
    if "streams" in args.part_list:
        servers += app_servers("streams", "streams")
        scenarios += STREAMS
    if "ws" in args.part_list:
        servers += app_servers("ws", "ws")
        scenarios += WEBSOCKETS
    runs: list[dict] = []
    if scenarios:
        runs, notes = run_servers(servers, scenarios, args, pins)
        skipped |= notes
    names = [srv.name for srv in servers]
    http_runs: list[dict] = []
    if "http" in args.part_list:
        http_runs, notes = run_http(args, pins)
        skipped |= notes
        scenarios.append(Scenario(f"http hello/{HTTP_CONNS}c", 0, HTTP_CONNS, 1, group="http"))
        names += [srv.name for srv in http_servers()]
    if "https" in args.part_list:
        with tempfile.TemporaryDirectory() as where:
            tls_runs, notes = run_http(args, pins, https_files(where))
        http_runs += tls_runs
        skipped |= notes
        scenarios.append(Scenario(f"https hello/{HTTP_CONNS}c", 0, HTTP_CONNS, 1, group="http"))
        names += [srv.name for srv in http_servers() if srv.name not in names]
    rows = medians(runs + http_runs, scenarios, names)
    add_ratios(rows)
    print(headline("Inside-asyncio benchmark", args, pins[0]) + "\n")
    print(table(rows, COLUMNS))
    checks = verdicts(rows)
    if checks:
        print("\nTargets (#18):\n")
        print("\n".join(checks))
    print(f"\n- machine CPU use just before the report: {machine_busy_pct(1.0):.0f} % of one CPU")
    for note in footnotes(runs + http_runs, skipped):
        print("\n" + note)
    if args.json:
        save_json(args.json, args, pins[0],
                  {"skipped": skipped, "runs": runs + http_runs, "medians": rows})
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    main()
