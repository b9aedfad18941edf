"""signup_cost: transactions/s at 1, 8, 32 clients, with our trigger and the baselines' triggers, vs no
trigger.

Shapes of the auth server's work: `signup` (one INSERT per transaction), `gotrue_signup` (INSERT + UPDATE
role + UPDATE metadata in one transaction, as the auth server signs a user up), `gotrue_signup_named` (the
same, the identity data changing the keys the profile reads), `login` (the UPDATE of an existing user's
sign-in time) and `confirm` (an email confirmation: tokens, then the metadata). The last four also run
server-side in one backend (`workload_cpu`, bench.triggercost): CPU per transaction, steadier than tps when
other work shares the machine. Our trigger's ablations (bench/ablations.py) run the `signup` shape at
the most contended point (32 clients).

Points are interleaved and repeated (best of `rounds` per point), so load from other processes on a shared
box hits them alike rather than whichever happened to run at the time. The `*_live` variants' consumers run
throughout; between their own points they are idle (no CPU, checked by latency's idle figures).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import psycopg

from bench import baselines, triggercost
from bench.ablations import ABLATIONS
from bench.consumers import running, wait_for_backlog
from bench.cpu import CpuProbe, usage
from bench.pgbench import signup_tps
from bench.servers import Servers
from bench.signups import (
    CONFIRM_SCRIPT,
    GOTRUE_SIGNUP_NAMED_SCRIPT,
    GOTRUE_SIGNUP_SCRIPT,
    LOGIN_FILL,
    LOGIN_SCRIPT,
    PGBENCH_SCRIPT,
)
from bench.stats import ratio

# variant -> (setup SQL, the consumers running during the measurement: a latency scenario, or None)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "plain": (baselines.PLAIN_SQL, None),
    "supabase": (baselines.SUPABASE_SQL, None),
    "supabase_sync_updates": (baselines.SUPABASE_SYNC_UPDATES_SQL, None),
    "naive_notify": (baselines.NAIVE_SQL, None),
    "ours_busy": (baselines.OURS_BUSY_SQL, None),
    "ours_idle": (baselines.OURS_IDLE_SQL, None),
    "ours_signup_only": (baselines.OURS_SIGNUP_ONLY_SQL, None),
    "ours_live": ("", "ours"),
    "ours_nolinger_live": ("", "ours_nolinger"),
    **{f"ablation_{name}": (baselines.OURS_BUSY_SQL + setup, None) for name, setup in ABLATIONS.items()},
}
ABLATION_CLIENTS = 32
# The variants of the auth server's transactions: no trigger, Supabase's (insert only, and with synchronous
# updates), ours, and ours without the update trigger.
AUTH_VARIANTS = ("plain", "supabase", "supabase_sync_updates", "ours_busy", "ours_signup_only")
# workload -> (pgbench script, the variants it runs); `signup` runs every variant but the update-only ones.
WORKLOADS: dict[str, tuple[str, tuple[str, ...]]] = {
    "signup": (
        PGBENCH_SCRIPT,
        tuple(v for v in VARIANTS if v not in ("supabase_sync_updates", "ours_signup_only")),
    ),
    "gotrue_signup": (GOTRUE_SIGNUP_SCRIPT, AUTH_VARIANTS),
    "gotrue_signup_named": (GOTRUE_SIGNUP_NAMED_SCRIPT, AUTH_VARIANTS),
    "login": (LOGIN_SCRIPT, AUTH_VARIANTS),
    "confirm": (CONFIRM_SCRIPT, AUTH_VARIANTS),
}


def best(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The sample with the highest `key` (the round least disturbed by anything else)."""
    return max(samples, key=lambda sample: float(sample[key]))


def _points(clients: tuple[int, ...]) -> list[tuple[str, str, int]]:
    """(workload, variant, clients) measured in each round, interleaved by client count."""
    return [
        (workload, variant, c)
        for c in clients
        for workload, (_, variants) in WORKLOADS.items()
        for variant in variants
        if not variant.startswith("ablation_") or c == ABLATION_CLIENTS
    ]


def _fill_logins(url: str) -> None:
    """The users the login workload signs in (their outbox events are not what is measured: dropped)."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(LOGIN_FILL.encode())
        conn.execute("TRUNCATE profile_sync.signup_events")
        conn.execute("VACUUM ANALYZE auth.users")


def _summary(chosen: dict[str, dict[str, dict[str, Any]]]) -> dict[str, Any]:
    tps = {v: {c: s["tps"] for c, s in by_c.items()} for v, by_c in chosen.items()}
    return {
        "tps": tps,
        "ratio_vs_plain": {
            v: {c: ratio(value, tps["plain"][c]) for c, value in by_c.items()} for v, by_c in tps.items()
        },
    }


def measure(
    servers: Servers, clients: tuple[int, ...], seconds: int, rounds: int = 2, cpu_signups: int = 5000
) -> dict[str, Any]:
    urls = {variant: servers.database(f"cost_{variant}", setup) for variant, (setup, _) in VARIANTS.items()}
    # Before anything else runs on them (and before the live variants' consumers start): one backend's CPU
    # per signup.
    trigger_cpu = triggercost.measure(
        {v: url for v, url in urls.items() if VARIANTS[v][1] is None}, cpu_signups, max(3, rounds + 1)
    )
    for variant in AUTH_VARIANTS:
        _fill_logins(urls[variant])
    workload_cpu = triggercost.measure_workloads(
        {v: urls[v] for v in AUTH_VARIANTS}, max(200, cpu_signups // 2), max(3, rounds + 1)
    )
    points = _points(clients)
    samples: dict[str, dict[str, dict[str, list[dict[str, Any]]]]] = {w: {} for w in WORKLOADS}
    with ExitStack() as stack:
        probes: dict[str, CpuProbe] = {
            variant: stack.enter_context(running(consumers, urls[variant], servers.redis_db()))
            for variant, (_, consumers) in VARIANTS.items()
            if consumers is not None
        }
        for _ in range(rounds):
            for workload, variant, c in points:
                url = urls[variant]
                probe = probes.get(variant)
                before = probe.sample() if probe else None
                sample: dict[str, Any] = {"tps": signup_tps(url, c, seconds, WORKLOADS[workload][0])}
                if probe and before:
                    sample["consumer_cores"] = round(usage(before, probe.sample())["total"] / seconds, 3)
                    sample["backlog_at_end"] = wait_for_backlog(url)
                samples[workload].setdefault(variant, {}).setdefault(str(c), []).append(sample)
    chosen = {
        w: {v: {c: best(s, "tps") for c, s in by_c.items()} for v, by_c in by_v.items()}
        for w, by_v in samples.items()
    }
    signup = chosen["signup"]
    return {
        "seconds_per_point": seconds,
        "rounds": rounds,
        **_summary(signup),
        "consumer_cores": {
            v: {c: s["consumer_cores"] for c, s in by_c.items()} for v, by_c in signup.items() if v in probes
        },
        "backlog_at_end": {
            v: {c: s["backlog_at_end"] for c, s in by_c.items()} for v, by_c in signup.items() if v in probes
        },
        "all_rounds_tps": {
            v: {c: [s["tps"] for s in ss] for c, ss in by_c.items()} for v, by_c in samples["signup"].items()
        },
        "workloads": {w: _summary(chosen[w]) for w in WORKLOADS if w != "signup"},
        "trigger_cpu": trigger_cpu,
        "workload_cpu": workload_cpu,
    }
