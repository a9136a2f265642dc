"""UDP echo benchmark: netring's datagram endpoint against asyncio's
``DatagramProtocol`` echo on uvloop and on asyncio, and a C recvfrom/sendto ceiling.

Every server runs the same echo (``datagram_received`` -> ``sendto``), driven
by the native load generator in UDP mode (``--mode udp``: connected UDP
sockets, each keeping D datagrams outstanding, every reply checked byte for
byte, a datagram unanswered after 200 ms counted as lost and replaced), in one
run, with echo_bench.py's pinning (server CPU 1, load CPU 0), repetitions,
rotation and medians. Ratios are to uvloop; the issue's target (datagrams/s
≥ 1.5x uvloop) is checked at the end. See benchmarks/README.md ("UDP echo").

    .venv/bin/python benchmarks/udp_bench.py [--quick] [--repeat N] [--json OUT] > udp.md
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys

from echo_bench import (
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
    run_servers,
    save_json,
    table,
)

C_UDP_SRC = HERE / "c_echo" / "udp_echo.c"
C_UDP = OUT / "udp_echo"
BASELINE = "uvloop"
C_CEILING = "c-udp"
ALL_SERVERS = "netring,uvloop,asyncio,c"

SCENARIOS = [
    Scenario("64B/50s/d1", 64, 50, 1, "udp"),
    Scenario("64B/50s/d16", 64, 50, 16, "udp"),
    Scenario("4KiB/50s/d1", 4096, 50, 1, "udp"),
    Scenario("64B/1s/d1", 64, 1, 1, "udp"),
]
METRICS = (
    "msgs_per_s",
    "p50_us",
    "p99_us",
    "p999_us",
    "server_cpu_us_per_msg",
    "server_cpu_pct",
    "loadgen_cpu_pct",
    "lost_pct",
)
# The target, checked on every scenario with 50 sockets:
# (what, ratio key, comparison, threshold).
TARGETS = [
    ("datagrams/s ≥ 1.5x uvloop", "rate_vs_base", ">=", 1.5),
    ("server CPU/datagram ≤ 1/1.5 of uvloop's (capacity ≥ 1.5x)", "cpu_vs_base", "<=", 1 / 1.5),
]
BORDERLINE = 0.10  # a verdict this close to its threshold is within run-to-run noise

COLUMNS = [  # (heading, key in the row, format)
    ("datagrams/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("p99.9 µs", "p999_us", "us"),
    ("server CPU µs/dgram", "server_cpu_us_per_msg", "cpu"),
    (f"dgrams/s vs {BASELINE}", "rate_vs_base", "ratio"),
    (f"CPU/dgram vs {BASELINE}", "cpu_vs_base", "ratio"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("loadgen CPU", "loadgen_cpu_pct", "pct"),
    ("lost %", "lost_pct", "cpu"),
]


def build_c_udp() -> None:
    """The C UDP ceiling into out/, when missing or older than its source."""
    if C_UDP.exists() and C_UDP.stat().st_mtime >= C_UDP_SRC.stat().st_mtime:
        return
    cmd = ["gcc", "-O2", "-Wall", "-Wextra", "-o", str(C_UDP), str(C_UDP_SRC)]
    print(f"building {C_UDP.relative_to(HERE)} with gcc", file=sys.stderr)
    if shutil.which("gcc") is None or subprocess.run(cmd, check=False).returncode:
        sys.exit(f"udp_bench: could not build {C_UDP} (is gcc installed?)")


def make_servers(args: argparse.Namespace) -> tuple[list[Server], dict[str, str]]:
    """The servers asked for, and a note for each one that cannot run here."""
    py, wanted = sys.executable, args.servers.split(",")
    servers, skipped = [], {}
    if "netring" in wanted:
        threads = ["--io-threads", str(args.io_threads)] if args.io_threads else []
        for backend in args.backends.split(","):
            name = f"netring[{backend}]"
            if importable("netring"):
                argv = [py, str(PEERS / "udp_netring.py"), "--port", "0"]
                servers.append(Server(name, [*argv, "--backend", backend, *threads], "udp"))
            else:
                skipped[name] = f"`import netring` fails under {py}: build it first (make build)"
    for loop in ("uvloop", "asyncio"):
        if loop not in wanted:
            continue
        if loop == "uvloop" and not importable("uvloop"):
            skipped[loop] = f"uvloop is not installed: {py} -m pip install uvloop"
            continue
        argv = [py, str(PEERS / "udp_asyncio.py"), "--loop", loop, "--port", "0"]
        servers.append(Server(loop, argv, "udp"))
    if "c" in wanted:
        servers.append(Server(C_CEILING, [str(C_UDP), "0"], "udp"))
    return servers, skipped


def add_udp_figures(runs: list[dict]) -> None:
    """Per run: the server's CPU in % of one core, and lost datagrams in % of those sent."""
    for r in runs:
        if "error" in r:
            continue
        if r.get("server_cpu_us") is not None:
            r["server_cpu_pct"] = r["server_cpu_us"] * 100 / 1e6 / r["window_s"]
        done = r["msgs"] + r.get("lost", 0)
        r["lost_pct"] = 100 * r.get("lost", 0) / done if done else None


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
    bases = {r["scenario"]: r for r in rows if r["server"] == BASELINE}
    for row in rows:
        base = bases.get(row["scenario"])
        row["rate_vs_base"] = ratio(row, base, "msgs_per_s")
        row["cpu_vs_base"] = ratio(row, base, "server_cpu_us_per_msg")


