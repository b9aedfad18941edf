"""doctor stays bounded on a bad day: behind an ACCESS EXCLUSIVE lock (VACUUM FULL, LOCK TABLE) each check
that cannot read fails with the reason and the run ends within PROFILESYNC_DOCTOR_TIMEOUT; `--only` runs
only its checks' queries; a doctor killed mid-wait leaves no backend waiting; Redis refusing writes fails."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

from profilesync.config import Settings
from tests.harness import count, process_env, wait_for

DOCTOR = [sys.executable, "-m", "profilesync.cli", "doctor", "--json"]
LOCKED = ("backlog", "failed_events", "users_without_profiles", "publishers")  # read the locked tables
DOCTOR_BACKENDS = """
SELECT count(*) FROM pg_stat_activity
WHERE application_name = 'profilesync-doctor' AND datname = current_database() AND wait_event_type = %s
"""


@pytest.fixture
def locked(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    """The outbox and the profile table held ACCESS EXCLUSIVE (as VACUUM FULL holds them) for the test."""
    with psycopg.connect(database_url, application_name="vacuum-full") as holder:
        holder.execute("LOCK TABLE profile_sync.signup_events, public.user_profiles IN ACCESS EXCLUSIVE MODE")
        yield holder
        holder.rollback()


def _doctor(settings: Settings, *args: str) -> tuple[int, dict[str, dict[str, str]], float]:
    env = process_env(settings, PROFILESYNC_DOCTOR_TIMEOUT="8", PROFILESYNC_LOCK_TIMEOUT="1")
    started = time.monotonic()
    done = subprocess.run([*DOCTOR, *args], env=env, capture_output=True, text=True, timeout=60)
    elapsed = time.monotonic() - started
    report = json.loads(done.stdout[done.stdout.index('{\n  "healthy"') :])
    return done.returncode, {c["name"]: c for c in report["checks"]}, elapsed


def test_doctor_behind_an_access_exclusive_lock_fails_those_checks_in_bounded_time(
    settings: Settings, locked: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    code, checks, elapsed = _doctor(settings)
    print(f"doctor behind ACCESS EXCLUSIVE locks: exit {code} in {elapsed:.1f}s (bound 8s + process start)")
    assert code == 1
    for name in LOCKED:
        assert checks[name]["status"] == "fail"
        assert checks[name]["detail"].startswith("could not read: lock timeout"), checks[name]
    assert checks["trigger"]["status"] == "ok" and checks["database"]["status"] == "ok"
    assert elapsed < 8 + 10  # the checks' own bound; the rest is starting Python on a loaded box
    assert count(conn, DOCTOR_BACKENDS, ("Lock",)) == 0

    code, checks, elapsed = _doctor(settings, "--only", "database,trigger,redis")  # no query on the tables
    assert (code, sorted(checks)) == (0, ["database", "redis", "trigger"])
    code, checks, _ = _doctor(settings, "--only", "backlog")
    assert (code, list(checks)) == (1, ["backlog"])
    assert checks["backlog"]["detail"].startswith("could not read: lock timeout")


def test_a_killed_doctor_leaves_no_backend_waiting_for_the_lock(
    settings: Settings, locked: psycopg.Connection[Any], conn: psycopg.Connection[Any]
) -> None:
    lock_timeout = 3.0
    env = process_env(settings, PROFILESYNC_DOCTOR_TIMEOUT="60", PROFILESYNC_LOCK_TIMEOUT=str(lock_timeout))
    doctor = subprocess.Popen(
        [*DOCTOR, "--only", "backlog"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        assert wait_for(lambda: count(conn, DOCTOR_BACKENDS, ("Lock",)) == 1)
    finally:
        doctor.kill()  # as a container healthcheck's timeout does
        doctor.wait(timeout=10)
    killed = time.monotonic()
    gone = "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'profilesync-doctor'"
    assert wait_for(lambda: count(conn, gone) == 0, timeout=lock_timeout + 10)
    print(f"the killed doctor's backend ended {time.monotonic() - killed:.1f}s after the kill")


def test_doctor_fails_when_redis_refuses_writes(settings: Settings, redis_conn: redis.Redis) -> None:
    env = process_env(settings)
    before = redis_conn.config_get("maxmemory")["maxmemory"]
    redis_conn.config_set("maxmemory-policy", "noeviction")
    redis_conn.config_set("maxmemory", 1)  # far below what Redis already uses: every write is refused
    try:
        done = subprocess.run(
            [*DOCTOR[:-1], "--only", "redis,redis_writes"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        redis_conn.config_set("maxmemory", before)
    assert done.returncode == 1, done.stdout + done.stderr
    line = next(line for line in done.stdout.splitlines() if "redis_writes" in line)
    assert line.startswith("FAIL  redis_writes  refuses writes (command not allowed when used memory")
    assert "maxmemory reached: raise maxmemory or free memory" in line
    assert "OK    redis " in done.stdout
