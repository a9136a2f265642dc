"""Framed echo benchmark: netring's packet-echo and line servers against the best
pure-Python servers of the same protocols, and a C raw-echo ceiling.

Length-prefixed (lp: 4-byte big-endian length, 64 B payload) and CRLF-line
(line: 64 B including the CRLF) echo, 50 connections at depth 16 and depth 1,
driven by the same native load generator as echo_bench.py, with the same
pinning (server CPU 1, load CPU 0), repetitions and medians. Ratios are to the
best Python peer of each scenario and to the C ceiling; the issue's targets are
checked at the end. See benchmarks/README.md ("Framed echo").

    .venv/bin/python benchmarks/framed_bench.py [--backends io_uring,epoll] [--quick] [--json OUT]
"""

from __future__ import annotations

import argparse
import sys

from echo_bench import (
    C_ECHO,
    PEERS,
    Scenario,
    Server,
    add_run_args,
    ensure_built,
    finish_run_args,
    fmt,
    footnotes,
    headline,
    importable,
    medians,
    pick_scenarios,
    pinning,
    ratio,
    run_servers,
    save_json,
    table,
)

SCENARIOS = [
    Scenario("lp/64B/50c/d16", 64, 50, 16, "lp"),
    Scenario("lp/64B/50c/d1", 64, 50, 1, "lp"),
    Scenario("line/64B/50c/d16", 64, 50, 16, "line"),
    Scenario("line/64B/50c/d1", 64, 50, 1, "line"),
]
NETRING_SERVER = {"lp": "packet-echo", "line": "line"}  # `python -m netring serve NAME`
PYTHON_PEERS = ("uvloop-buffered", "asyncio-buffered", "twisted")
C_CEILING = "c-epoll"
ALL_SERVERS = "netring,uvloop-buffered,asyncio-buffered,twisted,c"

# The targets, per netring backend and mode: (what, scenario depth,
# ratio key, comparison, threshold).
TARGETS = [
    ("msgs/s ≥ 2x best Python", 16, "rate_vs_py", ">=", 2.0),
    ("msgs/s ≥ 0.8x C ceiling", 16, "rate_vs_c", ">=", 0.8),
    ("server CPU/msg ≤ 0.5x best Python", 16, "cpu_vs_py", "<=", 0.5),
    ("msgs/s ≥ best Python", 1, "rate_vs_py", ">=", 1.0),
]
BORDERLINE = 0.10  # a verdict this close to its threshold is within run-to-run noise