def verdicts(rows: list[dict], scenarios: list[Scenario]) -> list[dict]:
    """The targets for each netring row with 50 sockets: the ratio and met/missed."""
    out = []
    conns = {sc.name: sc.conns for sc in scenarios}
    for row in rows:
        if not row["server"].startswith("netring") or conns[row["scenario"]] == 1:
            continue
        for what, key, cmp, threshold in TARGETS:
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


def report(rows: list[dict], checks: list[dict]) -> str:
    lines = [table(rows, COLUMNS)]
    if checks:
        lines += ["", "Targets (netring against uvloop, medians above):", ""]
        lines += ["| server | scenario | target | ratio | verdict |", "|---|---|---|---:|---|"]
        for c in checks:
            verdict = "met" if c["met"] else "**missed**"
            verdict += " (within 10 %: noise)" if c["borderline"] else ""
            cells = [c["server"], c["scenario"], c["target"], fmt(c["ratio"], "ratio"), verdict]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def provenance(build: dict) -> str:
    """One line naming the netring build the servers ran (read when the run started)."""
    dirty = ", engine tree dirty" if build.get("engine_tree_dirty") else ""
    return (f"netring: checkout {build.get('commit')}{dirty}, native module built"
            f" {build.get('native_built')} (read at the start of the run).")


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", default=ALL_SERVERS, help="comma list of %(default)s")
    ap.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma list (default: all): %(default)s",
    )
    add_run_args(ap)
    args = ap.parse_args()
    finish_run_args(args)
    args.scenario_list = pick_scenarios(ap, args.scenarios, SCENARIOS)
    return args


def main() -> None:
    args = parse_args()
    build = build_info()  # what the servers load, read before they start
    ensure_built("udp_bench")
    build_c_udp()
    pins = pinning(args)
    servers, skipped = make_servers(args)
    runs, notes = run_servers(servers, args.scenario_list, args, pins)
    skipped |= notes
    add_udp_figures(runs)

    rows = medians(runs, args.scenario_list, [srv.name for srv in servers])
    add_ratios(rows)
    checks = verdicts(rows, args.scenario_list)
    title = "UDP echo benchmark (connected sockets; datagram unanswered after 200 ms = lost)"
    print(headline(title, args, pins[0]) + "\n")
    print(provenance(build) + "\n")
    print(report(rows, checks))
    for note in footnotes(runs, skipped):
        print("\n" + note)
    if args.json:
        doc = {"skipped": skipped, "runs": runs, "medians": rows, "targets": checks}
        save_json(args.json, args, pins[0], doc | {"build_at_start": build})
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    main()
