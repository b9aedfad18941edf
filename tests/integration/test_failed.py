"""`profilesync failed` on real Redis + PostgreSQL: failed jobs (id, users, reason, first/last failure) and
permanently failed signup events, then the replay the ids are for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime
from typing import Any

import psycopg
import pytest
import redis

from profilesync import cli
from profilesync.config import Settings
from profilesync.queueing import CREATE_PROFILES, profiles_queue
from tests.harness import (
    PROFILE_OF,
    allow_profiles,
    count,
    publish_all,
    refuse_profiles,
    run_worker_burst,
    signup,
)


def _failed(capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    capsys.readouterr()
    assert cli.main(["failed", "--json"]) == 0
    out = capsys.readouterr().out
    report: dict[str, Any] = json.loads(out[out.index('{\n  "jobs"') :])
    return report


def test_failed_lists_jobs_with_users_reason_and_times_then_replay_fixes_them(
    settings: Settings,
    conn: psycopg.Connection[Any],
    redis_conn: redis.Redis,
    env: dict[str, str],
    capsys: pytest.CaptureFixture[str],
) -> None:
    refuse_profiles(conn)
    user_id = str(signup(conn, "github"))
    publish_all(settings, conn)
    bad = profiles_queue(redis_conn).enqueue(CREATE_PROFILES, args=(["not-a-uuid"],))
    run_worker_burst(settings)

    report = _failed(capsys)
    jobs = {tuple(job["user_ids"]): job for job in report["jobs"]}
    assert set(jobs) == {(user_id,), ("not-a-uuid",)}
    assert jobs[("not-a-uuid",)]["job_id"] == bad.id
    assert jobs[("not-a-uuid",)]["reason"] == (
        "PermanentJobError: Profile creation failed permanently (replay the job once the cause is fixed): "
        "not a user id (UUID): not-a-uuid"
    )
    assert jobs[(user_id,)]["reason"].startswith("PermanentJobError: Profile creation failed")
    assert 'violates check constraint "no_profiles"' in jobs[(user_id,)]["reason"]
    assert [(e["user_id"], e["job_id"]) for e in report["events"]] == [(user_id, jobs[(user_id,)]["job_id"])]

    assert cli.main(["replay", bad.id]) == 0  # it fails again: two failures, first before last
    run_worker_burst(settings)
    again = next(job for job in _failed(capsys)["jobs"] if job["job_id"] == bad.id)
    assert again["failures"] == 2
    assert datetime.fromisoformat(again["first_failed_at"]) < datetime.fromisoformat(again["last_failed_at"])

    table = subprocess.run(
        [os.path.join(os.path.dirname(sys.executable), "profilesync"), "failed"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert table.returncode == 0, table.stderr
    assert table.stdout.startswith("2 failed job(s)\n")
    assert f"  {bad.id}  first " in table.stdout and "x2  users not-a-uuid" in table.stdout
    assert "1 failed signup event(s)\n  event " in table.stdout and f"user {user_id}" in table.stdout

    allow_profiles(conn)
    assert cli.main(["replay", jobs[(user_id,)]["job_id"]]) == 0
    run_worker_burst(settings)
    assert count(conn, PROFILE_OF, (user_id,)) == 1
    report = _failed(capsys)
    assert [job["job_id"] for job in report["jobs"]] == [bad.id] and report["events"] == []
