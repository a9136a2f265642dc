"""Bulk-data benchmark (#17): large-message echo, MB/s and server CPU per MB.

The same ``asyncio.Protocol`` echo (peers/echo_protocol.py) on netring (both
backends), uvloop and aiofastnet, and the C epoll echo, at 16 KiB, 64 KiB,
256 KiB and 1 MiB messages over 10 connections at depth 1, under the one
native load generator, pinned like echo_bench.py (server on CPU 1, load on
CPU 0), each (server, scenario) repeated and the medians reported with
ratios to uvloop and to C. The issue's targets are checked at the end.

    .venv/bin/python benchmarks/bulk_bench.py [--quick] [--repeat N] [--json OUT] > bulk.md
"""

from __future__ import annotations

import argparse
import statistics
import sys

from echo_bench import (
    Scenario,
    Server,
    add_run_args,
    ensure_built,
    finish_run_args,
    footnotes,
    headline,
    make_servers,
    pick_scenarios,
    pinning,
    ratio,
    run_servers,
    save_json,
    table,
)

KIB = 1024
SCENARIOS = [
    Scenario("16KiB/10c/d1", 16 * KIB, 10, 1),
    Scenario("64KiB/10c/d1", 64 * KIB, 10, 1),
    Scenario("256KiB/10c/d1", 256 * KIB, 10, 1),
    Scenario("1MiB/10c/d1", 1024 * KIB, 10, 1),
]
METRICS = ("msgs_per_s", "p50_us", "p99_us", "server_cpu_us_per_msg", "server_cpu_pct")
# Targets of issue #17 at 64 KiB and above: CPU/MB against uvloop and C, MB/s against uvloop.
CPU_VS_UVLOOP, CPU_VS_C, MBS_VS_UVLOOP = 0.8, 1.1, 1.0


def add_figures(r: dict, size: int) -> None:
    """MB/s (both directions count once: bytes echoed) and server CPU µs per MB."""
    if r.get("msgs_per_s") is not None:
        r["mb_per_s"] = r["msgs_per_s"] * size / 1e6
    if r.get("server_cpu_us_per_msg") is not None:
        r["server_cpu_us_per_mb"] = r["server_cpu_us_per_msg"] * 1e6 / size
        if r.get("msgs_per_s") is not None:
            r["server_cpu_pct"] = r["server_cpu_us_per_msg"] * r["msgs_per_s"] / 1e4


def medians(runs: list[dict], scenarios: list[Scenario], names: list[str]) -> list[dict]:
    rows = []
    for sc in scenarios:
        for name in dict.fromkeys(names):
            ok = [r for r in runs if r["scenario"] == sc.name and r["server"] == name]
            ok = [r for r in ok if "error" not in r]
            if not ok:
                continue
            row = {"scenario": sc.name, "server": name, "runs": len(ok), "size": sc.size}
            for m in (*METRICS, "mb_per_s", "server_cpu_us_per_mb"):
                vals = [r[m] for r in ok if r.get(m) is not None]
                row[m] = statistics.median(vals) if vals else None
            rows.append(row)
    return rows


def add_ratios(rows: list[dict]) -> None:
    by = {(r["scenario"], r["server"]): r for r in rows}
    for row in rows:
        uv, c = by.get((row["scenario"], "uvloop")), by.get((row["scenario"], "c-epoll"))
        row["mbs_vs_uvloop"] = ratio(row, uv, "mb_per_s")
        row["cpu_vs_uvloop"] = ratio(row, uv, "server_cpu_us_per_mb")
        row["cpu_vs_c"] = ratio(row, c, "server_cpu_us_per_mb")


COLUMNS = [
    ("MB/s", "mb_per_s", "cpu"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("CPU µs/MB", "server_cpu_us_per_mb", "us"),
    ("p99 µs", "p99_us", "us"),
    ("MB/s vs uvloop", "mbs_vs_uvloop", "ratio"),
    ("CPU/MB vs uvloop", "cpu_vs_uvloop", "ratio"),
    ("CPU/MB vs C", "cpu_vs_c", "ratio"),
]


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    for row in rows:
        if not row["server"].startswith("netring") or row["size"] < 64 * KIB:
            continue
        checks = [
            ("CPU/MB vs uvloop", row.get("cpu_vs_uvloop"), CPU_VS_UVLOOP, "<="),
            ("CPU/MB vs C", row.get("cpu_vs_c"), CPU_VS_C, "<="),
            ("MB/s vs uvloop", row.get("mbs_vs_uvloop"), MBS_VS_UVLOOP, ">="),
        ]
        for what, got, target, op in checks:
            if got is None:
                continue
            ok = got <= target if op == "<=" else got >= target
            out.append(
                f"- {'met' if ok else 'MISSED'}: {row['server']} {row['scenario']}"
                f" {what} {got:.2f}x (target {op} {target:.2f}x)"
            )
    return out


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--servers",
        default="netring,uvloop,aiofastnet,c",
        help="comma list of netring,aio,uvloop,aiofastnet,asyncio,c (default: %(default)s)",
    )
    ap.add_argument(
        "--scenarios",
        default=",".join(s.name for s in SCENARIOS),
        help="comma list (default: all): %(default)s",
    )
    ap.add_argument(
        "--zerocopy",
        type=int,
        metavar="BYTES",
        help="also run each netring backend with zerocopy_threshold=BYTES (its cost where "
        "the kernel copies anyway, as on loopback)",
    )
    add_run_args(ap)
    args = ap.parse_args()
    finish_run_args(args)
    args.scenario_list = pick_scenarios(ap, args.scenarios, SCENARIOS)
    return args


def main() -> None:
    args = parse_args()
    ensure_built("bulk_bench")
    pins = pinning(args)
    servers, skipped = make_servers(args)
    if args.zerocopy:
        for backend in ("io_uring", "epoll"):
            plain = next((s for s in servers if s.name == f"netring[{backend}]"), None)
            if plain is not None:
                argv = [*plain.argv, "--zerocopy-threshold", str(args.zerocopy)]
                servers.insert(servers.index(plain) + 1, Server(f"netring[{backend}+zc]", argv))
    runs, notes = run_servers(servers, args.scenario_list, args, pins)
    skipped |= notes
    size = {sc.name: sc.size for sc in args.scenario_list}
    for r in runs:
        add_figures(r, size[r["scenario"]])
    rows = medians(runs, args.scenario_list, [srv.name for srv in servers])
    add_ratios(rows)
    print(headline("Bulk echo benchmark", args, pins[0]) + "\n")
    print(table(rows, COLUMNS))
    checks = verdicts(rows)
    if checks:
        print("\nTargets (#17, 64 KiB and above):\n")
        print("\n".join(checks))
    for note in footnotes(runs, skipped):
        print("\n" + note)
    if args.json:
        save_json(args.json, args, pins[0], {"skipped": skipped, "runs": runs, "medians": rows})
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    main()
