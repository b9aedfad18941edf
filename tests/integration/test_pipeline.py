"""The pipeline on real PostgreSQL and Redis: signup → outbox → publisher → RQ → worker → profile."""

from __future__ import annotations

import threading
import uuid
from typing import Any

import psycopg
import pytest
import redis
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from structlog.testing import capture_logs

from profilesync.config import Settings
from profilesync.devkit.signups import KINDS, make_signup
from profilesync.migrate import Migrated, available, migrate
from profilesync.publisher.service import Publisher
from profilesync.queueing import CREATE_PROFILES, connect_redis, profiles_queue
from tests.harness import (
    IDLE_PUBLISHERS,
    PENDING,
    PROFILE_OF,
    PROFILES_OF,
    bulk_signup,
    count,
    drain_once,
    reject_profile_of,
    run_worker_burst,
    running_publisher,
    signup,
    wait_for,
)

EVENTS = "SELECT count(*) FROM profile_sync.signup_events"
PROFILES = "SELECT count(*) FROM public.user_profiles"
WITHOUT_PROFILE = (
    "SELECT count(*) FROM auth.users u LEFT JOIN public.user_profiles p USING (id) WHERE p.id IS NULL"
)

Conn = psycopg.Connection[Any]


def test_bulk_signup_in_one_statement_gives_each_user_exactly_one_profile(
    conn: Conn, settings: Settings
) -> None:
    with running_publisher(settings):
        bulk_signup(conn, 2000)
        assert wait_for(lambda: count(conn, PENDING) == 0)
    run_worker_burst(settings)
    assert count(conn, PROFILES) == 2000
    assert count(conn, WITHOUT_PROFILE) == 0
    assert count(conn, EVENTS) == 0


def test_every_signup_kind_gets_a_mapped_profile(conn: Conn, settings: Settings) -> None:
    ids = {kind: signup(conn, kind) for kind in KINDS}
    assert drain_once(settings) == len(KINDS)
    run_worker_burst(settings)
    rows = conn.execute("SELECT id, email, full_name, avatar_url FROM public.user_profiles").fetchall()
    by_id = {row[0]: row[1:] for row in rows}
    tag = {kind: user_id.hex[:8] for kind, user_id in ids.items()}
    assert by_id[ids["email"]] == (f"user-{tag['email']}@example.com", None, None)
    assert by_id[ids["phone"]] == (None, None, None)
    assert by_id[ids["anonymous"]] == (None, None, None)
    google = make_signup("google", ids["google"])  # full_name and avatar_url from Google's claims
    assert by_id[ids["google"]] == (google.email, f"Grace {tag['google']}", google.user_meta["picture"])
    github = make_signup("github", ids["github"])  # no full_name or name: user_name; avatar_url as given
    assert by_id[ids["github"]] == (github.email, f"octo-{tag['github']}", github.user_meta["avatar_url"])
    assert by_id[ids["sso"]] == (f"alan-{tag['sso']}@corp.example", f"Alan {tag['sso']}", None)


@pytest.mark.parametrize(
    ("meta", "full_name", "avatar_url"),
    [
        ({"name": "Only Name", "picture": "https://x.test/p.png"}, "Only Name", "https://x.test/p.png"),
        ({"full_name": 123, "name": ["list"], "user_name": "fallback"}, "fallback", None),
        ({"preferred_username": "  spaced\n\tout  "}, "spacedout", None),
        ({"name": "x" * 10_000}, "x" * 200, None),
        ({"name": "\u202eevil\u202c مرحبا 😀"}, "evil مرحبا 😀", None),
        (
            {"avatar_url": "javascript:alert(1)", "picture": "https://ok.test/a.png"},
            None,
            "https://ok.test/a.png",
        ),
        ({"avatar_url": {"url": "https://x.test"}}, None, None),
        ({"name": "   "}, None, None),
    ],
)
def test_metadata_is_type_checked_capped_and_stripped(
    conn: Conn, settings: Settings, meta: dict[str, Any], full_name: str | None, avatar_url: str | None
) -> None:
    user_id = signup(conn, "email", user_meta=meta)
    conn.execute("SELECT profile_sync.create_profiles(%s)", ([user_id],))
    assert conn.execute(
        "SELECT full_name, avatar_url FROM public.user_profiles WHERE id = %s", (user_id,)
    ).fetchone() == (full_name, avatar_url)


