"""TLS echo benchmark: netring's engine TLS against aiofastnet, asyncio and uvloop
with ``ssl=``, and a C OpenSSL echo server (the ceiling).

Every Python server runs the same ``asyncio.Protocol`` echo
(peers/echo_protocol.py) over TLS 1.3; the load generator (benchmarks/loadgen,
``--tls``) offers only TLS_AES_128_GCM_SHA256 and X25519, so every server does
the same crypto, and it completes every handshake before its measured window.
The certificate is a throwaway one from a trustme CA made at start-up (never
written outside a temporary directory). Same pinning, repetitions, rotation
and medians as echo_bench.py; ratios are to aiofastnet and to the C OpenSSL
echo, and the issue's targets (#15) are checked at the end. See
benchmarks/README.md ("TLS benchmark").

    .venv/bin/python benchmarks/tls_bench.py [--quick] [--repeat N] [--json OUT] > tls.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from echo_bench import (
    C_ECHO,
    HERE,
    OUT,
    PEERS,
    Scenario,
    Server,
    add_run_args,
    build_info,
    ensure_built,
    finish_run_args,
    fmt,
    footnotes,
    headline,
    importable,
    pick_scenarios,
    pinning,
    ratio,
    run_all,
    run_loadgen,
    save_json,
    table,
)
from udp_bench import provenance

C_TLS_SRC = HERE / "c_echo" / "tls_echo.c"
C_TLS = OUT / "tls_echo"
SERVER_NAME = "localhost"  # the name the certificate is issued for (and 127.0.0.1)

TLS, PLAIN = "tls", "raw"  # server groups: every TLS server; plain ones for the TLS/plain ratio
AFN, ASYNCIO, UVLOOP = "aiofastnet", "asyncio", "uvloop"
C_TLS_NAME, C_PLAIN = "c-openssl", "c-epoll"
MESSAGES = ["64B/50c/d1", "64B/50c/d16", "4KiB/50c/d1", "64B/1c/d1"]
BULK, HANDSHAKE, PLAIN_D16 = "bulk 1MiB/4c/d1", "handshake/16c", "plain 64B/50c/d16"
SCENARIOS = [
    Scenario("64B/50c/d1", 64, 50, 1, group=TLS),
    Scenario("64B/50c/d16", 64, 50, 16, group=TLS),
    Scenario("4KiB/50c/d1", 4096, 50, 1, group=TLS),
    Scenario("64B/1c/d1", 64, 1, 1, group=TLS),
    # 1 MiB messages, echoed as they stream: MB/s and server CPU per MB
    Scenario(BULK, 1 << 20, 4, 1, group=TLS),
    # connect, full handshake (no resumption), one 64 B echo, close_notify, close
    Scenario(HANDSHAKE, 64, 16, 1, extra=("--churn",), group=TLS),
    # the same echo without TLS, for TLS's cost over plain netring (and plain C)
    Scenario(PLAIN_D16, 64, 50, 16, group=PLAIN),
]
ALL_SERVERS = "netring,aiofastnet,uvloop,asyncio,c,plain"
METRICS = (
    "msgs_per_s",
    "p50_us",
    "p99_us",
    "server_cpu_us_per_msg",
    "server_cpu_pct",
    "loadgen_cpu_pct",
    "mb_per_s",
    "cpu_us_per_mb",
    "handshake_ms",
)
RATIOS = [  # (key, baseline server, metric)
    ("rate_vs_afn", AFN, "msgs_per_s"),
    ("cpu_vs_afn", AFN, "server_cpu_us_per_msg"),
    ("rate_vs_c", C_TLS_NAME, "msgs_per_s"),
    ("cpu_vs_c", C_TLS_NAME, "server_cpu_us_per_msg"),
    ("rate_vs_asyncio", ASYNCIO, "msgs_per_s"),
]
# The issue's targets, per netring backend: (what, scenarios, ratio key, comparison, threshold).
CPU_SCENARIOS = ["64B/50c/d1", "64B/50c/d16", "4KiB/50c/d1"]
TLS_SCENARIOS = [*MESSAGES, BULK, HANDSHAKE]
TARGETS = [
    ("server CPU/msg ≤ 0.9x aiofastnet", CPU_SCENARIOS, "cpu_vs_afn", "<=", 0.9),
    ("server CPU/msg ≤ 1.05x C OpenSSL", CPU_SCENARIOS, "cpu_vs_c", "<=", 1.05),
    ("msgs/s ≥ aiofastnet", TLS_SCENARIOS, "rate_vs_afn", ">=", 1.0),
    ("msgs/s ≥ 2.5x asyncio", TLS_SCENARIOS, "rate_vs_asyncio", ">=", 2.5),
    ("bulk server CPU/MB ≤ 0.9x aiofastnet", [BULK], "cpu_vs_afn", "<=", 0.9),
    ("server CPU/handshake ≤ C OpenSSL", [HANDSHAKE], "cpu_vs_c", "<=", 1.0),
    ("TLS CPU/msg ≤ 1.6x plain netring", ["64B/50c/d16"], "tls_vs_plain", "<=", 1.6),
]
BORDERLINE = 0.10  # a verdict this close to its threshold is within run-to-run noise
ALLOC_CHECK_S = 1.0  # seconds of 64B/50c/d1 load per server under strace, after the runs
ALLOC_CALLS = ("mmap", "munmap", "mremap")

MSG_COLUMNS = [  # (heading, key in the row, format)
    ("msgs/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("server CPU µs/msg", "server_cpu_us_per_msg", "cpu"),
    ("msgs/s vs aiofastnet", "rate_vs_afn", "ratio"),
    ("CPU/msg vs aiofastnet", "cpu_vs_afn", "ratio"),
    ("msgs/s vs C", "rate_vs_c", "ratio"),
    ("CPU/msg vs C", "cpu_vs_c", "ratio"),
    ("msgs/s vs asyncio", "rate_vs_asyncio", "ratio"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("loadgen CPU", "loadgen_cpu_pct", "pct"),
]
BULK_COLUMNS = [
    ("MB/s", "mb_per_s", "cpu"),
    ("p50 µs", "p50_us", "us"),
    ("server CPU µs/MB", "cpu_us_per_mb", "cpu"),
    ("MB/s vs aiofastnet", "rate_vs_afn", "ratio"),
    ("CPU/MB vs aiofastnet", "cpu_vs_afn", "ratio"),
    ("MB/s vs C", "rate_vs_c", "ratio"),
    ("CPU/MB vs C", "cpu_vs_c", "ratio"),
    ("MB/s vs asyncio", "rate_vs_asyncio", "ratio"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("loadgen CPU", "loadgen_cpu_pct", "pct"),
]
HANDSHAKE_COLUMNS = [
    ("handshakes/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("server CPU µs/handshake", "server_cpu_us_per_msg", "cpu"),
    ("hs/s vs aiofastnet", "rate_vs_afn", "ratio"),
    ("CPU/hs vs aiofastnet", "cpu_vs_afn", "ratio"),
    ("hs/s vs C", "rate_vs_c", "ratio"),
    ("CPU/hs vs C", "cpu_vs_c", "ratio"),
    ("hs/s vs asyncio", "rate_vs_asyncio", "ratio"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("loadgen CPU", "loadgen_cpu_pct", "pct"),
]
PLAIN_COLUMNS = [
    ("msgs/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("server CPU µs/msg", "server_cpu_us_per_msg", "cpu"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("loadgen CPU", "loadgen_cpu_pct", "pct"),
]


def make_certs(where: Path, key_type: str) -> dict[str, str]:
    """A throwaway CA and a certificate for localhost and 127.0.0.1 (trustme)."""
    import trustme

    ca = trustme.CA(key_type=getattr(trustme.KeyType, key_type.upper()))
    leaf = ca.issue_cert(SERVER_NAME, "127.0.0.1")
    paths = {k: str(where / f"{k}.pem") for k in ("ca", "cert", "key")}
    ca.cert_pem.write_to_path(paths["ca"])
    leaf.private_key_pem.write_to_path(paths["key"])
    with open(paths["cert"], "wb") as f:  # the chain, leaf first
        for blob in leaf.cert_chain_pems:
            f.write(blob.bytes())
    return paths


def build_c_tls() -> str | None:
    """The C OpenSSL echo into out/ when missing or stale; None, or why it cannot be built."""
    if C_TLS.exists() and C_TLS.stat().st_mtime >= C_TLS_SRC.stat().st_mtime:
        return None
    if shutil.which("gcc") is None:
        return "gcc is not installed"
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(C_TLS), str(C_TLS_SRC), "-lssl", "-lcrypto"]
    print(f"building {C_TLS.relative_to(HERE)} with gcc", file=sys.stderr)
    p = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if p.returncode:
        tail = (p.stderr.strip().splitlines() or ["?"])[-1]
        hint = ""
        if "openssl/" in p.stderr:
            hint = " (OpenSSL headers missing: apt-get install libssl-dev)"
        return f"could not build {C_TLS_SRC.name}{hint}: {tail}"
    return None


def make_servers(args: argparse.Namespace, certs: dict[str, str]) -> tuple[list[Server], dict]:
    """The servers asked for (TLS ones, then the plain references), and why any cannot run."""
    py, wanted = sys.executable, args.servers.split(",")
    tls_args = ["--tls-cert", certs["cert"], "--tls-key", certs["key"]]
    threads = ["--io-threads", str(args.io_threads)] if args.io_threads else []
    servers, skipped = [], {}
    has_netring = importable("netring")
    for backend in args.backends.split(",") if "netring" in wanted else []:
        name = f"netring[{backend}]"
        if not has_netring:
            skipped[name] = f"`import netring` fails under {py}: build it first (make build)"
            continue
        argv = [py, str(PEERS / "netring_echo.py"), "--port", "0", "--backend", backend, *threads]
        servers.append(Server(name, argv + tls_args, TLS))
        if "plain" in wanted:
            servers.append(Server(name, argv, PLAIN))
    needs = {AFN: ["uvloop", "aiofastnet"], UVLOOP: ["uvloop"], ASYNCIO: []}
    for loop, modules in needs.items():
        if loop not in wanted:
            continue
        missing = [m for m in modules if not importable(m)]
        if missing:
            names = " ".join(missing)
            skipped[loop] = f"{names} not installed: {py} -m pip install {names}"
            continue
        argv = [py, str(PEERS / "asyncio_echo.py"), "--loop", loop, "--port", "0"]
        servers.append(Server(loop, argv + tls_args, TLS))
    if "c" in wanted:
        why = build_c_tls()
        if why:
            skipped[C_TLS_NAME] = why
        else:
            servers.append(Server(C_TLS_NAME, [str(C_TLS), "0", certs["cert"], certs["key"]], TLS))
        if "plain" in wanted:
            servers.append(Server(C_PLAIN, [str(C_ECHO), "0"], PLAIN))
    return servers, skipped


def add_figures(runs: list[dict], scenarios: dict[str, Scenario]) -> None:
    """Per run: server CPU in % of one core, MB/s and server CPU per MB (10^6 bytes)."""
    for r in runs:
        if "error" in r:
            continue
        if r.get("server_cpu_us") is not None:
            r["server_cpu_pct"] = r["server_cpu_us"] * 100 / 1e6 / r["window_s"]
        size = scenarios[r["scenario"]].size
        r["mb_per_s"] = r["msgs_per_s"] * size / 1e6
        if r.get("server_cpu_us_per_msg") is not None:
            r["cpu_us_per_mb"] = r["server_cpu_us_per_msg"] * 1e6 / size


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


def add_ratios(rows: list[dict]) -> None:
    """Ratios to aiofastnet, the C OpenSSL echo and asyncio in the same scenario, and
    each TLS netring row's CPU/msg over the plain netring of its backend at depth 16."""
    by = {(r["scenario"], r["server"]): r for r in rows}
    for row in rows:
        for key, base, metric in RATIOS:
            if row["scenario"] != PLAIN_D16:
                row[key] = ratio(row, by.get((row["scenario"], base)), metric)
        plain = by.get((PLAIN_D16, row["server"]))
        if row["scenario"] == "64B/50c/d16" and plain is not None:
            row["tls_vs_plain"] = ratio(row, plain, "server_cpu_us_per_msg")


