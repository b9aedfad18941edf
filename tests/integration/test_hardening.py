"""Hardening on real PostgreSQL: the sanitising rules (table-driven), time bounds in the schema, the
worker's replacement of a busy connection, the sweeper, locked users isolated from their batch."""

from __future__ import annotations

import json
import time
from typing import Any

import psycopg
import pytest
import redis
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from profilesync import db
from profilesync.config import Settings
from profilesync.queueing import JobPlan, enqueue_plans, profiles_queue
from profilesync.worker import profiles, runtime
from tests.harness import count, run_worker_burst, signup
from tests.integration.test_security import PUBLISHER, as_role

Conn = psycopg.Connection[Any]

URLS = [
    ("https://lh3.googleusercontent.com/a/photo.jpg", True),
    ("HTTPS://Example.COM/x", True),
    ("https://8.8.8.8/x", True),
    ("http://172.32.0.1/", True),
    ("https://example.com:8443/a?b=c#d", True),
    ("javascript:alert(1)", False),
    ("https://x.test/\u202egnp.exe", False),  # bidi override
    ("https://x.test/a\u200bb", False),  # zero-width space
    ("https://x.test/a\ufeff", False),
    ("http://169.254.169.254/latest/meta-data/", False),  # cloud metadata (link-local)
    ("http://localhost/a", False),
    ("http://api.localhost/a", False),
    ("http://127.0.0.1/", False),
    ("http://127.1.2.3:8080/", False),
    ("http://[::1]/", False),
    ("http://[fe80::1]/", False),
    ("http://10.1.2.3/", False),
    ("http://172.16.0.1/", False),
    ("http://172.31.255.255/", False),
    ("http://192.168.0.1/", False),
    ("http://0.0.0.0/", False),
    ("http://2130706433/", False),  # 127.0.0.1 as one number
    ("http://0x7f.0.0.1/", False),
    ("http://0177.0.0.1/", False),
    ("https://user@127.0.0.1/", False),
    ("https://evil.test@localhost/", False),
    ("https://", False),
    ("https://a b.test/", False),
]
TEXTS = [
    ("Grace Hopper", "Grace Hopper"),
    ("  padded  ", "padded"),
    ("a\u2028b\u2029c", "abc"),  # line / paragraph separators
    ("a\u061cb", "ab"),  # Arabic letter mark
    ("a\u200bb\u200cc\u200dd", "abcd"),  # zero-width space / non-joiner / joiner
    ("a\u2060b", "ab"),  # word joiner
    ("\ufeffBOM", "BOM"),
    ("soft\u00adhyphen", "softhyphen"),
    ("\u202eevil\u202c \u2066iso\u2069", "evil iso"),
    ("ctl\u0001\u001b[31m", "ctl[31m"),
    ("مرحبا שלום", "مرحبا שלום"),
    ("😀 emoji", "😀 emoji"),
    ("\u200b", None),
]


@pytest.mark.parametrize(("url", "kept"), URLS)
def test_clean_url(conn: Conn, url: str, kept: bool) -> None:
    row = conn.execute("SELECT profile_sync.clean_url(%s::jsonb)", (json.dumps(url),)).fetchone()
    assert row == ((url if kept else None),)


@pytest.mark.parametrize(("text", "cleaned"), TEXTS)
def test_clean_text(conn: Conn, text: str, cleaned: str | None) -> None:
    row = conn.execute("SELECT profile_sync.clean_text(%s::jsonb, 200)", (json.dumps(text),)).fetchone()
    assert row == (cleaned,)


def test_the_auth_users_triggers_bound_their_lock_waits(conn: Conn) -> None:
    rows = dict(
        conn.execute(
            "SELECT proname, proconfig FROM pg_proc WHERE pronamespace = 'profile_sync'::regnamespace "
            "AND proname IN ('on_auth_user_created', 'on_auth_user_updated')"
        ).fetchall()
    )
    assert "lock_timeout=150ms" in rows["on_auth_user_created"]
    assert "lock_timeout=150ms" in rows["on_auth_user_updated"]


def test_the_worker_replaces_a_connection_left_busy_by_a_job(conn: Conn, settings: Settings) -> None:
    runtime.configure(settings)
    try:
        busy = runtime.connection()
        busy.execute("BEGIN")
        busy.execute("SELECT 1 FROM auth.users FOR UPDATE")  # a job interrupted mid-transaction
        pid = busy.info.backend_pid
        runtime.release()
        assert busy.closed
        fresh = runtime.connection()
        assert fresh is not busy and fresh.info.backend_pid != pid
        row = fresh.execute("SHOW statement_timeout").fetchone()
        assert row == (f"{round(settings.statement_timeout * 1000)}ms",) or row == (
            f"{settings.statement_timeout:g}s",
        )
        runtime.release()
        assert runtime.connection() is fresh  # an idle connection is kept
    finally:
        runtime.close()


