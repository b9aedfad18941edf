"""`python -m bench [--quick] [--only latency signup_cost ...]`: measure, print the markdown table, write
bench/results/.
`python -m bench --chaos MINUTES [--seed N]`: the chaos soak (bench.chaos); exits 1 when its audit fails.

The metrics: `latency` (signup → profile under open-loop load), `burst` (a signup burst fully profiled),
`signup_cost` (what the trigger costs a signup: pgbench, backend CPU, GoTrue's transactions), `chat_path`
(ChatService and the client guarantee on the fast path), `publisher` (events/s), `worker` (profiles/s),
`sweeper` (the unrecorded-users sweep at scale). Their targets are in bench/targets.py.
"""

from __future__ import annotations

import argparse
import os
import time
from datetime import UTC, datetime
from typing import Any

from bench import baselines, chatcost, latency, rates, report, sweepcost, throughput
from bench.chaos import report as chaos_report
from bench.chaos.run import ChaosOptions
from bench.chaos.run import run as run_chaos
from bench.cpu import OtherLoad
from bench.servers import servers
from bench.targets import targets
from profilesync.logs import configure

METRICS = ("latency", "burst", "signup_cost", "chat_path", "publisher", "worker", "sweeper")
LATENCY_SCENARIOS = {
    "ours": "",
    "ours_nolinger": "",
    "ours_jobtx": "",
    "ours_rqlines": "",
    "ideal": "",
    "naive": baselines.NAIVE_SQL,
    "supabase": baselines.SUPABASE_SQL,
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the pipeline against in-run baselines on the same servers. Servers: "
        "BENCH_DATABASE_URL (may CREATE DATABASE) and BENCH_REDIS_URL, else embedded durable ones.",
    )
    parser.add_argument("--quick", action="store_true", help="short runs (development; figures are rough)")
    parser.add_argument("--only", nargs="+", choices=METRICS, default=list(METRICS), help="metrics to run")
    parser.add_argument(
        "--chaos",
        type=float,
        metavar="MINUTES",
        help="instead: a chaos soak of MINUTES (steady signups, a random fault every 20 to 40 s, an audit) "
        "on private servers (PROFILESYNC_POSTGRES_BIN / PROFILESYNC_REDIS_SERVER choose their binaries)",
    )
    parser.add_argument("--seed", type=int, default=1, help="the chaos soak's seed (its fault schedule)")
    args = parser.parse_args(argv)
    if args.chaos is not None and args.chaos <= 0:
        parser.error("--chaos MINUTES must be positive")
    return args


def run(only: list[str], quick: bool) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {
        "meta": {
            "mode": "quick" if quick else "full",
            "started": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "cpus": os.cpu_count(),
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
            "servers": "env" if os.environ.get("BENCH_DATABASE_URL") else "embedded (fsync on)",
        }
    }
    with servers() as found:
        results["meta"].update(found.versions())
        other_load = OtherLoad([os.getpid(), *found.server_pids()])
        if "latency" in only or "burst" in only:
            plan = latency.LatencyPlan(
                rates=(5.0, 100.0, 250.0) if "latency" in only else (),
                duration=3.0 if quick else 10.0,
                idle_seconds=2.0 if quick else 6.0,
                senders=4,
                burst=(1000 if quick else 5000) if "burst" in only else 0,
                burst_clients=8,
            )
            for scenario, setup in LATENCY_SCENARIOS.items():
                url = found.database(f"lat_{scenario}", setup)
                measured = latency.measure(scenario, url, found.redis_db(), plan)
                for metric, value in measured.items():
                    if value:
                        results.setdefault(metric, {})[scenario] = value
                print(f"{scenario}: {measured}", flush=True)
        if "signup_cost" in only:
            results["signup_cost"] = throughput.measure(
                found, (1, 8, 32), 2 if quick else 5, 1 if quick else 2, 2000 if quick else 5000
            )
        if "publisher" in only or "worker" in only:
            results.update(rates.measure(found, 5000 if quick else 20000, 500 if quick else 3000))
        if "chat_path" in only:
            results["chat_path"] = chatcost.measure(found, 100 if quick else 1000)
        if "sweeper" in only:
            results["sweeper"] = sweepcost.measure(found, 100_000 if quick else 1_000_000)
        results["meta"]["cpu_cores_during_run"] = other_load.cores()
    results["targets"] = targets(results)
    results["meta"]["seconds"] = round(time.monotonic() - started, 1)
    results["meta"]["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
    return results


def chaos(minutes: float, seed: int) -> int:
    try:
        results = run_chaos(ChaosOptions(minutes=minutes, seed=seed))
    except KeyboardInterrupt:
        print("\ninterrupted: processes and servers stopped")
        return 130
    path = chaos_report.write(results)
    print(chaos_report.markdown(results))
    print(f"written: {path} and {path.with_suffix('.json')}")
    return 0 if chaos_report.passed(results) else 1


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    configure("WARNING")
    if args.chaos is not None:
        return chaos(args.chaos, args.seed)
    results = run(args.only, args.quick)
    path = report.write(results)
    print(report.markdown(results))
    print(f"written: {path} and {path.with_suffix('.json')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