def test_duplicate_events_and_jobs_give_one_profile(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    users = [signup(conn) for _ in range(20)]
    conn.execute("INSERT INTO profile_sync.signup_events (user_id) SELECT unnest(%s::uuid[])", (users,))
    conn.execute("INSERT INTO profile_sync.signup_events (user_id) SELECT unnest(%s::uuid[])", (users,))
    assert drain_once(settings) == 60
    queue = profiles_queue(redis_conn)
    queue.enqueue(CREATE_PROFILES, args=([str(u) for u in users],))  # a replayed duplicate job
    run_worker_burst(settings)
    assert count(conn, PROFILES) == 20
    assert count(conn, EVENTS) == 0
    assert FailedJobRegistry(queue=queue).count == 0


def test_publisher_started_after_the_signups_catches_up(conn: Conn, settings: Settings) -> None:
    bulk_signup(conn, 300)
    for kind in KINDS:
        signup(conn, kind)
    with running_publisher(settings):
        assert wait_for(lambda: count(conn, PENDING) == 0)
    run_worker_burst(settings)
    assert count(conn, WITHOUT_PROFILE) == 0


def test_an_idle_publisher_is_woken_by_notify_not_the_safety_timer(conn: Conn, settings: Settings) -> None:
    slow_timer = settings.model_copy(update={"safety_interval": 60.0})
    with running_publisher(slow_timer):
        assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 1)
        signup(conn)
        assert wait_for(lambda: count(conn, PENDING) == 0, timeout=5.0)


def test_the_wake_hook_runs_when_a_notify_wakes_the_publisher(conn: Conn, settings: Settings) -> None:
    slow_timer = settings.model_copy(update={"safety_interval": 60.0})
    woke = threading.Event()
    with running_publisher(slow_timer, on_wake=woke.set):
        assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 1)
        woke.clear()  # a start-up pass may have passed the hook already
        signup(conn)
        assert woke.wait(timeout=5.0)
        assert wait_for(lambda: count(conn, PENDING) == 0, timeout=5.0)


def test_malformed_notify_payloads_are_logged_and_ignored(conn: Conn, settings: Settings) -> None:
    with capture_logs() as logs, running_publisher(settings):
        assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 1)
        conn.execute("SELECT pg_notify('profile_sync_signup', 'not empty; DROP TABLE auth.users')")
        conn.execute("SELECT pg_notify('profile_sync_signup', gen_random_uuid()::text)")

        def warnings() -> int:
            return sum(e["event"] == "ignoring malformed NOTIFY payload" for e in logs)

        assert wait_for(lambda: warnings() == 1)
        user_id = signup(conn)  # still working afterwards
        assert wait_for(lambda: count(conn, PENDING) == 0)
        assert warnings() == 1  # rate-limited: the second junk payload (read before the signup) was counted
    run_worker_burst(settings)
    assert count(conn, PROFILE_OF, (user_id,)) == 1


def test_trigger_works_as_supabase_auth_admin_with_auth_search_path(conn: Conn) -> None:
    with conn.transaction():
        conn.execute("SET LOCAL ROLE supabase_auth_admin")
        conn.execute("SET LOCAL search_path = auth")
        conn.execute("INSERT INTO users (id, phone) VALUES (gen_random_uuid(), '15550000000')")
    assert count(conn, EVENTS) == 1


def test_trigger_function_is_security_definer_with_empty_search_path_and_a_lock_timeout(conn: Conn) -> None:
    row = conn.execute(
        "SELECT prosecdef, proconfig FROM pg_proc WHERE oid = 'profile_sync.on_auth_user_created'::regproc"
    ).fetchone()
    assert row == (True, ['search_path=""', "lock_timeout=150ms"])  # 0005: never hang a signup on a lock


def test_a_broken_outbox_never_blocks_a_signup(conn: Conn) -> None:
    notices: list[str] = []
    conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
    conn.execute("ALTER TABLE profile_sync.signup_events RENAME TO signup_events_gone")
    user_id = signup(conn)
    assert count(conn, "SELECT count(*) FROM auth.users WHERE id = %s", (user_id,)) == 1
    assert any("not recorded" in n for n in notices)


