"""signup_cost `trigger_cpu`: what each trigger variant costs one signup in PostgreSQL CPU, measured in one
backend.

Throughput (pgbench) on a shared 2-core box moves with everyone else's load; CPU time of a single backend
hardly does. Each variant's database gets `signups` one-row autocommit INSERTs (the signup of latency and
signup_cost) from one connection, pipelined and with synchronous_commit off so no fsync wait is in the way;
the backend's own CPU seconds are read from /proc before and after (local servers only). Variants are
interleaved and repeated; the median per variant, and what it adds to the no-trigger INSERT, are reported in
µs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from bench.cpu import parse_proc_stat
from profilesync.devkit.signups import insert_signup, make_signup
from profilesync.devkit.stats import percentile


def _backend_cpu(pid: int) -> float:
    return parse_proc_stat(Path(f"/proc/{pid}/stat").read_text())[1]


def _one(url: str, signups: int) -> float | None:
    """µs of backend CPU per signup, or None when the server's processes are not visible here."""
    made = [make_signup("google") for _ in range(signups)]
    rows = [m.replace(email=f"tc-{m.id.hex[:12]}@bench.example") for m in made]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        pid = conn.info.backend_pid
        try:
            before = _backend_cpu(pid)
        except OSError:
            return None
        with conn.pipeline():  # each INSERT its own (autocommit) transaction, no wait between them
            for row in rows:
                insert_signup(conn, row, prepare=True)
        return round((_backend_cpu(pid) - before) * 1e6 / signups, 1)


def measure(urls: dict[str, str], signups: int, rounds: int) -> dict[str, Any]:
    samples: dict[str, list[float]] = {variant: [] for variant in urls}
    for _ in range(rounds):
        for variant, url in urls.items():
            value = _one(url, signups)
            if value is None:
                return {}
            samples[variant].append(value)
    median = {v: round(percentile(s, 50), 1) for v, s in samples.items()}
    return {
        "signups_per_sample": signups,
        "rounds": rounds,
        "us_per_signup": median,
        "added_us_per_signup": {v: round(m - median["plain"], 1) for v, m in median.items()},
        "all_rounds_us": samples,
    }