def verdicts(rows: list[dict]) -> list[dict]:
    """Each target for each netring backend: the ratio and met/missed."""
    out = []
    for what, scenarios, key, cmp, threshold in TARGETS:
        for row in rows:
            if not row["server"].startswith("netring") or row["scenario"] not in scenarios:
                continue
            v = row.get(key)
            if v is None:
                continue
            met = v >= threshold if cmp == ">=" else v <= threshold
            out.append(
                {
                    "server": row["server"],
                    "scenario": row["scenario"],
                    "target": what,
                    "ratio": v,
                    "met": met,
                    "borderline": abs(v - threshold) <= BORDERLINE * threshold,
                }
            )
    return out


def alloc_check(live: list[Server], sc: Scenario, pin: list[str]) -> dict[str, dict]:
    """mmap/munmap/mremap calls per message of each TLS server under strace, over
    ALLOC_CHECK_S s of `sc` after the measured runs (strace slows the server; these
    runs are not measured)."""
    if shutil.which("strace") is None:
        return {}
    out = {}
    for srv in live:
        if srv.mode != TLS or not srv.alive():
            continue
        with tempfile.NamedTemporaryFile("r", suffix=".strace") as f:
            trace = ["strace", "-f", "-c", "-e", "trace=" + ",".join(ALLOC_CALLS)]
            tracer = subprocess.Popen(
                [*trace, "-o", f.name, "-p", str(srv.proc.pid)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            time.sleep(0.5)  # attached to every thread
            r = run_loadgen(srv, sc, pin, warmup=0.0, duration=ALLOC_CHECK_S)
            tracer.send_signal(signal.SIGINT)
            tracer.wait(timeout=10)
            calls = {}
            for line in f.read().splitlines():
                m = re.match(r"\s*[\d.]+\s+[\d.]+\s+\d+\s+(\d+)\s+(?:\d+\s+)?(\w+)$", line)
                if m and m.group(2) in ALLOC_CALLS:
                    calls[m.group(2)] = int(m.group(1))
        msgs = r.get("msgs")
        if msgs:
            out[srv.name] = {"msgs": msgs, **calls, "per_msg": sum(calls.values()) / msgs}
    return out


def run_servers(
    servers: list[Server], scenarios: list[Scenario], args: argparse.Namespace, pins: tuple
) -> tuple[list[dict], dict[str, str], dict]:
    """echo_bench.run_servers, plus the allocator check before the servers stop."""
    _, pin_server, pin_gen = pins
    runs, alloc = [], {}
    try:
        live = [srv for srv in servers if srv.start(pin_server)]
        runs = run_all(scenarios, live, args, pin_gen)
        if not args.no_alloc_check:
            check = next((sc for sc in scenarios if sc.name == "64B/50c/d1"), scenarios[0])
            alloc = alloc_check(live, check, pin_gen)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        for srv in servers:
            srv.stop()
    notes = {}
    for srv in servers:
        if srv.note:
            notes[srv.name if srv.mode == PLAIN else f"{srv.name} (tls)"] = srv.note
    return runs, notes, alloc


def section(title: str, rows: list[dict], names: list[str], columns: list) -> list[str]:
    picked = [r for r in rows if r["scenario"] in names]
    return [f"### {title}", "", table(picked, columns), ""] if picked else []


def plain_lines(rows: list[dict]) -> list[str]:
    """TLS over plain CPU per message at 64 B depth 16, netring per backend and C."""
    by = {(r["scenario"], r["server"]): r for r in rows}
    lines = []
    pairs = [(n, n) for (sc, n) in by if sc == PLAIN_D16 and n.startswith("netring")]
    pairs.append((C_TLS_NAME, C_PLAIN))
    for tls_name, plain_name in pairs:
        t, p = by.get(("64B/50c/d16", tls_name)), by.get((PLAIN_D16, plain_name))
        v = ratio(t, p, "server_cpu_us_per_msg") if t and p else None
        if v is not None:
            lines.append(
                f"| {tls_name} / {plain_name} | {fmt(t['server_cpu_us_per_msg'], 'cpu')}"
                f" | {fmt(p['server_cpu_us_per_msg'], 'cpu')} | {fmt(v, 'ratio')} |"
            )
    if not lines:
        return []
    head = ["### TLS over plain: server CPU µs/msg at 64 B, 50 connections, depth 16", ""]
    head += ["| TLS / plain | TLS | plain | ratio |", "|---|---:|---:|---:|"]
    return head + lines + [""]


def report(rows: list[dict], checks: list[dict]) -> str:
    lines = []
    lines += section("Messages (TLS)", rows, MESSAGES, MSG_COLUMNS)
    bulk = "Bulk: 1 MiB messages, 4 connections (MB = 10^6 bytes)"
    lines += section(bulk, rows, [BULK], BULK_COLUMNS)
    lines += section(
        "New full handshakes: connect, handshake, one 64 B echo, close (16 in flight)",
        rows,
        [HANDSHAKE],
        HANDSHAKE_COLUMNS,
    )
    lines += section("Plain TCP references (no TLS)", rows, [PLAIN_D16], PLAIN_COLUMNS)
    lines += plain_lines(rows)
    if checks:
        lines += ["### Targets (issue #15; netring, medians above)", ""]
        lines += ["| server | scenario | target | ratio | verdict |", "|---|---|---|---:|---|"]
        for c in checks:
            verdict = "met" if c["met"] else "**missed**"
            verdict += " (within 10 %: noise)" if c["borderline"] else ""
            cells = [c["server"], c["scenario"], c["target"], fmt(c["ratio"], "ratio"), verdict]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines).rstrip()


def alloc_note(alloc: dict[str, dict], args: argparse.Namespace) -> list[str]:
    """What the allocator check saw, and what it means for uvloop's figures."""
    if args.no_alloc_check:
        return []
    if not alloc:
        return ["- allocator check: not run (strace not installed, or no TLS server answered)"]

    def calls(a: dict) -> str:
        if a["per_msg"] < 0.05:
            return ""
        return " (" + ", ".join(f"{a.get(c, 0)} {c}" for c in ALLOC_CALLS) + ")"

    each = "; ".join(f"{name} {a['per_msg']:.2f}{calls(a)}" for name, a in alloc.items())
    notes = [
        f"- allocator check (after the runs, {ALLOC_CHECK_S:g} s of 64B/50c/d1 per TLS server"
        f" under `strace -c`): mmap+munmap+mremap calls per message: {each}"
    ]
    uv = alloc.get(UVLOOP)
    if uv is not None and uv["per_msg"] >= 0.5:
        notes.append(
            "- **uvloop's TLS is slowed by the allocator on this machine**: its SSL protocol"
            " reads each record through a 256 KiB buffer that glibc maps, remaps and unmaps"
            f" ({uv['per_msg']:.1f} such calls per message above). Its figures measure that,"
            " not uvloop's TLS design: no ratio is quoted against uvloop."
        )
    elif uv is not None:
        notes.append(
            "- uvloop's allocator stall (a 256 KiB read buffer mapped, remapped and unmapped per"
            " record) was not seen in this run's steady state: a fresh uvloop TLS server does it"
            " until its first connections have closed (glibc's dynamic mmap threshold then"
            " rises), which the unrecorded priming run of each server absorbs. uvloop is not a"
            " baseline here either way."
        )
    return notes


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default=ALL_SERVERS, help="comma list of %(default)s")
    ap.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma list (default: all): %(default)s",
    )
    ap.add_argument(
        "--key-type",
        choices=["ecdsa", "rsa"],
        default="ecdsa",
        help="the certificate's key: ECDSA P-256 (default) or RSA 2048",
    )
    ap.add_argument(
        "--no-alloc-check",
        action="store_true",
        help="skip the strace count of mmap/munmap per message after the runs",
    )
    add_run_args(ap)
    args = ap.parse_args()
    finish_run_args(args)
    args.scenario_list = pick_scenarios(ap, args.scenarios, SCENARIOS)
    return args


