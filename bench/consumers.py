"""The processes that turn signups into profiles, per scenario, started and stopped around a measurement."""

from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import redis
from rq.worker import Worker

from bench.baselines import run_ideal, run_naive, run_no_linger, run_worker_ablation
from bench.cpu import CpuProbe
from bench.stages import run_traced_publisher, run_traced_worker

# Scenarios whose profiles are created by something outside the signup transaction.
ASYNC_SCENARIOS = ("ours", "ours_nolinger", "naive", "ideal")
# Ablations of our pipeline (bench.baselines): the publisher's, and the worker's with the real publisher.
PUBLISHER_ABLATIONS = {"ours_nolinger": run_no_linger}
WORKER_ABLATIONS = {"ours_jobtx": "jobtx", "ours_rqlines": "rqlines"}
# application_name of the consumers' PostgreSQL connections (their backends' CPU counts as theirs).
BACKEND_NAMES = ("profilesync-listen", "profilesync-publisher", "profilesync-worker", "bench-naive")


def _wait(predicate: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.05)


def _scalar(url: str, query: str) -> Any:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(query.encode()).fetchone()
        return row[0] if row else None


def _cli(command: str, database_url: str, redis_url: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "PROFILESYNC_LOG_FORMAT": "json",
    }
    env.pop("LISTEN_DATABASE_URL", None)
    return subprocess.Popen(
        [sys.executable, "-m", "profilesync.cli", command],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _worker_ready(redis_url: str) -> bool:
    with redis.Redis.from_url(redis_url) as conn:
        return int(Worker.count(connection=conn)) >= 1


def _registered(database_url: str) -> bool:
    return bool(_scalar(database_url, "SELECT count(*) FROM profile_sync.publishers"))


@contextmanager
def running(
    scenario: str, database_url: str, redis_url: str, trace_dir: Path | None = None
) -> Iterator[CpuProbe]:
    """Start the scenario's consumers (publisher, worker), wait until they are ready; stop them after.

    Yields a probe of their CPU use (processes, their PostgreSQL backends, Redis). With `trace_dir`, `ours`
    runs as traced processes (bench.stages) that write their traces there when stopped; without, as the
    `profilesync publisher` / `worker` commands.
    """
    ctx = multiprocessing.get_context("spawn")
    children: list[subprocess.Popen[bytes]] = []
    helpers: list[multiprocessing.process.BaseProcess] = []
    roles: dict[str, int] = {}
    try:
        if scenario == "ours" and trace_dir is not None:
            for role, target in (("publisher", run_traced_publisher), ("worker", run_traced_worker)):
                trace = str(trace_dir / f"{role}.json")
                helpers.append(ctx.Process(target=target, args=(database_url, redis_url, trace)))
                helpers[-1].start()
                roles[role] = helpers[-1].pid or 0
            _wait(lambda: _registered(database_url), "traced publisher")
            _wait(lambda: _worker_ready(redis_url), "traced worker")
        elif scenario == "ours" or scenario in WORKER_ABLATIONS:
            children.append(_cli("publisher", database_url, redis_url))
            _wait(lambda: _registered(database_url), "publisher")
        elif scenario in PUBLISHER_ABLATIONS:
            helpers.append(ctx.Process(target=PUBLISHER_ABLATIONS[scenario], args=(database_url, redis_url)))
            helpers[-1].start()
            _wait(lambda: _registered(database_url), f"publisher of {scenario}")
        elif scenario == "naive":
            ready = ctx.Event()
            helpers.append(ctx.Process(target=run_naive, args=(database_url, redis_url, ready)))
            helpers[-1].start()
            if not ready.wait(30):
                raise RuntimeError("naive listener did not start")
        elif scenario == "ideal":
            helpers.append(ctx.Process(target=run_ideal, args=(database_url, redis_url)))
            helpers[-1].start()
            _wait(lambda: _registered(database_url), "ideal")
        if scenario in WORKER_ABLATIONS:
            args = (database_url, redis_url, WORKER_ABLATIONS[scenario])
            helpers.append(ctx.Process(target=run_worker_ablation, args=args))
            helpers[-1].start()
            _wait(lambda: _worker_ready(redis_url), f"worker of {scenario}")
        elif scenario in ("ours", "naive", *PUBLISHER_ABLATIONS) and not roles:
            children.append(_cli("worker", database_url, redis_url))
            _wait(lambda: _worker_ready(redis_url), "worker")
        pids = [child.pid for child in children] + [helper.pid for helper in helpers if helper.pid]
        yield CpuProbe(database_url, redis_url, pids, BACKEND_NAMES, roles)
    finally:
        for child in children:
            child.terminate()
        for helper in helpers:
            helper.terminate()
        for child in children:
            child.wait(timeout=30)
        for helper in helpers:
            helper.join(timeout=30)


def wait_for_profiles(database_url: str, tag: str, timeout: float = 300.0) -> None:
    """Until every tagged signup has its profile (polled here, outside anything measured)."""
    query = f"""
        SELECT count(*) FROM auth.users u LEFT JOIN public.user_profiles p ON p.id = u.id
        WHERE u.email LIKE '{tag}-%' AND p.id IS NULL
    """  # noqa: S608 -- tag is ours
    _wait(lambda: _scalar(database_url, query) == 0, f"profiles of {tag}", timeout)


def wait_for_backlog(database_url: str, timeout: float = 300.0) -> int:
    """Signups still without a profile now; then wait until the consumers have caught up with them all."""
    query = "SELECT count(*) FROM profile_sync.signup_events"
    backlog = int(_scalar(database_url, query))
    _wait(lambda: _scalar(database_url, query) == 0, "the backlog to clear", timeout)
    return backlog
