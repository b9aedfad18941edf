"""latency: signup→profile under open-loop load; burst: the time to profile a signup burst.

Both read the database's own clock: a profile's `created_at` (its creating transaction's start) minus its
user's `created_at` (the signup transaction's start), so nothing is polled on the measured path.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import redis

from bench import signups
from bench.consumers import running, wait_for_profiles
from bench.cpu import CpuProbe, role_usage, usage
from bench.stages import breakdown
from bench.stats import summary_ms

# Longer than a linger after the last signup (profilesync.publisher.service.LINGER_QUIET): it counts where it
# belongs.
SETTLE = 0.25


@dataclass(frozen=True)
class LatencyPlan:
    rates: tuple[float, ...]
    duration: float
    senders: int
    burst: int
    burst_clients: int
    idle_seconds: float = 6.0  # longer than the publisher's 5 s safety timer, so a timer wake-up counts


def _latencies(url: str, tag: str) -> list[float]:
    query = f"""
        SELECT extract(epoch FROM p.created_at - u.created_at)::float8
        FROM auth.users u JOIN public.user_profiles p ON p.id = u.id
        WHERE u.email LIKE '{tag}-%'
    """  # noqa: S608 -- tag is ours
    with psycopg.connect(url, autocommit=True) as conn:
        return [row[0] for row in conn.execute(query.encode())]


def _burst_times(url: str, tag: str) -> tuple[float, float]:
    """(first signup → last profile, first signup → last signup), in seconds."""
    query = f"""
        SELECT extract(epoch FROM max(p.created_at) - min(u.created_at))::float8,
               extract(epoch FROM max(u.created_at) - min(u.created_at))::float8
        FROM auth.users u JOIN public.user_profiles p ON p.id = u.id
        WHERE u.email LIKE '{tag}-%'
    """  # noqa: S608 -- tag is ours
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query.encode()).fetchone()
    assert row is not None
    return float(row[0]), float(row[1])


def _redis_size(redis_url: str) -> tuple[int, int]:
    """Keys and used_memory (bytes) of the scenario's Redis database / server."""
    client = redis.Redis.from_url(redis_url)
    try:
        return int(client.dbsize()), int(client.info("memory")["used_memory"])
    finally:
        client.close()


def _redis_growth(redis_url: str, keys: int, memory: int, sent: int) -> dict[str, float]:
    """What the signups left behind in Redis once profiled (finished jobs kept by their result TTL)."""
    keys_after, memory_after = _redis_size(redis_url)
    return {
        "redis_keys_per_signup": round((keys_after - keys) / sent, 3),
        "redis_bytes_per_signup": round((memory_after - memory) / sent),
    }


def idle_cpu(probe: CpuProbe, seconds: float) -> dict[str, float]:
    """The consumers' CPU while no signup arrives, in cores (CPU seconds per second), and the publisher's
    polls per second (its linger must have ended: zero)."""
    time.sleep(SETTLE)
    before, polls = probe.sample(), probe.polls()
    time.sleep(seconds)
    used = usage(before, probe.sample())
    cores = {part: round(value / seconds, 4) for part, value in used.items()}
    return {**cores, "polls_per_s": round((probe.polls() - polls) / seconds, 1)}


def measure(scenario: str, database_url: str, redis_url: str, plan: LatencyPlan) -> dict[str, Any]:
    """The latency at each rate, then the burst, with the scenario's consumers running throughout.

    The consumers' CPU is recorded while idle (before any signup, and again after the latency loads: a
    publisher must stop polling once signups stop) and per signup at each rate. Our own pipeline runs traced
    (bench.stages): its stage breakdown and each process's CPU and Redis round trips per signup are in STAGES.
    """
    by_rate: dict[str, Any] = {}
    cpu: dict[str, Any] = {}
    by_role: dict[str, dict[str, float]] = {}
    commits: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-trace-") as tmp:
        trace_dir = Path(tmp) if scenario == "ours" and plan.rates else None
        with running(scenario, database_url, redis_url, trace_dir) as probe:
            if plan.rates:
                cpu["idle_before_cores"] = idle_cpu(probe, plan.idle_seconds)
            for rate in plan.rates:
                key = str(int(rate))
                before, polls, roles = probe.sample(), probe.polls(), probe.role_sample()
                keys, memory = _redis_size(redis_url)
                lag, commits[key] = signups.open_loop(
                    database_url, f"rate{key}", rate, plan.duration, plan.senders
                )
                wait_for_profiles(database_url, f"rate{key}")
                time.sleep(SETTLE)
                used = usage(before, probe.sample())
                sent = int(rate * plan.duration)
                by_role[key] = {
                    r: round(v * 1000 / sent, 3) for r, v in role_usage(roles, probe.role_sample()).items()
                }
                by_rate[key] = {
                    **summary_ms(_latencies(database_url, f"rate{key}")),
                    "max_send_lag_ms": round(lag * 1000, 1),
                    "cpu_ms_per_signup": {part: round(v * 1000 / sent, 3) for part, v in used.items()},
                    "polls_per_signup": round((probe.polls() - polls) / sent, 1),
                    **_redis_growth(redis_url, keys, memory, sent),
                }
            if plan.rates:
                cpu["idle_after_cores"] = idle_cpu(probe, plan.idle_seconds)
            if plan.burst:
                signups.burst(database_url, "burst", plan.burst, plan.burst_clients)
                wait_for_profiles(database_url, "burst")
        stages = (
            {
                key: {**breakdown(trace_dir, commits[key]), "cpu_ms_per_signup": by_role[key]}
                for key in commits
            }
            if trace_dir
            else {}
        )
    if plan.burst == 0:
        return {"latency": by_rate, "CPU": cpu, "STAGES": stages}
    total, signing = _burst_times(database_url, "burst")
    burst = {
        "signups": plan.burst,
        "clients": plan.burst_clients,
        "seconds": round(total, 3),
        "signup_seconds": round(signing, 3),
    }
    return {"latency": by_rate, "burst": burst, "CPU": cpu, "STAGES": stages}
