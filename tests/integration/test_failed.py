"""`profilesync failed` on real Redis + PostgreSQL: failed jobs (id, users, reason, first/last failure) and
permanently failed signup events, then the replay the ids are for."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
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


def _hostile_job(redis_conn: redis.Redis, job_id: str, fields: dict[str, str | bytes]) -> None:
    """A job hash written straight into Redis (as anyone with access to it could) and listed as failed."""
    redis_conn.hset(f"rq:job:{job_id}", mapping=fields)  # type: ignore[arg-type]
    redis_conn.zadd("rq:failed:profiles", {job_id: time.time() + 3600})


@pytest.mark.usefixtures("env")  # in-process cli.main() reads the environment
def test_failed_escapes_terminal_sequences_and_lists_malformed_jobs_as_unreadable(
    settings: Settings,
    conn: psycopg.Connection[Any],
    redis_conn: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    bad = profiles_queue(redis_conn).enqueue(CREATE_PROFILES, args=(["not-a-uuid"],))
    run_worker_burst(settings)  # one genuine failed job among the hostile ones
    call = '["profilesync.worker.jobs.create_profiles", null, %s, {}]'
    hostile = {
        "\x1b[2Jwiped": {"data": call % '[["u"]]', "status": "failed"},  # an id that clears the screen
        "hostile-content": {  # users set the title, reorder the line, crash a plain print
            "data": call % '[["\\u001b]0;pwned\\u0007", "\\u202eevil", "\\ud800", "a\\u2028b"]]',
            "status": "failed",
            "exc_info": "Traceback\nValueError: \x1b[31mred\x1b[0m \x9b6n\u200fend",
        },
        "args-not-a-list": {"data": call % '{"users": 1}', "status": "failed", "exc_info": "X: y"},
        "args-a-string": {"data": call % '"abc"', "status": "failed"},
        "not-json": {"data": "\x1b[5m{garbage", "status": "failed"},
        "no-data": {"status": "failed", "exc_info": "\x1b[8m"},
        "bad-date": {"data": call % '[["u"]]', "status": "failed", "ended_at": "\x1b[1mtomorrow"},
    }
    for job_id, fields in hostile.items():
        _hostile_job(redis_conn, job_id, fields)
    conn.execute(
        "INSERT INTO profile_sync.signup_events (user_id, failed_at, job_id) VALUES (%s, now(), %s)",
        (uuid.uuid4(), "\x1b]52;c;cGF5bG9hZA==\x07"),
    )

    capsys.readouterr()
    assert cli.main(["failed"]) == 0
    table = capsys.readouterr().out

    assert not any(0x7F <= ord(c) <= 0x9F or (ord(c) < 0x20 and c != "\n") for c in table)
    assert not set(table) & {"\u202e", "\u2028", "\ud800"}
    lines = table.splitlines()
    assert lines[0] == "8 failed job(s)"
    assert "  \\x1b[2Jwiped  unreadable job (ValueError: Job ID must only contain" in table
    assert "  hostile-content  first " in table
    assert "users \\x1b]0;pwned\\x07, \\u202eevil, \\ud800 (+1)" in table
    assert "    ValueError: \\x1b[31mred\\x1b[0m \\x9b6n\\u200fend" in table
    for job_id in ("args-not-a-list", "args-a-string", "not-json", "no-data", "bad-date"):
        [line] = [line for line in lines if job_id in line]  # one line each
        assert line.startswith(f"  {job_id}  unreadable job ("), line
    assert "arguments are not one list of user ids" in next(
        line for line in lines if "args-not-a-list" in line
    )
    assert f"  {bad.id}  first " in table  # the genuine one is listed as before
    assert "job \\x1b]52;c;cGF5bG9hZA==\\x07" in table

    assert cli.main(["failed", "--json"]) == 0
    raw = capsys.readouterr().out  # JSON escapes every control character itself and keeps the values exact
    assert raw.isascii() and "\x1b" not in raw
    report = json.loads(raw[raw.index('{\n  "jobs"') :])
    assert {job["job_id"] for job in report["jobs"]} == {bad.id, *hostile}
