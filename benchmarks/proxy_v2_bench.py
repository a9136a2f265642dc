"""PROXY protocol v2 overhead (#16): the echo with and without the PROXY layer.

The same ``EchoProtocol`` on ``netring.Server`` twice per backend: plain,
and with ``proxy_protocol="v2"`` (trusting 127.0.0.1), where the load
generator opens every connection with a v2 header as HAProxy's
``send-proxy-v2`` does (``--proxy-v2``); after the header the PROXY layer
stays in the connection's read path. Each repetition runs the plain
scenario and then the PROXY one on the same backend (echo_bench.py's run,
pinning and rotation), and the overhead is the median over repetitions of
the per-repetition ratio PROXY / plain (the VM's slow phases move both).

    .venv/bin/python benchmarks/proxy_v2_bench.py [--repeat N] [--json OUT] > proxy_v2.md
"""

from __future__ import annotations

import argparse
import statistics
import sys

from echo_bench import (
    PEERS,
    Scenario,
    Server,
    add_run_args,
    ensure_built,
    finish_run_args,
    footnotes,
    headline,
    medians,
    pinning,
    run_servers,
    save_json,
    table,
)

PLAIN = Scenario("64B/50c/d1", 64, 50, 1)
PROXIED = Scenario("64B/50c/d1 proxy-v2", 64, 50, 1, extra=("--proxy-v2",), group="proxy")
#: The issue's bound on the PROXY layer's cost in messages/s.
MAX_RATE_LOSS = 0.02

COLUMNS = [
    ("msgs/s", "msgs_per_s", "rate"),
    ("p50 µs", "p50_us", "us"),
    ("p99 µs", "p99_us", "us"),
    ("server CPU µs/msg", "server_cpu_us_per_msg", "cpu"),
]


def servers_for(backends: list[str]) -> list[Server]:
    py, out = sys.executable, []
    for backend in backends:
        argv = [py, str(PEERS / "netring_echo.py"), "--port", "0", "--backend", backend,
                "--io-threads", "1"]
        out.append(Server(f"netring[{backend}]", argv))
        out.append(Server(f"netring[{backend}]", [*argv, "--proxy-protocol", "v2"], mode="proxy"))
    return out


def paired_ratios(runs: list[dict], backend: str) -> dict[str, float | None]:
    """Median over repetitions of PROXY / plain, for msgs/s and CPU per message."""
    name = f"netring[{backend}]"
    by_rep: dict[int, dict[str, dict]] = {}
    for r in runs:
        if r["server"] == name and "error" not in r:
            by_rep.setdefault(r["rep"], {})[r["scenario"]] = r
    out: dict[str, float | None] = {}
    for metric in ("msgs_per_s", "server_cpu_us_per_msg"):
        ratios = [pair[PROXIED.name][metric] / pair[PLAIN.name][metric]
                  for pair in by_rep.values()
                  if PLAIN.name in pair and PROXIED.name in pair
                  and pair[PLAIN.name].get(metric) and pair[PROXIED.name].get(metric)]
        out[metric] = statistics.median(ratios) if ratios else None
        out[f"{metric}_pairs"] = len(ratios)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_run_args(ap)
    args = ap.parse_args()
    finish_run_args(args)
    if "--repeat" not in sys.argv:
        args.repeat = 7
    ensure_built("proxy_v2_bench")
    pins = pinning(args)
    backends = args.backends.split(",")
    servers = servers_for(backends)
    runs, skipped = run_servers(servers, [PLAIN, PROXIED], args, pins)
    rows = medians(runs, [PLAIN, PROXIED], [srv.name for srv in servers])
    print(headline("PROXY protocol v2 overhead", args, pins[0]) + "\n")
    print(table(rows, COLUMNS))
    print("\nPer-repetition pairs (PROXY v2 / plain, same backend, medians):\n")
    verdicts = {}
    for backend in backends:
        r = paired_ratios(runs, backend)
        verdicts[backend] = r
        rate, cpu = r["msgs_per_s"], r["server_cpu_us_per_msg"]
        if rate is None or cpu is None:
            print(f"- netring[{backend}]: no complete pair")
            continue
        ok = rate >= 1 - MAX_RATE_LOSS
        print(f"- {'met' if ok else 'MISSED'}: netring[{backend}] msgs/s {rate:.3f}x,"
              f" CPU/msg {cpu:.3f}x over {r['msgs_per_s_pairs']} pairs"
              f" (target: at most {MAX_RATE_LOSS:.0%} fewer msgs/s)")
    for note in footnotes(runs, skipped):
        print("\n" + note)
    if args.json:
        save_json(args.json, args, pins[0],
                  {"skipped": skipped, "runs": runs, "medians": rows, "pairs": verdicts})
    if not rows:
        sys.exit(1)


if __name__ == "__main__":
    main()
