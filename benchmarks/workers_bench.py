"""Worker-pool benchmark: netring's line-workers against asyncio + run_in_executor.

Two groups, in one run, with the load generator, pinning (server CPU 1, load
CPU 0), repetitions, rotation and medians of echo_bench.py:

- ``work``: ``python -m netring serve line-workers --work-ms 1`` with 1, 8 and
  32 worker threads (a SQLite query, then a 1 ms sleep per line), 50
  connections at depth 1, against an asyncio server doing the same work
  through ``loop.run_in_executor`` on as many threads. The issue's target:
  msgs/s ≥ 0.9 x workers x 1000, up to the CPU limit.
- ``handoff``: ``--work-ms 0``: the cost of handing each line to a worker.
  ``line-workers`` on 8 workers, against the same work inline on the IO thread
  (``--workers 0``) and ``serve line`` (no work at all), at depth 1 and 16.

See benchmarks/README.md ("Worker pool").

    .venv/bin/python benchmarks/workers_bench.py [--quick] [--json OUT] > OUT.md
"""

from __future__ import annotations

import argparse
import sys

from echo_bench import (
    PEERS,
    PRIME_S,
    QUIET_MAX_PCT,
    Scenario,
    Server,
    add_run_args,
    ensure_built,
    finish_run_args,
    fmt,
    footnotes,
    headline,
    importable,
    measure,
    medians,
    pinning,
    ratio,
    run_loadgen,
    save_json,
    table,
)

WORK = Scenario("line/50c/d1 work=1ms", 64, 50, 1, "line")
HANDOFF = [
    Scenario("line/50c/d1 work=0", 64, 50, 1, "line"),
    Scenario("line/50c/d16 work=0", 64, 50, 16, "line"),
]
TARGET_PER_WORKER = 0.9 * 1000  # msgs/s per worker at 1 ms of blocking work
CPU_LIMIT_PCT = 90  # a server using this much of its core is CPU-bound