def main() -> None:
    args = parse_args()
    # NOTE: SIGTERM unwinds like Ctrl-C, so the servers stop and the
    # temporary directory with the throwaway key is removed.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    build = build_info()  # what the servers load, read before they start
    ensure_built("tls_bench")
    pins = pinning(args)
    with tempfile.TemporaryDirectory(prefix="netring-tls-bench-") as tmp:
        certs = make_certs(Path(tmp), args.key_type)
        tls = ("--tls", "--tls-ca", certs["ca"], "--tls-server-name", SERVER_NAME)
        scenarios = [
            dataclasses.replace(sc, extra=sc.extra + tls) if sc.group == TLS else sc
            for sc in args.scenario_list
        ]
        servers, skipped = make_servers(args, certs)
        runs, notes, alloc = run_servers(servers, scenarios, args, pins)
    skipped |= notes
    add_figures(runs, {sc.name: sc for sc in scenarios})

    rows = medians(runs, scenarios, [srv.name for srv in servers])
    add_ratios(rows)
    checks = verdicts(rows)
    command = shlex.join([os.path.relpath(sys.executable), *sys.argv])
    print(headline("TLS echo benchmark", args, pins[0]) + "\n")
    print(
        f"Run {time.strftime('%Y-%m-%d %H:%M %Z')} with `{command}`; every figure is the"
        f" median of {args.repeat} run(s).\n"
    )
    print(provenance(build) + "\n")
    key = "ECDSA P-256" if args.key_type == "ecdsa" else "RSA 2048"
    print(
        "Crypto, the same for every server: TLS 1.3, TLS_AES_128_GCM_SHA256, X25519 (the load"
        f" generator offers nothing else), a {key} certificate from a throwaway trustme CA;"
        " no session tickets and no session cache on any server (the load generator never"
        " resumes). Each connection's handshake completes before the warm-up (not measured,"
        " except in the handshake scenario). netring: one IO thread, `TLSConfig(cert, key,"
        " min_version='TLSv1.3', session_cache=0, session_tickets=False)`; asyncio, uvloop:"
        " `ssl=` with a TLS 1.3-only `SSLContext` (num_tickets=0); aiofastnet:"
        " `aiofastnet.create_server(loop, ..., ssl=ctx)` on uvloop; c-openssl:"
        " c_echo/tls_echo.c (epoll + OpenSSL, read-ahead, one SSL_write per read).\n"
    )
    print(report(rows, checks))
    hs = [r["handshake_ms"] for r in runs if r.get("handshake_ms") is not None and r["conns"] == 50]
    extra = []
    if hs:
        extra.append(
            f"- handshakes before the window: 50 per run at 50 connections, all done in a median"
            f" {statistics.median(hs):.0f} ms (not counted in any figure above but the handshake"
            " scenario's)"
        )
    extra.append(
        f'- handshake scenario: a "message" is a whole connection ({HANDSHAKE}: 16 in flight),'
        " so server CPU per handshake includes the accept, the 64 B echo and the close"
    )
    for note in footnotes(runs, skipped) + alloc_note(alloc, args) + extra:
        print("\n" + note)
    if args.json:
        doc = {
            "skipped": skipped,
            "runs": runs,
            "medians": rows,
            "targets": checks,
            "alloc_check": alloc,
            "build_at_start": build,
        }
        save_json(args.json, args, pins[0], doc)
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    main()
