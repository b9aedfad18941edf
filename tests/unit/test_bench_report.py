import json
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from bench import report
from bench.__main__ import parse_args
from bench.counting import counting_redis
from bench.pgbench import parse_tps
from bench.targets import targets

PGBENCH_OUTPUT = """\
transaction type: /tmp/x.sql
scaling factor: 1
number of clients: 32
number of transactions actually processed: 120000
latency average = 1.6 ms
initial connection time = 25.1 ms
tps = 19876.543210 (without initial connection time)
"""


def _results() -> dict[str, Any]:
    return {
        "meta": {"mode": "quick", "started": "2026-01-01 00:00 UTC"},
        "latency": {
            "ours": {
                "250": {
                    "n": 10, "p50_ms": 2.5, "p99_ms": 7.0, "max_ms": 9.0, "max_send_lag_ms": 0.0,
                    "cpu_ms_per_signup": {"total": 3.5}, "polls_per_signup": 4.0,
                }
            },
            "ideal": {"250": {"n": 10, "p50_ms": 1.0, "p99_ms": 3.5, "max_ms": 4.0, "max_send_lag_ms": 0.0}},
        },
        "burst": {
            "ours": {"signups": 100, "clients": 8, "seconds": 3.0, "signup_seconds": 1.0},
            "ideal": {"signups": 100, "clients": 8, "seconds": 1.0, "signup_seconds": 1.0},
        },
        "signup_cost": {
            "seconds_per_point": 2,
            "tps": {"plain": {"32": 1000.0}, "ours_busy": {"32": 700.0}, "ours_live": {"32": 800.0}},
            "ratio_vs_plain": {"plain": {"32": 1.0}, "ours_busy": {"32": 0.7}, "ours_live": {"32": 0.8}},
            "consumer_cores": {"ours_live": {"32": 0.45}},
            "backlog_at_end": {"ours_live": {"32": 1234}},
            "workload_cpu": {
                "transactions_per_sample": 200,
                "rounds": 3,
                "us_per_transaction": {"confirm": {"plain": 100.0, "ours_busy": 172.0}},
                "ratio_vs_plain": {"confirm": {"plain": 1.0, "ours_busy": 0.58}},
            },
        },
        "chat_path": {
            "calls": 5,
            "chat": {"p50_ms": 0.2, "p99_ms": 0.3, "round_trips_per_call": 1.0},
            "raw_insert": {"p50_ms": 0.2, "p99_ms": 0.3, "round_trips_per_call": 1.0},
            "added_p50_ms": 0.0,
            "added_round_trips": 0.0,
            "client": {
                "calls": 5,
                "guarded_insert": {"p50_ms": 0.25, "p99_ms": 0.4, "round_trips_per_call": 2.0},
                "raw_insert": {"p50_ms": 0.23, "p99_ms": 0.35, "round_trips_per_call": 2.0},
                "added_p50_ms": 0.02,
                "added_p50_paired_ms": 0.021,
                "added_round_trips": 0.0,
            },
        },
        "worker": {
            "batched": {
                "users": 10,
                "profiles_per_s": 999.0,
                "redis_round_trips_per_profile": 0.1,
                "redis_commands_per_profile": 0.2,
            },
            "one_job_per_user": {
                "users": 10,
                "profiles_per_s": 250.0,
                "redis_round_trips_per_profile": 20.0,
                "redis_commands_per_profile": 57.0,
            },
        },
    }  # fmt: skip


def test_targets_are_judged_from_the_figures() -> None:
    verdicts = {(t["metric"], t["target"]): t["met"] for t in targets(_results())}
    assert verdicts[("latency", "p50 <= 2x ideal at 250 signups/s")] is False
    assert verdicts[("latency", "p99 <= 3x ideal at 250 signups/s")] is True
    assert verdicts[("burst", "100-signup burst fully profiled within 2x ideal batched SQL")] is False
    assert (
        verdicts[("signup_cost", "our trigger alone (publisher not idle) >= 0.85x no trigger, 32 clients")]
        is False
    )
    assert verdicts[("chat_path", "chat fast path adds 0 round trips")] is True
    assert verdicts[("worker", ">= 1,000 profiles/s per worker process")] is False


def test_targets_skip_what_was_not_measured() -> None:
    assert targets({"meta": {}}) == []


def test_markdown_shows_ratios_against_the_in_run_baselines() -> None:
    results = _results()
    results["targets"] = targets(results)
    text = report.markdown(results)
    # latency: p50 2.5 vs ideal 1.0, p99 7.0 vs 3.5; CPU and DB transactions per signup
    assert "| ours | 250 | 10 | 2.50 | 7.00 | 9.00 | 2.50x | 2.00x | 3.50 | 4.00 | - | 0.00 |" in text
    assert "| ideal | 250 | 10 | 1.00 | 3.50 | 4.00 | 1.00x | 1.00x | - | - | - | 0.00 |" in text
    # burst: 3.0 s vs ideal 1.0 s
    assert "| ours | 100 | 8 | 1.00 | 3.00 | 3.00x |" in text
    # signup_cost: tps (ratio vs plain), the consumers' cores and the backlog they left
    assert "| ours_live | 800 (0.80x) | 0.45 | 1234 |" in text
    assert "| ours_busy | 700 (0.70x) | - | - |" in text
    # signup_cost workload CPU: µs per transaction (transactions per CPU second vs no trigger)
    assert "| confirm | 100.0 (1.00x) | 172.0 (0.58x) |" in text
    # worker: batched vs one job per user
    assert "| batched | 10 | 999 | 0.10 | 0.20 | 4.00x |" in text
    # the verdicts, failures stand out
    assert "| worker | >= 1,000 profiles/s per worker process | 999 | **NOT met** |" in text
    assert "| chat_path | chat fast path adds 0 round trips | 0.00 | met |" in text
    # chat_path client: the guarded insert vs its trigger-less twin
    assert "| guarded_insert | 0.25 | 0.40 | 2.00 |" in text
    assert "added p50: 0.02 ms (median of paired differences 0.021 ms), added round trips: 0.0, " in text
    assert "| chat_path | client insert guard (profile present) adds p50 <= 0.05 ms | 0.02 | met |" in text


def test_write_files(tmp_path: Path) -> None:
    results = _results()
    path = report.write(results, tmp_path)
    assert path.read_text().startswith("# profilesync benchmark (quick run")
    assert json.loads((tmp_path / "latest.json").read_text())["worker"]["batched"]["users"] == 10


def test_parse_tps() -> None:
    assert parse_tps(PGBENCH_OUTPUT) == pytest.approx(19876.54321)
    with pytest.raises(ValueError):
        parse_tps("pgbench: error")


def test_cli_arguments() -> None:
    args = parse_args(["--quick", "--only", "signup_cost", "worker"])
    assert args.quick and args.only == ["signup_cost", "worker"]
    assert parse_args([]).only == [
        "latency",
        "burst",
        "signup_cost",
        "chat_path",
        "publisher",
        "worker",
        "sweeper",
    ]
    with pytest.raises(SystemExit):
        parse_args(["--only", "M1"])  # not a metric


def test_counting_redis_counts_a_pipeline_as_one_round_trip() -> None:
    client, counter = counting_redis(
        "redis://localhost:6379/0", base=fakeredis.FakeRedisConnection, server=fakeredis.FakeServer()
    )
    client.set("a", 1)  # connects: the handshake's requests count too
    counter.count = 0
    with client.pipeline() as pipe:
        pipe.set("b", 2).set("c", 3).get("a")
        pipe.execute()
    assert counter.count == 1
    assert client.get("c") == b"3"
    assert counter.count == 2
