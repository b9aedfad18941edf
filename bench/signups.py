"""Signup load: open-loop senders and burst clients, each a process with its own autocommit connection.

A signup is one INSERT INTO auth.users shaped like Supabase's for a Google sign-in (the devkit's simulated
signup, shared with the demo and the tests); emails carry a tag so a scenario's figures can be read back from
the database (clock: the database's own `now()`).
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.queues
import time
from typing import Any

import psycopg

from bench.schedule import open_loop_offsets, split
from profilesync.devkit.signups import insert_signup, make_signup

# The same signup for pgbench (M3), one per transaction.
PGBENCH_SCRIPT = """\\set r random(1, 2000000000)
INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, raw_app_meta_data, created_at) \
VALUES (gen_random_uuid(), 'authenticated', 'authenticated', 'pgb' || :r || '@bench.example', \
'{"full_name": "Bench User", "avatar_url": "https://lh3.googleusercontent.com/a/bench.jpg"}', \
'{"provider": "google"}', now());
"""


def signup(conn: psycopg.Connection[Any], tag: str) -> None:
    simulated = make_signup("google")
    tagged = simulated.replace(email=f"{tag}-{simulated.id.hex[:12]}@bench.example")
    insert_signup(conn, tagged, prepare=True)


def _open_loop_sender(url: str, tag: str, offsets: list[float], start: float, out: Any) -> None:
    """Send at the scheduled times whatever the replies take; report the worst lag behind schedule."""
    worst_lag = 0.0
    with psycopg.connect(url, autocommit=True) as conn:
        for offset in offsets:
            delay = start + offset - time.time()
            if delay > 0:
                time.sleep(delay)
            else:
                worst_lag = max(worst_lag, -delay)
            signup(conn, tag)
    out.put(worst_lag)


def _burst_client(url: str, tag: str, count: int, start: float, out: Any) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        time.sleep(max(0.0, start - time.time()))
        for _ in range(count):
            signup(conn, tag)
    out.put(0.0)


def _run(target: Any, jobs: list[tuple[Any, ...]]) -> float:
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.queues.Queue[float] = ctx.Queue()
    procs = [ctx.Process(target=target, args=(*job, out)) for job in jobs]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=600) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
        if proc.exitcode != 0:
            raise RuntimeError(f"signup process {proc.pid} exited with {proc.exitcode}")
    return max(results)


def open_loop(url: str, tag: str, rate: float, duration: float, senders: int) -> float:
    """`rate` signups/s for `duration` s from `senders` processes; returns the worst lag (s) behind it."""
    start = time.time() + 1.5  # spawned processes need a moment to import and connect
    jobs = [(url, tag, open_loop_offsets(rate, duration, senders, i), start) for i in range(senders)]
    return _run(_open_loop_sender, jobs)


def burst(url: str, tag: str, total: int, clients: int) -> None:
    """`total` signups as fast as `clients` processes can insert them."""
    start = time.time() + 1.5
    _run(_burst_client, [(url, tag, count, start) for count in split(total, clients)])