def sweep_lap(conn: Conn, limit: int) -> tuple[int, int]:
    """One lap of the sweeper over auth.users, `limit` users per call: (calls, users recorded)."""
    calls, recorded, after = 0, 0, None
    while True:
        row = conn.execute(
            "SELECT last_id, recorded FROM profile_sync.record_unrecorded_users(%s, %s)", (after, limit)
        ).fetchone()
        assert row is not None
        calls, recorded, after = calls + 1, recorded + row[1], row[0]
        if after is None:
            return calls, recorded


def test_the_sweeper_records_users_out_of_step_without_an_event(conn: Conn) -> None:
    """Live users with neither profile nor event, and soft-deleted users whose profile still holds personal
    data (an app's own write, a restore) and who have no event: nobody else."""
    conn.execute("ALTER TABLE auth.users DISABLE TRIGGER USER")  # signups and soft deletes the outbox missed
    unrecorded = [signup(conn) for _ in range(3)]
    profiled, deleted, holding, scrubbed = signup(conn), signup(conn), signup(conn), signup(conn)
    conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", ([profiled, holding, scrubbed],))
    conn.execute(
        "UPDATE auth.users SET deleted_at = now() WHERE id = ANY(%s)", ([deleted, holding, scrubbed],)
    )
    conn.execute("SELECT * FROM profile_sync.sync_profiles(%s)", ([scrubbed],))
    conn.execute("ALTER TABLE auth.users ENABLE TRIGGER USER")
    recorded = signup(conn)  # has its event already
    assert sweep_lap(conn, limit=2) == (5, 4)  # 8 users, 2 per call: the 5th call finds the end
    assert sweep_lap(conn, limit=100) == (1, 0)
    events = {row[0] for row in conn.execute("SELECT user_id FROM profile_sync.signup_events")}
    assert events == {*unrecorded, holding, recorded}
    conn.execute("SELECT * FROM profile_sync.sync_profiles(%s)", ([holding],))  # the worker's job
    row = conn.execute(
        "SELECT email, full_name, avatar_url FROM public.user_profiles WHERE id = %s", (holding,)
    ).fetchone()
    assert row == (None, None, None)


def test_a_worker_without_grants_fails_its_job_clearly_and_marks_no_user_failed(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    users = [str(signup(conn)) for _ in range(4)]
    no_retries = settings.model_copy(update={"job_retries": 0})
    enqueue_plans(profiles_queue(redis_conn), [JobPlan("no-grant", users, [])], no_retries)
    wrong_role = settings.model_copy(update={"database_url": as_role(settings.database_url, PUBLISHER)})
    run_worker_burst(wrong_role)  # the publisher's role may not execute create_profiles
    failed = FailedJobRegistry(queue=profiles_queue(redis_conn), serializer=JSONSerializer)
    assert failed.get_job_ids() == ["no-grant"]  # one job, not split into one failed job per user
    job = Job.fetch("no-grant", connection=redis_conn, serializer=JSONSerializer)
    assert "InsufficientPrivilegeError" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]
    assert count(conn, "SELECT count(*) FROM profile_sync.signup_events WHERE failed_at IS NOT NULL") == 0


LOCK_WAIT = 0.5  # the worker connection's lock_timeout in these tests


def _locked_batch(database_url: str, user_ids: list[Any]) -> tuple[profiles.Outcome, float]:
    with db.connect(database_url, autocommit=True, timeouts=db.Timeouts(statement=5, lock=LOCK_WAIT)) as conn:
        started = time.monotonic()
        outcome = profiles.create_profiles(conn, user_ids, "fill-null", lock_timeout=LOCK_WAIT)
        return outcome, time.monotonic() - started


def test_a_user_whose_row_is_locked_is_isolated_and_its_batch_mates_get_profiles(
    conn: Conn, database_url: str
) -> None:
    users = [signup(conn) for _ in range(40)]
    with psycopg.connect(database_url) as blocker:
        blocker.execute("SELECT 1 FROM auth.users WHERE id = %s FOR UPDATE", (users[13],))
        outcome, _ = _locked_batch(database_url, users)
        assert outcome.locked == [users[13]]
        assert outcome.created == 39 and outcome.failed == []
        assert count(conn, "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s", (users[13],))
    assert count(conn, "SELECT count(*) FROM public.user_profiles") == 39


def test_a_locked_table_costs_a_bounded_number_of_probes(conn: Conn, database_url: str) -> None:
    users = [signup(conn) for _ in range(250)]
    with psycopg.connect(database_url) as blocker:
        blocker.execute("LOCK TABLE public.user_profiles IN SHARE MODE")  # every insert waits
        outcome, seconds = _locked_batch(database_url, users)
    assert sorted(outcome.locked) == sorted(users) and outcome.created == 0
    # the batch's own wait, then at most LOCK_PROBES probes (each a short wait): not one per user
    bound = LOCK_WAIT + profiles.LOCK_PROBES * min(profiles.PROBE_LOCK_TIMEOUT, LOCK_WAIT)
    assert seconds < bound + 3.0, f"{seconds:.1f} s"