COLUMNS = [  # (heading, key in the row, format)
    ("msgs/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("p99.9 µs", "p999_us", "us"),
    ("server CPU µs/msg", "server_cpu_us_per_msg", "cpu"),
    ("msgs/s vs best Py", "rate_vs_py", "ratio"),
    ("CPU/msg vs best Py", "cpu_vs_py", "ratio"),
    ("msgs/s vs C", "rate_vs_c", "ratio"),
    ("CPU/msg vs C", "cpu_vs_c", "ratio"),
    ("loadgen CPU", "loadgen_cpu_pct", "pct"),
]


def make_servers(args: argparse.Namespace, modes: list[str]) -> tuple[list[Server], dict]:
    """One process per (server, mode) asked for, and a note for each that cannot run."""
    py, wanted = sys.executable, args.servers.split(",")
    servers, skipped = [], {}

    def peer(name: str, module: str, argv: list[str]) -> None:
        if name not in wanted:
            return
        if module and not importable(module):
            skipped[name] = f"`import {module}` fails under {py}: {py} -m pip install {module}"
            return
        for mode in modes:
            servers.append(Server(name, [*argv, "--mode", mode, "--port", "0"], mode))

    if "netring" in wanted:
        threads = ["--io-threads", str(args.io_threads)] if args.io_threads else []
        for backend in args.backends.split(","):
            name = f"netring[{backend}]"
            if not importable("netring"):
                skipped[name] = f"`import netring` fails under {py}: build it first (make build)"
                continue
            for mode in modes:
                argv = [py, "-m", "netring", "serve", NETRING_SERVER[mode], "--port", "0"]
                servers.append(Server(name, [*argv, "--backend", backend, *threads], mode))
    asyncio_peer = [py, str(PEERS / "framed_asyncio.py"), "--loop"]
    peer("uvloop-buffered", "uvloop", [*asyncio_peer, "uvloop"])
    peer("asyncio-buffered", "", [*asyncio_peer, "asyncio"])
    peer("twisted", "twisted", [py, str(PEERS / "framed_twisted.py")])
    if "c" in wanted:  # raw echo returns the framed bytes unchanged: a ceiling for every mode
        servers += [Server(C_CEILING, [str(C_ECHO), "0"], mode) for mode in modes]
    return servers, skipped


def best_peers(rows: list[dict]) -> dict[str, dict]:
    """Per scenario: the Python peer with the most msgs/s and the one with the least CPU/msg."""
    best: dict[str, dict] = {}
    for sc in dict.fromkeys(r["scenario"] for r in rows):
        peers = [r for r in rows if r["scenario"] == sc and r["server"] in PYTHON_PEERS]
        rated = [r for r in peers if r.get("msgs_per_s") is not None]
        costed = [r for r in peers if r.get("server_cpu_us_per_msg") is not None]
        best[sc] = {
            "rate": max(rated, key=lambda r: r["msgs_per_s"], default=None),
            "cpu": min(costed, key=lambda r: r["server_cpu_us_per_msg"], default=None),
        }
    return best


def add_ratios(rows: list[dict], best: dict[str, dict]) -> None:
    ceilings = {r["scenario"]: r for r in rows if r["server"] == C_CEILING}
    for row in rows:
        b, c = best.get(row["scenario"], {}), ceilings.get(row["scenario"])
        row["rate_vs_py"] = ratio(row, b.get("rate"), "msgs_per_s")
        row["cpu_vs_py"] = ratio(row, b.get("cpu"), "server_cpu_us_per_msg")
        row["rate_vs_c"] = ratio(row, c, "msgs_per_s")
        row["cpu_vs_c"] = ratio(row, c, "server_cpu_us_per_msg")


def verdicts(rows: list[dict], scenarios: list[Scenario]) -> list[dict]:
    """Each target for each netring row it applies to: the ratio and met/missed."""
    out = []
    by_name = {sc.name: sc for sc in scenarios}
    for row in rows:
        sc = by_name[row["scenario"]]
        if not row["server"].startswith("netring"):
            continue
        for what, depth, key, cmp, threshold in TARGETS:
            if sc.depth != depth or row.get(key) is None:
                continue
            v = row[key]
            met = v >= threshold if cmp == ">=" else v <= threshold
            close = abs(v - threshold) <= BORDERLINE * threshold
            out.append(
                {
                    "server": row["server"],
                    "scenario": sc.name,
                    "target": what,
                    "ratio": v,
                    "met": met,
                    "borderline": close,
                }
            )
    return out


def report(rows: list[dict], best: dict, checks: list[dict]) -> str:
    lines = [table(rows, COLUMNS), "", "Best Python peer per scenario (medians):", ""]
    for sc, b in best.items():
        rate, cpu = b["rate"], b["cpu"]
        if rate is None:
            lines.append(f"- {sc}: no Python peer ran")
            continue
        text = f"- {sc}: most msgs/s {rate['server']} ({fmt(rate['msgs_per_s'], 'rate')})"
        if cpu is not None:
            per_msg = fmt(cpu["server_cpu_us_per_msg"], "cpu")
            text += f", least CPU/msg {cpu['server']} ({per_msg} µs)"
        lines.append(text)
    if checks:
        lines += ["", "Targets (netring against the figures above):", ""]
        lines += ["| server | scenario | target | ratio | verdict |", "|---|---|---|---:|---|"]
        for c in checks:
            verdict = "met" if c["met"] else "**missed**"
            verdict += " (within 10 %: noise)" if c["borderline"] else ""
            cells = [c["server"], c["scenario"], c["target"], fmt(c["ratio"], "ratio"), verdict]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--servers",
        default=ALL_SERVERS,
        help="comma list of %(default)s (default: all)",
    )
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
    ensure_built("framed_bench")
    pins = pinning(args)
    modes = list(dict.fromkeys(sc.mode for sc in args.scenario_list))
    servers, skipped = make_servers(args, modes)
    runs, notes = run_servers(servers, args.scenario_list, args, pins)
    skipped |= notes

    rows = medians(runs, args.scenario_list, [srv.name for srv in servers])
    best = best_peers(rows)
    add_ratios(rows, best)
    checks = verdicts(rows, args.scenario_list)
    title = "Framed echo benchmark (lp: 4-byte length + 64 B payload; line: 64 B with CRLF)"
    print(headline(title, args, pins[0]) + "\n")
    print(report(rows, best, checks))
    for note in footnotes(runs, skipped):
        print("\n" + note)
    if args.json:
        names = {sc: {k: (r or {}).get("server") for k, r in b.items()} for sc, b in best.items()}
        doc = {"skipped": skipped, "runs": runs, "medians": rows, "best_python": names}
        save_json(args.json, args, pins[0], doc | {"targets": checks})
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    main()