def test_a_user_deleted_before_the_job_runs_is_done_not_failed(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    settings = settings.model_copy(update={"result_ttl": 60})  # keep the finished job to read its result
    kept, deleted = signup(conn), signup(conn)
    assert drain_once(settings) == 2
    conn.execute("DELETE FROM auth.users WHERE id = %s", (deleted,))
    run_worker_burst(settings)
    queue = profiles_queue(redis_conn)
    assert FailedJobRegistry(queue=queue).count == 0
    finished = queue.finished_job_registry.get_job_ids()
    result = Job.fetch(finished[0], connection=redis_conn, serializer=JSONSerializer).return_value()
    assert result == {
        "created": 1,
        "existing": 0,
        "updated": 0,
        "scrubbed": 0,
        "missing": 1,
        "failed": 0,
        "locked": 0,
    }
    assert count(conn, PROFILES) == 1
    assert count(conn, EVENTS) == 0
    assert kept != deleted


def test_bad_ids_fail_alone_and_good_users_still_get_profiles(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    good = signup(conn)
    queue = profiles_queue(redis_conn)
    queue.enqueue(CREATE_PROFILES, args=(["not-a-uuid", str(good), 42],))
    run_worker_burst(settings)
    assert count(conn, PROFILES) == 1
    failed = FailedJobRegistry(queue=queue)
    jobs = [
        Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer) for job_id in failed.get_job_ids()
    ]
    assert sorted(str(job.args[0]) for job in jobs) == ["['42']", "['not-a-uuid']"]
    for job in jobs:
        assert job.get_status() == JobStatus.FAILED
        assert "not a user id" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]


