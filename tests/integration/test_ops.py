"""Operations on real Postgres + Redis: the real `rq` CLI, replay, doctor, backfill."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

import psycopg
import pytest
import redis
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from profilesync import cli
from profilesync.config import Settings
from profilesync.ops.backfill import verification_report
from profilesync.ops.doctor import DEFAULT_CHECKS
from profilesync.queueing import CREATE_PROFILES, profiles_queue
from tests.harness import (
    IDLE_PUBLISHERS,
    PROFILE_OF,
    allow_profiles,
    bulk_signup,
    count,
    publish_all,
    refuse_profiles,
    run_worker_burst,
    running_publisher,
    signup,
    wait_for,
)

RQ = os.path.join(os.path.dirname(sys.executable), "rq")
TRIGGER = "profile_sync_on_auth_user_created"


@pytest.fixture
def live_worker(redis_conn: redis.Redis) -> Iterator[SimpleWorker]:
    """A worker registered in Redis, as a running `profilesync worker` is (doctor counts live workers)."""
    worker = SimpleWorker([profiles_queue(redis_conn)], connection=redis_conn, serializer=JSONSerializer)
    worker.register_birth()
    yield worker
    worker.register_death()


@pytest.fixture
def live_publisher(settings: Settings, conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A publisher registered and LISTENing (doctor checks that one is alive)."""
    with running_publisher(settings):
        assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 1)
        yield


def _failed_job(settings: Settings, redis_conn: redis.Redis, value: str = "not-a-uuid") -> str:
    job = profiles_queue(redis_conn).enqueue(CREATE_PROFILES, args=([value],))
    run_worker_burst(settings)
    assert job.id in FailedJobRegistry(queue=profiles_queue(redis_conn)).get_job_ids()
    return str(job.id)


