"""M3: signups/s at 1, 8, 32 clients, with our trigger and the baselines' triggers, relative to no trigger."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

from bench import baselines
from bench.consumers import running
from bench.pgbench import signup_tps
from bench.servers import Servers
from bench.stats import ratio

# variant -> (setup SQL, whether our publisher and worker run during the measurement)
VARIANTS: dict[str, tuple[str, bool]] = {
    "plain": (baselines.PLAIN_SQL, False),
    "supabase": (baselines.SUPABASE_SQL, False),
    "naive_notify": (baselines.NAIVE_SQL, False),
    "ours_busy": (baselines.OURS_BUSY_SQL, False),
    "ours_idle": (baselines.OURS_IDLE_SQL, False),
    "ours_live": ("", True),
}


def measure(servers: Servers, clients: tuple[int, ...], seconds: int) -> dict[str, Any]:
    tps: dict[str, dict[str, float]] = {}
    for variant, (setup, live) in VARIANTS.items():
        url = servers.database(f"m3_{variant}", setup)
        redis_url = servers.redis_db()
        with running("ours", url, redis_url) if live else nullcontext():
            tps[variant] = {str(c): signup_tps(url, c, seconds) for c in clients}
    ratios = {
        variant: {c: ratio(value, tps["plain"][c]) for c, value in by_clients.items()}
        for variant, by_clients in tps.items()
    }
    return {"seconds_per_point": seconds, "tps": tps, "ratio_vs_plain": ratios}
