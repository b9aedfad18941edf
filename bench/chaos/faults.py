"""The faults, one small function each: do it, undo it (restart, release, close), say what happened.

Every fault is bounded in time and leaves nothing behind: a killed process is started again as a supervisor
would, a restarted server is up again, a lock is released, every flood socket is closed.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import closing

import psycopg

from bench.chaos import schedule
from bench.chaos.flood import healthz_flood
from bench.chaos.race import soft_delete_race
from bench.chaos.schedule import Param
from bench.chaos.stage import TERMINATE, Stage

LOCK_WAIT = "5s"  # a lock fault that cannot get its lock within this gives up (and says so)


def kill_process(stage: Stage, process: Param) -> str:
    """kill -9 of the process's group, then started again at once, as a supervisor does."""
    name = str(process)
    pid = stage.children.running[name].pid if name in stage.children.running else None
    stage.children.restart(name)
    return f"SIGKILL {name} (pid {pid}), started again (pid {stage.children.running[name].pid})"


def postgres_restart(stage: Stage) -> str:
    """pg_ctl stop -m fast (every session terminated, a checkpoint), then start."""
    started = time.monotonic()
    stage.postgres.stop("fast")
    stage.postgres.start()
    return f"PostgreSQL down and up again in {time.monotonic() - started:.1f} s"


def redis_restart(stage: Stage) -> str:
    """Redis stopped and started again, without persistence: every job, registry and worker key gone."""
    started = time.monotonic()
    stage.redis.restart()
    return f"Redis down and up again in {time.monotonic() - started:.1f} s, empty"


def terminate_backends(stage: Stage, seconds: Param) -> str:
    """Every profilesync backend terminated, once a second for `seconds` s (a failover that flaps)."""
    terminated = 0
    with closing(stage.connect()) as conn:
        for n in range(int(seconds)):
            row = conn.execute(TERMINATE).fetchone()
            terminated += int(row[0]) if row else 0
            if n + 1 < int(seconds):
                time.sleep(1.0)
    return f"{terminated} backends terminated in {int(seconds)} rounds"


def lock_table(stage: Stage, table: Param, seconds: Param) -> str:
    """ACCESS EXCLUSIVE on the table for `seconds` s, then released (a migration or VACUUM FULL)."""
    with closing(stage.connect()) as conn:
        conn.execute(f"SET lock_timeout = '{LOCK_WAIT}'")
        asked = time.monotonic()
        with conn.transaction(force_rollback=True):
            try:
                conn.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")  # table: one of ours
            except psycopg.errors.LockNotAvailable:
                return f"could not lock {table} within {LOCK_WAIT}: not injected"
            waited = time.monotonic() - asked
            time.sleep(float(seconds))
    return f"{table} locked for {float(seconds):.1f} s (after waiting {waited:.2f} s for the lock)"


FAULTS: dict[str, Callable[..., str]] = {
    schedule.KILL: kill_process,
    schedule.POSTGRES_RESTART: postgres_restart,
    schedule.REDIS_RESTART: redis_restart,
    schedule.TERMINATE: terminate_backends,
    schedule.LOCK: lock_table,
    schedule.SOFT_DELETE_RACE: soft_delete_race,
    schedule.FLOOD: healthz_flood,
}