def _run(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


# -- the real rq CLI works on our queue, unmodified ---------------------------------------------------------


def test_rq_info_and_rq_requeue_work_unmodified(
    settings: Settings, redis_conn: redis.Redis, env: dict[str, str]
) -> None:
    job_id = _failed_job(settings, redis_conn)

    info = _run([RQ, "info", "-u", settings.redis_url], env)
    assert info.returncode == 0, info.stderr
    assert re.search(r"^profiles +\| .*1 failed$", info.stdout, re.MULTILINE), info.stdout

    requeue = _run(
        [RQ, "requeue", "--queue", "profiles", "-S", "json", "--all", "-u", settings.redis_url], env
    )
    assert requeue.returncode == 0, requeue.stderr
    assert "Requeueing 1 jobs from failed queue" in requeue.stdout
    queue = profiles_queue(redis_conn)
    assert queue.job_ids == [job_id]
    assert FailedJobRegistry(queue=queue).count == 0

    run_worker_burst(settings)  # still a bad id: it fails again, and stays replayable
    assert FailedJobRegistry(queue=queue).get_job_ids() == [job_id]


# -- replay ------------------------------------------------------------------------------------------------


def test_replay_all_requeues_every_failed_job(
    settings: Settings, redis_conn: redis.Redis, env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    jobs = {_failed_job(settings, redis_conn, value) for value in ("bad-1", "bad-2")}

    assert cli.main(["replay", "--all"]) == 0
    assert "requeued 2 failed job(s)" in capsys.readouterr().out
    queue = profiles_queue(redis_conn)
    assert set(queue.job_ids) == jobs
    assert FailedJobRegistry(queue=queue).count == 0


@pytest.mark.usefixtures("env")
def test_replay_by_id_requeues_that_job_and_rejects_unknown_ids(
    settings: Settings,
    conn: psycopg.Connection[Any],
    redis_conn: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A user's failed job, replayed once the cause is gone, creates the profile."""
    user_id = signup(conn, "email")
    conn.execute("DELETE FROM profile_sync.signup_events")
    refuse_profiles(conn)
    job = profiles_queue(redis_conn).enqueue(CREATE_PROFILES, args=([str(user_id)],))
    run_worker_burst(settings)
    other = _failed_job(settings, redis_conn)
    queue = profiles_queue(redis_conn)
    assert set(FailedJobRegistry(queue=queue).get_job_ids()) == {job.id, other}

    allow_profiles(conn)
    assert cli.main(["replay", job.id, "no-such-job"]) == 1
    out = capsys.readouterr().out
    assert "requeued 1 failed job(s)" in out
    assert "not failed jobs of the profiles queue" in out and "no-such-job" in out
    assert FailedJobRegistry(queue=queue).get_job_ids() == [other]

    run_worker_burst(settings)
    assert count(conn, PROFILE_OF, (user_id,)) == 1
    assert FailedJobRegistry(queue=queue).get_job_ids() == [other]


@pytest.mark.usefixtures("env")
def test_replay_events_redrives_failures_whose_jobs_are_gone(
    settings: Settings,
    conn: psycopg.Connection[Any],
    redis_conn: redis.Redis,
    capsys: pytest.CaptureFixture[str],
) -> None:
    refuse_profiles(conn)
    user_id = signup(conn, "github")
    publish_all(settings, conn)
    run_worker_burst(settings)
    assert count(conn, "SELECT count(*) FROM profile_sync.signup_events WHERE failed_at IS NOT NULL") == 1
    redis_conn.flushdb()  # the failed job is gone (expired, or Redis lost its data): replay --all cannot help
    allow_profiles(conn)

    capsys.readouterr()
    assert cli.main(["replay", "--all"]) == 0
    assert "requeued 0 failed job(s)" in capsys.readouterr().out
    assert cli.main(["replay", "--events"]) == 0
    assert "reset 1 failed signup event(s) to pending" in capsys.readouterr().out

    publish_all(settings, conn)
    run_worker_burst(settings)
    assert count(conn, PROFILE_OF, (user_id,)) == 1
    assert verification_report(conn).complete


def test_replay_requires_all_or_ids(env: dict[str, str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["replay"])
    assert exc.value.code == 2


# -- doctor ------------------------------------------------------------------------------------------------


def _doctor(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, dict[str, Any]]:
    capsys.readouterr()  # drop what earlier steps printed
    code = cli.main(["doctor", "--json", *args])
    out = capsys.readouterr().out
    report = json.loads(out[out.index('{\n  "healthy"') :])  # after any log line of a publisher thread
    return code, {c["name"]: c for c in report["checks"]} | {"healthy": report["healthy"]}


def test_doctor_healthy_pipeline_exits_zero(
    conn: psycopg.Connection[Any],
    env: dict[str, str],
    live_worker: SimpleWorker,
    live_publisher: None,
    capsys: pytest.CaptureFixture[str],
) -> None:
    signup(conn, "google")  # a fresh signup in flight is not a problem
    code, checks = _doctor(capsys)
    assert code == 0, checks
    assert checks["healthy"] is True
    assert {name: c["status"] for name, c in checks.items() if name != "healthy"} == dict.fromkeys(
        DEFAULT_CHECKS, "ok"
    )
    assert checks["backlog"]["detail"].startswith("1 pending")


def test_doctor_as_a_healthcheck_process(
    conn: psycopg.Connection[Any], env: dict[str, str], live_worker: SimpleWorker, live_publisher: None
) -> None:
    healthy = _run([sys.executable, "-m", "profilesync.cli", "doctor"], env)
    assert healthy.returncode == 0, healthy.stdout + healthy.stderr
    assert healthy.stdout.strip().endswith("healthy")

    conn.execute(f"ALTER TABLE auth.users DISABLE TRIGGER {TRIGGER}")
    broken = _run([sys.executable, "-m", "profilesync.cli", "doctor"], env)
    assert broken.returncode == 1
    assert "FAIL  trigger" in broken.stdout and "disabled" in broken.stdout
    assert broken.stdout.strip().endswith("1 problem(s)")


def test_doctor_fails_on_a_disabled_trigger_and_unrecorded_users(
    conn: psycopg.Connection[Any],
    env: dict[str, str],
    live_worker: SimpleWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn.execute(f"ALTER TABLE auth.users DISABLE TRIGGER {TRIGGER}")
    signup(conn, "email")
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["trigger"]["status"] == "fail"
    assert checks["users_without_profiles"]["status"] == "fail"
    assert "run profilesync backfill" in checks["users_without_profiles"]["detail"]
    assert checks["workers"]["status"] == "ok"


def test_doctor_fails_on_a_soft_deleted_users_profile_holding_data_until_backfill_scrubs_it(
    settings: Settings, conn: psycopg.Connection[Any], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    user = signup(conn, "google")
    conn.execute("SELECT profile_sync.create_profiles(%s)", ([user],))
    conn.execute("UPDATE auth.users SET deleted_at = now() WHERE id = %s", (user,))
    _, checks = _doctor(capsys)
    assert checks["deleted_users_data"] == {
        "name": "deleted_users_data",
        "status": "ok",
        "detail": "1 being scrubbed",  # its event is pending
    }
    conn.execute("DELETE FROM profile_sync.signup_events WHERE user_id = %s", (user,))  # lost, say
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["deleted_users_data"]["status"] == "fail"
    assert checks["deleted_users_data"]["detail"].startswith(
        "1 profile(s) of soft-deleted users still hold personal data and no scrub is pending "
        "(run profilesync backfill;"
    )
    assert cli.main(["backfill"]) == 0
    with running_publisher(settings):
        assert wait_for(
            lambda: count(conn, "SELECT count(*) FROM profile_sync.signup_events WHERE job_id IS NULL") == 0
        )
    run_worker_burst(settings)
    _, checks = _doctor(capsys)
    assert checks["deleted_users_data"]["status"] == "ok"
    assert checks["deleted_users_data"]["detail"] == "no soft-deleted user's profile holds personal data"


def test_doctor_fails_without_workers(env: dict[str, str], capsys: pytest.CaptureFixture[str]) -> None:
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["workers"] == {
        "name": "workers",
        "status": "fail",
        "detail": "0 alive, expected at least 1 (start profilesync worker)",
    }
    assert cli.main(["doctor", "--only", "workers"]) == 1
    assert cli.main(["doctor", "--only", "database,trigger,redis"]) == 0


def test_doctor_fails_on_old_backlog_failed_events_and_failed_jobs(
    settings: Settings,
    conn: psycopg.Connection[Any],
    redis_conn: redis.Redis,
    env: dict[str, str],
    live_worker: SimpleWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    signup(conn, "email")
    conn.execute("UPDATE profile_sync.signup_events SET created_at = now() - interval '10 minutes'")
    conn.execute(
        "INSERT INTO profile_sync.signup_events (user_id, failed_at, last_error) VALUES (%s, now(), 'x')",
        (uuid.uuid4(),),
    )
    _failed_job(settings, redis_conn)
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["backlog"]["status"] == "fail"
    assert re.search(r"oldest 6\d\d\.\ds > 60s", checks["backlog"]["detail"]), checks["backlog"]
    assert checks["failed_events"]["status"] == "fail"
    assert checks["failed_jobs"]["status"] == "fail"


def test_doctor_fails_on_a_transaction_pooler_listen_url(
    settings: Settings,
    env: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """DATABASE_URL at Supabase's transaction pooler (port 6543) and no LISTEN_DATABASE_URL."""
    host = urlsplit(settings.database_url).hostname
    monkeypatch.setenv("DATABASE_URL", f"postgresql://postgres:secret@{host}:6543/postgres")
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["listen_url"]["status"] == "fail"
    assert "transaction pooler" in checks["listen_url"]["detail"]
    assert "secret" not in checks["listen_url"]["detail"]
    assert checks["database"]["status"] == "fail"
    assert checks["trigger"]["detail"] == "not checked: database unreachable"


def test_doctor_fails_on_pending_migrations(
    conn: psycopg.Connection[Any],
    env: dict[str, str],
    live_worker: SimpleWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn.execute("DELETE FROM profile_sync.schema_migrations WHERE version = '0003'")
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["migrations"]["status"] == "fail" and "0003_readiness" in checks["migrations"]["detail"]


@pytest.mark.parametrize(
    ("damage", "reported"),
    [
        ("DROP FUNCTION profile_sync.unwatch_profiles(uuid[])", "function profile_sync.unwatch_profiles"),
        (
            "ALTER TABLE public.user_profiles DISABLE TRIGGER profile_sync_on_user_profiles_inserted",
            "trigger profile_sync_on_user_profiles_inserted on public.user_profiles",
        ),
        (
            "GRANT EXECUTE ON FUNCTION profile_sync.create_profiles(uuid[]) TO authenticated",
            "profile_sync.create_profiles(uuid[]) executable by authenticated",
        ),
        ("DROP TABLE profile_sync.profile_waiters", "table profile_sync.profile_waiters"),
    ],
)
def test_doctor_checks_the_objects_not_only_the_bookkeeping(
    conn: psycopg.Connection[Any],
    env: dict[str, str],
    live_worker: SimpleWorker,
    capsys: pytest.CaptureFixture[str],
    damage: str,
    reported: str,
) -> None:
    """Every migration reads as applied, but an object the pipeline needs is gone or wrong."""
    assert _doctor(capsys)[1]["objects"]["status"] == "ok"
    conn.execute(damage)
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["migrations"]["status"] == "ok"
    assert checks["objects"]["status"] == "fail"
    assert reported in checks["objects"]["detail"]


@pytest.mark.parametrize(
    ("damage", "reported"),
    [
        (
            "ALTER FUNCTION profile_sync.on_auth_user_created() RESET ALL",
            "function profile_sync.on_auth_user_created() changed",
        ),
        (
            "ALTER TABLE auth.users DISABLE TRIGGER profile_sync_on_auth_user_updated",
            "trigger profile_sync_on_auth_user_updated on auth.users disabled",
        ),
        (
            "DROP TRIGGER profile_sync_check_profile_update ON public.user_profiles",
            "trigger profile_sync_check_profile_update on public.user_profiles missing",
        ),
        (
            "REVOKE EXECUTE ON FUNCTION profile_sync.create_profiles(uuid[]) FROM profilesync_worker",
            "function profile_sync.create_profiles(uuid[]) changed",
        ),
        (
            "REVOKE UPDATE (enqueued_at) ON profile_sync.signup_events FROM profilesync_publisher",
            "table profile_sync.signup_events changed",
        ),
        (
            "DROP POLICY profile_sync_update_own_profile ON public.user_profiles",
            "policy profile_sync_update_own_profile on public.user_profiles missing",
        ),
        (
            "CREATE OR REPLACE FUNCTION profile_sync.clean_text(value jsonb, max_len integer) RETURNS text"
            " LANGUAGE sql IMMUTABLE AS $$ SELECT value #>> '{}' $$",
            "function profile_sync.clean_text(jsonb, integer) changed",
        ),
    ],
)
def test_doctor_names_an_object_that_drifted_from_its_definition_and_migrate_restores_it(
    conn: psycopg.Connection[Any],
    env: dict[str, str],
    live_worker: SimpleWorker,
    capsys: pytest.CaptureFixture[str],
    damage: str,
    reported: str,
) -> None:
    assert _doctor(capsys)[1]["definitions"]["status"] == "ok"
    conn.execute(damage)
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["definitions"]["status"] == "fail"
    assert reported in checks["definitions"]["detail"]
    assert checks["definitions"]["detail"].endswith("(run profilesync migrate)")
    assert cli.main(["migrate"]) == 0
    code, checks = _doctor(capsys)
    assert checks["definitions"]["status"] == "ok", checks["definitions"]
    assert checks["objects"]["status"] == "ok"


def test_doctor_names_definitions_this_release_has_not_applied(
    conn: psycopg.Connection[Any],
    env: dict[str, str],
    live_worker: SimpleWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    conn.execute("UPDATE profile_sync.definitions SET checksum = 'older' WHERE name = '05_publisher'")
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["definitions"]["detail"] == "not applied: 05_publisher (run profilesync migrate)"


def test_doctor_fails_when_redis_is_unreachable(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from profilesync.devkit.embedded import free_port

    monkeypatch.setenv("REDIS_URL", f"redis://127.0.0.1:{free_port()}/0")
    code, checks = _doctor(capsys)
    assert code == 1
    assert checks["redis"]["status"] == "fail"
    assert checks["workers"]["detail"] == "not checked: Redis unreachable"
    assert checks["trigger"]["status"] == "ok"


# -- backfill ----------------------------------------------------------------------------------------------


def _users_without_trigger(conn: psycopg.Connection[Any], n: int) -> None:
    conn.execute(f"ALTER TABLE auth.users DISABLE TRIGGER {TRIGGER}")
    bulk_signup(conn, n)
    for kind in ("phone", "anonymous", "github", "sso"):
        signup(conn, kind)
    conn.execute(f"ALTER TABLE auth.users ENABLE TRIGGER {TRIGGER}")


def test_backfill_dry_run_changes_nothing(
    conn: psycopg.Connection[Any], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _users_without_trigger(conn, 96)
    assert cli.main(["backfill", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run: 100 user(s) would be recorded (without a profile, or soft-deleted" in out
    assert re.search(r"users without profiles +100\n", out)
    assert count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 0


def test_backfill_gives_every_user_a_profile(
    settings: Settings, conn: psycopg.Connection[Any], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _users_without_trigger(conn, 496)
    with_profile = signup(conn, "email")  # recorded by the trigger: gets its profile the normal way
    deleted = signup(conn, "email")
    conn.execute("UPDATE auth.users SET deleted_at = now() WHERE id = %s", (deleted,))
    conn.execute("DELETE FROM profile_sync.signup_events WHERE user_id = %s", (deleted,))
    holding = signup(conn, "email")  # soft-deleted, its profile still holds personal data, no event
    conn.execute("SELECT profile_sync.create_profiles(%s)", ([holding],))
    conn.execute("UPDATE auth.users SET deleted_at = now() WHERE id = %s", (holding,))
    conn.execute("DELETE FROM profile_sync.signup_events WHERE user_id = %s", (holding,))
    assert verification_report(conn).users_without_profiles == 501

    assert cli.main(["backfill", "--chunk-size", "64"]) == 0
    out = capsys.readouterr().out
    assert "recorded 501 of 503 users in 8 chunk(s)" in out  # the trigger's own event is not doubled
    assert count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 502
    assert count(conn, "SELECT count(DISTINCT user_id) FROM profile_sync.signup_events") == 502

    assert cli.main(["backfill"]) == 0  # idempotent: everything is recorded already
    assert "recorded 0 of 503 users" in capsys.readouterr().out

    publish_all(settings, conn)
    run_worker_burst(settings)
    report = verification_report(conn)
    assert report.complete, report
    assert (report.users, report.profiles) == (501, 502)
    assert count(conn, PROFILE_OF, (with_profile,)) == 1
    assert count(conn, PROFILE_OF, (deleted,)) == 0
    scrubbed = "SELECT count(*) FROM public.user_profiles WHERE id = %s AND email IS NULL"
    assert count(conn, scrubbed, (holding,)) == 1


def test_backfill_wait_reports_completion(
    settings: Settings, conn: psycopg.Connection[Any], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _users_without_trigger(conn, 46)
    with running_publisher(settings):
        worker = subprocess.Popen([sys.executable, "-m", "profilesync.cli", "worker"], env=env)
        try:
            assert cli.main(["backfill", "--wait", "--timeout", "60"]) == 0
        finally:
            worker.terminate()
            assert worker.wait(timeout=20) == 0
    out = capsys.readouterr().out
    assert "recorded 50 of 50 users" in out
    assert "result: OK, every user has a profile" in out


def test_backfill_wait_gives_up_and_exits_nonzero_without_workers(
    conn: psycopg.Connection[Any], env: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    _users_without_trigger(conn, 1)
    assert cli.main(["backfill", "--wait", "--timeout", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "gave up waiting" in out
    assert re.search(r"users without profiles +5\n", out) and "first 5 users without a profile" in out
    assert "INCOMPLETE" in out
