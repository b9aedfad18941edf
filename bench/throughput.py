"""M3: signups/s at 1, 8, 32 clients, with our trigger and the baselines' triggers, relative to no trigger.

Variants are interleaved and repeated (best of `rounds` per point), so load from other processes on a shared
box hits them alike rather than whichever happened to run at the time. The `*_live` variants' consumers run
throughout; between their own points they are idle (no CPU, checked by M1's idle figures).
"""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

from bench import baselines
from bench.consumers import running, wait_for_backlog
from bench.cpu import CpuProbe, usage
from bench.pgbench import signup_tps
from bench.servers import Servers
from bench.stats import ratio

# variant -> (setup SQL, the consumers running during the measurement: a latency scenario, or None)
VARIANTS: dict[str, tuple[str, str | None]] = {
    "plain": (baselines.PLAIN_SQL, None),
    "supabase": (baselines.SUPABASE_SQL, None),
    "naive_notify": (baselines.NAIVE_SQL, None),
    "ours_busy": (baselines.OURS_BUSY_SQL, None),
    "ours_idle": (baselines.OURS_IDLE_SQL, None),
    "ours_live": ("", "ours"),
    "ours_nolinger_live": ("", "ours_nolinger"),
}


def best(samples: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """The sample with the highest `key` (the round least disturbed by anything else)."""
    return max(samples, key=lambda sample: float(sample[key]))


def measure(servers: Servers, clients: tuple[int, ...], seconds: int, rounds: int = 2) -> dict[str, Any]:
    urls = {variant: servers.database(f"m3_{variant}", setup) for variant, (setup, _) in VARIANTS.items()}
    samples: dict[str, dict[str, list[dict[str, Any]]]] = {v: {str(c): [] for c in clients} for v in VARIANTS}
    with ExitStack() as stack:
        probes: dict[str, CpuProbe] = {
            variant: stack.enter_context(running(consumers, urls[variant], servers.redis_db()))
            for variant, (_, consumers) in VARIANTS.items()
            if consumers is not None
        }
        for _ in range(rounds):
            for c in clients:
                for variant, url in urls.items():
                    probe = probes.get(variant)
                    before = probe.sample() if probe else None
                    sample: dict[str, Any] = {"tps": signup_tps(url, c, seconds)}
                    if probe and before:
                        sample["consumer_cores"] = round(usage(before, probe.sample())["total"] / seconds, 3)
                        sample["backlog_at_end"] = wait_for_backlog(url)
                    samples[variant][str(c)].append(sample)
    chosen = {v: {c: best(s, "tps") for c, s in by_c.items()} for v, by_c in samples.items()}
    tps = {v: {c: s["tps"] for c, s in by_c.items()} for v, by_c in chosen.items()}
    return {
        "seconds_per_point": seconds,
        "rounds": rounds,
        "tps": tps,
        "ratio_vs_plain": {
            v: {c: ratio(value, tps["plain"][c]) for c, value in by_c.items()} for v, by_c in tps.items()
        },
        "consumer_cores": {
            v: {c: s["consumer_cores"] for c, s in by_c.items()} for v, by_c in chosen.items() if v in probes
        },
        "backlog_at_end": {
            v: {c: s["backlog_at_end"] for c, s in by_c.items()} for v, by_c in chosen.items() if v in probes
        },
        "all_rounds_tps": {
            v: {c: [s["tps"] for s in ss] for c, ss in by_c.items()} for v, by_c in samples.items()
        },
    }