WORK_COLUMNS = [  # (heading, key in the row, format)
    ("msgs/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("server CPU µs/msg", "server_cpu_us_per_msg", "cpu"),
    ("server CPU", "server_cpu_pct", "pct"),
    ("msgs/s per (workers x 1000)", "rate_vs_ideal", "ratio"),
    ("msgs/s vs asyncio", "rate_vs_asyncio", "ratio"),
    ("CPU/msg vs asyncio", "cpu_vs_asyncio", "ratio"),
]
HANDOFF_COLUMNS = [
    ("msgs/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("server CPU µs/msg", "server_cpu_us_per_msg", "cpu"),
    ("msgs/s vs inline", "rate_vs_inline", "ratio"),
    ("CPU/msg vs inline", "cpu_vs_inline", "ratio"),
    ("hand-off µs/msg", "handoff_us", "cpu"),
    ("loadgen CPU", "loadgen_cpu_pct", "pct"),
]


def netring_argv(name: str, backend: str, io_threads: int, *extra: str) -> list[str]:
    threads = ["--io-threads", str(io_threads)] if io_threads else []
    return [sys.executable, "-m", "netring", "serve", name, "--port", "0", "--backend", backend,
            *threads, *extra]


def asyncio_argv(threads: int, work_ms: float) -> list[str]:
    return [sys.executable, str(PEERS / "workers_asyncio.py"), "--threads", str(threads),
            "--work-ms", str(work_ms), "--port", "0"]


def make_groups(args: argparse.Namespace) -> tuple[list[tuple[list[Scenario], list[Server]]],
                                                   dict[str, str], dict[str, int]]:
    """[(scenarios, servers)], notes on servers that cannot run, workers per server name."""
    groups: list[tuple[list[Scenario], list[Server]]] = []
    skipped: dict[str, str] = {}
    workers: dict[str, int] = {}
    backends = args.backends.split(",")
    if not importable("netring"):
        return [], {"netring": f"`import netring` fails under {sys.executable}"}, {}
    if "work" in args.groups:
        servers = []
        for n in args.threads:
            for backend in backends:
                name = f"netring[{backend}] w={n}"
                argv = netring_argv("line-workers", backend, args.io_threads,
                                    "--workers", str(n), "--work-ms", "1")
                servers.append(Server(name, argv, "line"))
                workers[name] = n
            name = f"asyncio+executor w={n}"
            servers.append(Server(name, asyncio_argv(n, 1), "line"))
            workers[name] = n
        groups.append(([WORK], servers))
    if "handoff" in args.groups:
        n = args.handoff_workers
        servers = []
        for backend in backends:
            servers += [
                Server(f"netring[{backend}] line (no work)",
                       netring_argv("line", backend, args.io_threads), "line"),
                Server(f"netring[{backend}] inline",
                       netring_argv("line-workers", backend, args.io_threads, "--workers", "0"),
                       "line"),
                Server(f"netring[{backend}] w={n}",
                       netring_argv("line-workers", backend, args.io_threads,
                                    "--workers", str(n)), "line"),
            ]
        servers.append(Server(f"asyncio+executor w={n}", asyncio_argv(n, 0), "line"))
        groups.append((HANDOFF, servers))
    return groups, skipped, workers


def run_groups(groups: list[tuple[list[Scenario], list[Server]]], args: argparse.Namespace,
               pins: tuple[bool, list[str], list[str]]) -> tuple[list[dict], dict[str, str]]:
    """Start every server, prime it, then each repetition runs every group's
    scenarios on its servers in a rotated order; stop them all."""
    _, pin_server, pin_gen = pins
    runs: list[dict] = []
    everything = [srv for _, servers in groups for srv in servers]
    try:
        live = {id(srv) for srv in everything if srv.start(pin_server)}
        for scenarios, servers in groups:
            for srv in servers:
                if id(srv) in live:  # NOTE: a fresh CPython server is slower at first
                    r = run_loadgen(srv, scenarios[0], pin_gen, warmup=0.0, duration=PRIME_S)
                    print(f"primed {srv.name}: {r.get('error', 'ok')}", file=sys.stderr)
        for rep in range(args.repeat):
            for scenarios, servers in groups:
                mine = [srv for srv in servers if id(srv) in live]
                k = rep % max(1, len(mine))
                for sc in scenarios:
                    for srv in mine[k:] + mine[:k]:
                        if not srv.alive():
                            continue
                        r = measure(srv, sc, pin_gen, args)
                        r.update(server=srv.name, scenario=sc.name, rep=rep)
                        runs.append(r)
                        rate, cpu = fmt(r.get("msgs_per_s"), "rate"), fmt(
                            r.get("server_cpu_us_per_msg"), "cpu")
                        msg = r.get("error") or f"{rate} msg/s, {cpu} CPU µs/msg"
                        if r.get("other_cpu_pct", 0) > QUIET_MAX_PCT:
                            msg += f" (other processes: {r['other_cpu_pct']:.0f} % CPU)"
                        print(f"[{rep + 1}/{args.repeat}] {sc.name:22} {srv.name:32} {msg}",
                              file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
    finally:
        for srv in everything:
            srv.stop()
    notes = {srv.name: srv.note for srv in everything if srv.note}
    return runs, notes


def add_work_ratios(rows: list[dict], workers: dict[str, int]) -> list[dict]:
    """Ratios of the work group; returns the target verdicts."""
    checks = []
    by_threads = {workers[r["server"]]: r for r in rows
                  if r["scenario"] == WORK.name and r["server"].startswith("asyncio")}
    for row in rows:
        if row["scenario"] != WORK.name:
            continue
        n = workers.get(row["server"], 0)
        rate, cpu = row.get("msgs_per_s"), row.get("server_cpu_us_per_msg")
        row["server_cpu_pct"] = rate * cpu / 1e4 if rate and cpu else None
        row["rate_vs_ideal"] = rate / (n * 1000) if rate and n else None
        peer = by_threads.get(n)
        row["rate_vs_asyncio"] = ratio(row, peer, "msgs_per_s")
        row["cpu_vs_asyncio"] = ratio(row, peer, "server_cpu_us_per_msg")
        if not row["server"].startswith("netring") or not rate or not n:
            continue
        cpu_bound = (row["server_cpu_pct"] or 0) >= CPU_LIMIT_PCT
        met = rate >= TARGET_PER_WORKER * n
        verdict = "met" if met else ("CPU-bound" if cpu_bound else "**missed**")
        checks.append({"server": row["server"], "target": f"≥ {TARGET_PER_WORKER * n:.0f} msgs/s",
                       "msgs_per_s": rate, "ratio": rate / (TARGET_PER_WORKER * n),
                       "cpu_pct": row["server_cpu_pct"], "verdict": verdict})
    return checks


def add_handoff_ratios(rows: list[dict]) -> None:
    for row in rows:
        if not row["scenario"].endswith("work=0"):
            continue
        backend = row["server"].split(" ", 1)[0]
        inline = next((r for r in rows if r["scenario"] == row["scenario"]
                       and r["server"] == f"{backend} inline"), None)
        row["rate_vs_inline"] = ratio(row, inline, "msgs_per_s")
        row["cpu_vs_inline"] = ratio(row, inline, "server_cpu_us_per_msg")
        cpu, base = row.get("server_cpu_us_per_msg"), (inline or {}).get("server_cpu_us_per_msg")
        worker_row = row["server"].startswith("netring") and " w=" in row["server"]
        row["handoff_us"] = (cpu - base if worker_row and cpu is not None and base is not None
                             else None)


def report(rows: list[dict], checks: list[dict]) -> str:
    work = [r for r in rows if r["scenario"] == WORK.name]
    handoff = [r for r in rows if r["scenario"].endswith("work=0")]
    out = []
    if work:
        out += ["### Blocking work: 1 ms per line (SQLite query + sleep), 50 connections, depth 1",
                "", table(work, WORK_COLUMNS), ""]
    if checks:
        out += ["Target: msgs/s ≥ 0.9 x workers x 1000 up to the CPU limit "
                f"(CPU-bound: server ≥ {CPU_LIMIT_PCT} % of its core):", "",
                "| server | target | msgs/s | ratio | server CPU | verdict |",
                "|---|---|---:|---:|---:|---|"]
        for c in checks:
            out.append(f"| {c['server']} | {c['target']} | {fmt(c['msgs_per_s'], 'rate')} | "
                       f"{fmt(c['ratio'], 'ratio')} | {fmt(c['cpu_pct'], 'pct')} | "
                       f"{c['verdict']} |")
        out.append("")
    if handoff:
        out += ["### Hand-off cost: no sleep (`--work-ms 0`)", "",
                "`inline` is line-workers with `--workers 0` (the same SQLite work on the IO "
                "thread); `line (no work)` is the plain line echo; hand-off µs/msg is server "
                "CPU per message above `inline`.", "", table(handoff, HANDOFF_COLUMNS)]
    return "\n".join(out)


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--groups", default="work,handoff", help="comma list of work,handoff")
    ap.add_argument("--threads", default="1,8,32", help="worker counts for the work group")
    ap.add_argument("--handoff-workers", type=int, default=8,
                    help="worker count for the hand-off group (default 8)")
    add_run_args(ap)
    args = ap.parse_args()
    finish_run_args(args)
    args.groups = args.groups.split(",")
    unknown = set(args.groups) - {"work", "handoff"}
    if unknown:
        ap.error(f"unknown group(s) {sorted(unknown)}")
    args.threads = [int(n) for n in args.threads.split(",")]
    return args


def main() -> None:
    args = parse_args()
    ensure_built("workers_bench")
    pins = pinning(args)
    groups, skipped, workers = make_groups(args)
    runs, notes = run_groups(groups, args, pins)
    skipped |= notes
    scenarios = [sc for scs, _ in groups for sc in scs]
    names = [srv.name for _, servers in groups for srv in servers]
    rows = medians(runs, scenarios, names)
    checks = add_work_ratios(rows, workers)
    add_handoff_ratios(rows)
    print(headline("Worker-pool benchmark (line-workers vs asyncio run_in_executor)", args,
                   pins[0]) + "\n")
    print(report(rows, checks))
    for note in footnotes(runs, skipped):
        print("\n" + note)
    if args.json:
        save_json(args.json, args, pins[0],
                  {"skipped": skipped, "runs": runs, "medians": rows, "targets": checks})
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    main()
