"""doctor against real publisher processes: it fails within one safety interval of the last publisher
stopping (killed, or alive but stuck), and warns about a snapshot held long enough to slow polling."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest

from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.ops import doctor
from tests.harness import IDLE_PUBLISHERS, count, signup, wait_for

SAFETY_INTERVAL = 2.0


def _check(settings: Settings, name: str) -> doctor.Check:
    checks = doctor.evaluate(doctor.gather(settings), doctor.Thresholds.from_settings(settings))
    return next(c for c in checks if c.name == name)


def _publishers_fail(settings: Settings) -> bool:
    return _check(settings, "publishers").status == "fail"


@pytest.fixture
def doctor_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"safety_interval": SAFETY_INTERVAL})


@pytest.fixture
def publishers(doctor_settings: Settings, tmp_path: Path) -> Any:
    env = {k: v for k, v in os.environ.items() if k != "LISTEN_DATABASE_URL"}
    env.update(
        {
            "DATABASE_URL": doctor_settings.database_url,
            "REDIS_URL": doctor_settings.redis_url,
            "PROFILESYNC_SAFETY_INTERVAL": str(SAFETY_INTERVAL),
            "PROFILESYNC_LOG_FORMAT": "json",
        }
    )
    children = Children(env, tmp_path)
    yield children
    children.stop(timeout=10)


def test_doctor_fails_within_a_safety_interval_of_the_last_publisher_dying(
    conn: psycopg.Connection[Any], doctor_settings: Settings, publishers: Children
) -> None:
    publishers.start("publisher-1", "publisher")
    publishers.start("publisher-2", "publisher")
    assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 2)
    assert _check(doctor_settings, "publishers") == doctor.Check("publishers", "ok", "2 alive")

    publishers.kill("publisher-1")  # SIGKILL: its row stays behind, its backend is gone
    assert wait_for(lambda: _check(doctor_settings, "publishers").detail == "1 alive", SAFETY_INTERVAL)
    assert count(conn, "SELECT count(*) FROM profile_sync.publishers") == 2

    stopped = time.monotonic()
    publishers.kill("publisher-2")
    assert wait_for(lambda: _publishers_fail(doctor_settings), SAFETY_INTERVAL)
    print(f"doctor failed {time.monotonic() - stopped:.2f}s after the last publisher was killed")
    assert "none alive" in _check(doctor_settings, "publishers").detail


def test_doctor_fails_when_a_live_publisher_stops_claiming_events(
    conn: psycopg.Connection[Any], doctor_settings: Settings, publishers: Children
) -> None:
    publishers.start("publisher", "publisher")
    assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 1)
    process = publishers.running["publisher"]
    os.killpg(process.pid, signal.SIGSTOP)  # wedged: its backend stays connected, nothing gets claimed
    try:
        signed_up = time.monotonic()
        signup(conn, "email")
        assert wait_for(lambda: _publishers_fail(doctor_settings), 2 * SAFETY_INTERVAL)
        waited = time.monotonic() - signed_up
        print(f"doctor failed {waited:.2f}s after an unclaimed signup (safety interval {SAFETY_INTERVAL}s)")
        assert waited >= SAFETY_INTERVAL  # not before the publisher's own safety drain was due
        assert "an event waits" in _check(doctor_settings, "publishers").detail
    finally:
        os.killpg(process.pid, signal.SIGCONT)
    assert wait_for(lambda: not _publishers_fail(doctor_settings))  # it claims the event once resumed


def test_doctor_warns_about_a_long_held_snapshot(
    conn: psycopg.Connection[Any], settings: Settings, database_url: str
) -> None:
    limits = settings.model_copy(update={"doctor_max_snapshot_age": 0.5})
    with psycopg.connect(database_url, application_name="long-report") as holder:
        holder.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        holder.execute("SELECT count(*) FROM profile_sync.signup_events")  # takes the snapshot
        pid = holder.info.backend_pid
        assert wait_for(lambda: _check(limits, "snapshots").status == "warn")
        detail = _check(limits, "snapshots").detail
        assert detail.startswith(f"pid {pid} (long-report, idle in transaction) holds a snapshot for")
        holder.rollback()
    assert _check(limits, "snapshots").status == "ok"
