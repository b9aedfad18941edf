"""Hostile input through the real processes: Redis content as code, a gutted queue, spoofed and flooding
NOTIFYs, roles without grants, a signed-in user rewriting their profile."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from profilesync.chat import ChatService
from profilesync.config import Settings
from profilesync.queueing import profiles_queue
from tests.faults.cluster import LOCK_TIMEOUT, REDELIVER_AFTER, SAFETY_INTERVAL, Target
from tests.faults.figures import Row, finish, settle
from tests.harness import PENDING, bulk_signup, signup, wait_for

WAITERS = "SELECT count(*) FROM profile_sync.profile_waiters"


def as_role(url: str, role: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{role}@{parts.hostname}:{parts.port}"))


def test_workers_run_only_create_profiles_whatever_redis_holds(target: Target, tmp_path: Path) -> None:
    target.start_pipeline(workers=1)
    queue = profiles_queue(target.redis)
    markers = [tmp_path / "pwned-1", tmp_path / "pwned-2"]
    queue.enqueue("os.system", args=(f"touch {markers[0]}",))
    failed = FailedJobRegistry(queue=queue, serializer=JSONSerializer)
    assert wait_for(lambda: failed.count == 1)
    target.procs.stop()
    # RQ's own command line with our worker class (README): the same allow-list.
    rq_log = (tmp_path / "rq-worker.log").open("wb")
    rq_worker = subprocess.Popen(
        [sys.executable, "-m", "rq.cli", "worker", "-w", "profilesync.worker.main.ProfileSyncWorker",
         "-S", "rq.serializers.JSONSerializer", "-u", target.redis_url, "profiles"],
        env={**target.procs.env, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        stdout=rq_log, stderr=rq_log,
    )  # fmt: skip
    try:
        queue.enqueue("os.system", args=(f"touch {markers[1]}",))
        assert wait_for(lambda: failed.count == 2)
        started_at = time.monotonic()
        bulk_signup(target.conn, 300)  # the workers go on with real work
        target.procs.start("publisher", "publisher")
        target.procs.start("worker-1", "worker")
        state, recovery = settle(target, since=started_at, bound=30)
        assert rq_worker.poll() is None, "rq worker died"
    finally:
        rq_worker.terminate()
        rq_worker.wait(timeout=20)
        rq_log.close()
    assert not any(marker.exists() for marker in markers), "a job ran code named by Redis content"
    rq_output = (tmp_path / "rq-worker.log").read_text(errors="replace")
    assert "refused a job that is not on the allow-list" in target.procs.log("worker-1") + rq_output
    assert "ForbiddenJobError" in rq_output
    finish(target, Row("jobs for os.system in Redis", 300, "2 foreign jobs, 2 worker kinds", state, recovery))


def test_a_gutted_queue_and_unreadable_job_data_are_redelivered(target: Target) -> None:
    users = 600
    target.procs.start("publisher", "publisher")
    assert wait_for(target.publisher_idle)
    bulk_signup(target.conn, users)
    assert wait_for(lambda: target.count(PENDING) == 0)
    queue = profiles_queue(target.redis)
    job_ids = queue.job_ids
    assert len(job_ids) == 3
    target.redis.delete(queue.key)  # DEL rq:queue:profiles: an eviction or an operator's mistake
    target.redis.hset(f"rq:job:{job_ids[0]}", "status", "bogus")
    target.redis.hset(f"rq:job:{job_ids[1]}", "status", b"\xff\xfe")
    gutted_at = time.monotonic()
    target.procs.start("worker-1", "worker")
    state, recovery = settle(target, since=gutted_at, bound=REDELIVER_AFTER + 20 * SAFETY_INTERVAL + 10)
    assert state.profiles == users
    assert "Traceback" not in target.procs.log("publisher")
    assert "events redelivered" in target.procs.log("publisher")
    faults = "DEL queue list, 2 bogus job statuses"
    finish(target, Row("queue list deleted, job hashes garbled", users, faults, state, recovery))


def test_spoofed_readiness_and_a_notify_flood_are_only_hints(target: Target) -> None:
    target.procs.start("publisher", "publisher")
    assert wait_for(target.publisher_idle)
    user = signup(target.conn)
    settings = Settings(
        database_url=target.database_url,
        chat_wait_timeout=30.0,
        chat_fallback="error",
        lock_timeout=LOCK_TIMEOUT,
    )
    with (
        ConnectionPool(target.database_url, min_size=1, max_size=2, open=True) as pool,
        ChatService(pool, settings) as chats,
        psycopg.connect(target.database_url, autocommit=True) as anon,
    ):
        outcome: dict[str, Any] = {}
        thread = threading.Thread(target=lambda: outcome.update(result=_attempt(chats, user)), daemon=True)
        thread.start()
        assert wait_for(lambda: target.count(WAITERS) == 1)
        anon.execute("SET ROLE anon")  # any role may NOTIFY
        anon.execute("SELECT pg_notify('profile_sync_ready', %s)", (str(user),))
        # 20,000 malformed wake-ups for the publisher, distinct so that none collapse
        anon.execute("SELECT pg_notify('profile_sync_signup', 'junk ' || g) FROM generate_series(1, 20000) g")
        anon.execute("SELECT pg_notify('profile_sync_ready', 'junk')")
        thread.join(1.0)
        assert thread.is_alive(), f"the caller gave up on a spoofed wake-up: {outcome}"
        started_at = time.monotonic()
        target.procs.start("worker-1", "worker")  # the real profile, after the spoof
        thread.join(30)
        assert not thread.is_alive()
        assert outcome["result"] == "conversation", outcome
    assert target.count(WAITERS) == 0
    state, recovery = settle(target, since=started_at, bound=30)
    warnings = target.procs.log("publisher").count("ignoring malformed NOTIFY payload")
    assert 1 <= warnings <= 2, warnings  # rate-limited, not 20,000 lines
    faults = f"spoofed ready NOTIFY, 20,000 junk NOTIFYs -> {warnings} warning(s)"
    finish(target, Row("spoofed and flooding NOTIFYs", 1, faults, state, recovery))


def _attempt(chats: ChatService, user: Any) -> str:
    try:
        chats.create_conversation(user, title="hello")
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return "conversation"


def test_service_role_runs_chat_and_backfill_and_a_role_without_grants_fails_fast(target: Target) -> None:
    # The suite's own cluster: roles may be altered here (never on a shared server).
    target.conn.execute("ALTER ROLE service_role LOGIN BYPASSRLS")  # BYPASSRLS as on Supabase
    target.conn.execute("ALTER ROLE authenticated LOGIN")
    service_url = as_role(target.database_url, "service_role")
    target.start_pipeline(workers=1)
    target.conn.execute("ALTER TABLE auth.users DISABLE TRIGGER profile_sync_on_auth_user_created")
    bulk_signup(target.conn, 50)  # existing users without profile nor event: backfill's work
    target.conn.execute("ALTER TABLE auth.users ENABLE TRIGGER profile_sync_on_auth_user_created")
    started_at = time.monotonic()
    target.procs.start("backfill", "backfill", env={"DATABASE_URL": service_url})
    assert wait_for(lambda: "backfill" in target.procs.dead(), timeout=30)
    assert target.procs.dead()["backfill"] == 0, target.procs.log("backfill")
    user = signup(target.conn)
    settings = Settings(database_url=service_url, chat_wait_timeout=10.0, lock_timeout=LOCK_TIMEOUT)
    with (
        ConnectionPool(service_url, min_size=1, max_size=2, open=True) as pool,
        ChatService(pool, settings) as chats,
    ):
        assert chats.create_conversation(user).user_id == user
    state, recovery = settle(target, since=started_at, bound=30)
    target.procs.running.pop("backfill")
    # a publisher started as a role without our grants: one clear line and an exit, not a retry loop
    target.procs.start(
        "wrong-role", "publisher", env={"DATABASE_URL": as_role(target.database_url, "authenticated")}
    )
    assert wait_for(lambda: "wrong-role" in target.procs.dead(), timeout=30), "kept retrying"
    assert target.procs.running.pop("wrong-role").returncode == 1
    wrong_log = target.procs.log("wrong-role")
    assert "42501" in wrong_log and "connection lost" not in wrong_log, wrong_log
    faults = "backfill + chat as service_role; publisher as authenticated"
    finish(target, Row("service_role and a role without grants", 51, faults, state, recovery))


def test_a_signed_in_user_cannot_write_unsanitised_profile_values(target: Target) -> None:
    target.start_pipeline(workers=1)
    user = signup(target.conn, "google")
    started_at = time.monotonic()
    state, recovery = settle(target, since=started_at, bound=30)
    claims = f'{{"sub": "{user}", "role": "authenticated"}}'
    hostile = [
        ("full_name", "repeat('x', 100000)"),
        ("avatar_url", "'javascript:alert(1)'"),
        ("avatar_url", "'http://169.254.169.254/latest/meta-data/'"),
        ("full_name", "'Grace' || chr(8238) || 'evil'"),
    ]
    with psycopg.connect(target.database_url) as rest:  # PostgREST's shape of a request
        for column, value in hostile:
            with rest.transaction():
                rest.execute("SET LOCAL ROLE authenticated")
                rest.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
                with pytest.raises(psycopg.errors.CheckViolation):
                    rest.execute(f"UPDATE public.user_profiles SET {column} = {value}")  # noqa: S608
                raise psycopg.Rollback
        with rest.transaction():
            rest.execute("SET LOCAL ROLE authenticated")
            rest.execute("SELECT set_config('request.jwt.claims', %s, true)", (claims,))
            row = rest.execute("UPDATE public.user_profiles SET full_name = 'Grace B. Hopper' RETURNING 1")
            assert row.fetchone() == (1,)
    faults = "4 hostile UPDATEs as authenticated"
    finish(target, Row("unsanitised values by UPDATE", 1, faults, state, recovery))