def test_a_permanently_failing_user_is_isolated_marked_and_not_redelivered(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    # The app's own constraint rejects one user's profile: the rest of the batch must still go through.
    users = [signup(conn, user_meta={"name": f"User {i}"}) for i in range(7)]
    mallory = signup(conn, user_meta={"name": "Mallory"})
    reject_profile_of(conn, mallory)
    assert drain_once(settings) == 8
    run_worker_burst(settings)
    assert count(conn, PROFILES) == 7
    assert count(conn, PROFILES_OF, (users,)) == 7
    failed = FailedJobRegistry(queue=profiles_queue(redis_conn))
    assert failed.count == 1
    job = Job.fetch(failed.get_job_ids()[0], connection=redis_conn, serializer=JSONSerializer)
    assert job.args[0] == [str(mallory)]
    assert "CheckViolation" in (job.latest_result().exc_string or "")  # type: ignore[union-attr]
    row = conn.execute("SELECT failed_at IS NOT NULL, last_error FROM profile_sync.signup_events").fetchone()
    assert row is not None and row[0] and "no_mallory" in row[1]
    conn.execute("UPDATE profile_sync.signup_events SET enqueued_at = now() - interval '1 hour'")
    with psycopg.connect(settings.database_url, autocommit=True) as work:
        assert Publisher(settings).redeliver(work, redis_conn) == 0


def test_events_stay_pending_when_redis_is_down(conn: Conn, settings: Settings) -> None:
    signup(conn)
    dead = settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"})
    with pytest.raises(redis.ConnectionError):
        drain_once(dead)
    assert count(conn, PENDING) == 1
    assert drain_once(settings) == 1


def test_events_whose_job_vanished_from_redis_are_redelivered(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    users = [signup(conn) for _ in range(3)]
    assert drain_once(settings) == 3
    redis_conn.flushdb()  # Redis lost its data
    conn.execute("UPDATE profile_sync.signup_events SET enqueued_at = now() - interval '1 hour'")
    with psycopg.connect(settings.database_url, autocommit=True) as work:
        assert Publisher(settings).redeliver(work, redis_conn) == 3
        assert Publisher(settings).redeliver(work, redis_conn) == 0  # fresh again
    run_worker_burst(settings)
    assert count(conn, PROFILES_OF, (users,)) == 3


def test_jobs_still_queued_are_not_redelivered(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    signup(conn)
    assert drain_once(settings) == 1
    conn.execute("UPDATE profile_sync.signup_events SET enqueued_at = now() - interval '1 hour'")
    with psycopg.connect(settings.database_url, autocommit=True) as work:
        assert Publisher(settings).redeliver(work, redis_conn) == 0
    assert profiles_queue(redis_conn).count == 1


def test_migrations_are_recorded_and_idempotent(conn: Conn) -> None:
    versions = [m.version for m in available()]
    recorded = [r[0] for r in conn.execute("SELECT version FROM profile_sync.schema_migrations ORDER BY 1")]
    assert recorded == versions
    assert migrate(conn, dev_auth_stub=True) == Migrated([], [])


def test_migrate_refuses_a_database_without_auth_users(pg_admin_url: str) -> None:
    from profilesync.db import with_dbname
    from profilesync.errors import MigrationError

    name = f"noauth_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_admin_url, autocommit=True) as admin:
        admin.execute(f"CREATE DATABASE {name}")
        try:
            with (
                psycopg.connect(with_dbname(pg_admin_url, name), autocommit=True) as target,
                pytest.raises(MigrationError, match="--dev-auth-stub"),
            ):
                migrate(target)
        finally:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _plan(conn: Conn, query: str, params: tuple[Any, ...]) -> dict[str, Any]:
    """The executed plan (EXPLAIN ANALYZE, BUFFERS) of `query`, rolled back."""
    with conn.transaction(force_rollback=True):
        row = conn.execute(f"EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {query}", params).fetchone()
    assert row is not None
    return dict(row[0][0])


def _blocks(plan: dict[str, Any]) -> int:
    node = plan["Plan"]
    return int(node["Shared Hit Blocks"]) + int(node["Shared Read Blocks"])


def test_polling_from_the_cursor_skips_events_retired_under_a_long_snapshot(
    conn: Conn, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A REPEATABLE READ snapshot held open keeps every retired event's index entries alive.
    from profilesync.publisher import service

    monkeypatch.setattr(service, "CURSOR_LAG", 0.0)
    with psycopg.connect(database_url) as old:
        old.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        old.execute("SELECT count(*) FROM profile_sync.signup_events").fetchone()
        bulk_signup(conn, 5000)
        publisher = Publisher(settings)
        with psycopg.connect(settings.database_url, autocommit=True) as work:
            redis_conn = connect_redis(settings.redis_url)
            assert publisher.drain(work, redis_conn) == 5000
            conn.execute("DELETE FROM profile_sync.signup_events")  # as the workers retire them
            assert publisher.drain(work, redis_conn) == 0
            assert publisher.drain(work, redis_conn) == 0  # the cursor has moved past them
        from_cursor = _plan(conn, service._PENDING, (publisher._after,))
        full_sweep = _plan(conn, service._PENDING, (0,))
    assert full_sweep["Plan"]["Actual Rows"] == from_cursor["Plan"]["Actual Rows"] == 0
    assert _blocks(full_sweep) > 20  # the dead entries are there: a poll from id 0 walks them all
    assert _blocks(from_cursor) <= 3


def test_a_signup_that_commits_behind_the_cursor_is_claimed_by_the_full_sweep(
    conn: Conn, settings: Settings, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from profilesync.publisher import service

    monkeypatch.setattr(service, "CURSOR_LAG", 0.0)
    with psycopg.connect(database_url) as slow:
        late = signup(slow)  # its event has the lower id, but commits last
        signup(conn)
        publisher = Publisher(settings)
        with psycopg.connect(settings.database_url, autocommit=True) as work:
            redis_conn = connect_redis(settings.redis_url)
            assert publisher.drain(work, redis_conn) == 1
            assert publisher.drain(work, redis_conn) == 0
            slow.commit()
            assert publisher.drain(work, redis_conn) == 0  # behind the cursor
            assert publisher.drain(work, redis_conn, full=True) == 1
    claimed = "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s AND job_id IS NOT NULL"
    assert count(conn, claimed, (late,)) == 1


def test_redelivery_reads_stale_events_through_an_index(conn: Conn) -> None:
    bulk_signup(conn, 20000)
    conn.execute("UPDATE profile_sync.signup_events SET enqueued_at = now(), job_id = 'j'")
    conn.execute("ANALYZE profile_sync.signup_events")
    from profilesync.publisher import service

    text = str(_plan(conn, service._STALE, (60.0, 2000)))
    assert "signup_events_enqueued_idx" in text
    assert "'Sort'" not in text
    assert "Seq Scan" not in text


def test_a_finished_job_stays_in_redis_only_briefly(
    conn: Conn, settings: Settings, redis_conn: redis.Redis
) -> None:
    # Nothing reads a create_profiles result: kept for RQ's default 500 s, each job cost ~6 KB per signup.
    signup(conn)
    assert drain_once(settings) == 1
    run_worker_burst(settings)
    assert count(conn, PROFILES) == 1
    jobs = list(redis_conn.scan_iter("rq:job:*"))
    assert jobs
    assert all(0 < redis_conn.ttl(key) <= settings.result_ttl <= 5 for key in jobs)
