"""Security on real PostgreSQL and Redis: least-privilege roles, revoked EXECUTE, RLS, no pickle, quiet logs.

Also: the signup trigger never blocks a signup, whatever state our schema is in.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from psycopg import errors, sql
from rq import Queue
from rq.job import Job, JobStatus
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from profilesync.config import DEFAULT_QUEUE, Settings
from profilesync.devkit.children import Children
from profilesync.devkit.signups import KINDS
from profilesync.migrate import migrate
from profilesync.publisher.gauges import DatabaseGauges
from profilesync.queueing import CREATE_PROFILES, profiles_queue
from tests.harness import (
    PENDING,
    PROFILES_OF,
    act_as,
    count,
    reject_profile_of,
    run_worker_burst,
    running_publisher,
    signup,
    wait_for,
)
from tests.servers import OWNER, DatabaseFactory, as_role, create_owned_database

Conn = psycopg.Connection[Any]

WORKER, PUBLISHER = "profilesync_worker", "profilesync_publisher"


def role_settings(settings: Settings, database_url: str, role: str) -> Settings:
    return settings.model_copy(update={"database_url": as_role(database_url, role)})


@pytest.fixture
def owned_database_url(database_factory: DatabaseFactory) -> Iterator[str]:
    """A fresh database owned, not only migrated, by the non-superuser OWNER (as on Supabase)."""
    url = create_owned_database(database_factory.admin_url, f"profilesync_owned_{uuid.uuid4().hex[:12]}")
    try:
        with psycopg.connect(as_role(url, OWNER), autocommit=True) as owner:
            migrate(owner, dev_auth_stub=True)
        yield url
    finally:
        database_factory.drop(url)


# -- the least-privilege roles -------------------------------------------------------------------------------


@pytest.mark.parametrize("database", ["database_url", "owned_database_url"])
def test_publisher_and_worker_work_as_their_roles(
    database: str, request: pytest.FixtureRequest, settings: Settings, redis_conn: redis.Redis
) -> None:
    url: str = request.getfixturevalue(database)  # migrated by a superuser, or by a non-superuser owner
    with psycopg.connect(url, autocommit=True) as admin:
        users = [signup(admin, kind) for kind in KINDS]
        mallory = signup(admin, user_meta={"name": "Mallory"})
        reject_profile_of(admin, mallory)
        with running_publisher(role_settings(settings, url, PUBLISHER)):
            assert wait_for(lambda: count(admin, PENDING) == 0)
        # with metrics on: the worker also times the signups (signup_ages), in the same statement
        run_worker_burst(role_settings(settings, url, WORKER).model_copy(update={"metrics_port": 9}))

        assert count(admin, PROFILES_OF, (users,)) == len(KINDS)
        assert count(admin, PROFILES_OF, ([mallory],)) == 0
        # the publisher's /metrics reads the outbox and the users without a profile as itself
        gauges = DatabaseGauges(as_role(url, PUBLISHER))
        assert {m.name: m.samples[0].value for m in gauges.collect()}["profilesync_failed_events"] == 1
        gauges.close()
        # the worker marked the failure (its UPDATE grant) and retired the others' events (via the function)
        rows = admin.execute(
            "SELECT user_id, failed_at IS NOT NULL FROM profile_sync.signup_events"
        ).fetchall()
        assert rows == [(mallory, True)]
    assert FailedJobRegistry(queue=profiles_queue(redis_conn)).count == 1


def test_the_publisher_role_redelivers_events_whose_jobs_vanished(
    conn: Conn, database_url: str, settings: Settings, redis_conn: redis.Redis
) -> None:
    users = [signup(conn) for _ in range(3)]
    publisher_settings = role_settings(settings, database_url, PUBLISHER)
    with running_publisher(publisher_settings):
        assert wait_for(lambda: count(conn, PENDING) == 0)
    redis_conn.flushdb()  # Redis lost the jobs
    conn.execute("UPDATE profile_sync.signup_events SET enqueued_at = now() - interval '1 hour'")
    with running_publisher(publisher_settings):  # redelivers on start
        assert wait_for(lambda: profiles_queue(redis_conn).count == 1)
    run_worker_burst(role_settings(settings, database_url, WORKER))
    assert count(conn, PROFILES_OF, (users,)) == 3


_GRANTS = """
SELECT c.oid::regclass::text, NULL::text, a.privilege_type
FROM pg_class c, aclexplode(c.relacl) a WHERE a.grantee = %(role)s::regrole
UNION ALL
SELECT c.oid::regclass::text, att.attname::text, a.privilege_type
FROM pg_attribute att JOIN pg_class c ON c.oid = att.attrelid, aclexplode(att.attacl) a
WHERE a.grantee = %(role)s::regrole
UNION ALL
SELECT p.oid::regprocedure::text, NULL, a.privilege_type
FROM pg_proc p, aclexplode(p.proacl) a WHERE a.grantee = %(role)s::regrole
UNION ALL
SELECT n.nspname::text, NULL, a.privilege_type
FROM pg_namespace n, aclexplode(n.nspacl) a WHERE a.grantee = %(role)s::regrole
"""
_EVENTS = "profile_sync.signup_events"
_EXPECTED_GRANTS = {
    PUBLISHER: {
        ("profile_sync", None, "USAGE"),
        *(("profile_sync.publishers", None, p) for p in ("SELECT", "INSERT", "UPDATE", "DELETE")),
        ("profile_sync.announce_publisher(integer,boolean)", None, "EXECUTE"),
        *(
            (_EVENTS, c, "SELECT")
            for c in ("id", "user_id", "created_at", "enqueued_at", "job_id", "failed_at")
        ),
        (_EVENTS, "enqueued_at", "UPDATE"),
        (_EVENTS, "job_id", "UPDATE"),
        ("profile_sync.record_unrecorded_users(uuid,integer)", None, "EXECUTE"),  # the sweeper
        ("profile_sync.profile_gap()", None, "EXECUTE"),  # /metrics: users without a profile
    },
    WORKER: {
        ("profile_sync", None, "USAGE"),
        ("profile_sync.create_profiles(uuid[])", None, "EXECUTE"),
        ("profile_sync.signup_ages(uuid[])", None, "EXECUTE"),  # the latency histogram
        ("profile_sync.sync_profiles(uuid[],text)", None, "EXECUTE"),
        (_EVENTS, "user_id", "SELECT"),
        (_EVENTS, "failed_at", "UPDATE"),
        (_EVENTS, "last_error", "UPDATE"),
    },
}


@pytest.mark.parametrize("role", [PUBLISHER, WORKER])
def test_the_roles_hold_exactly_the_grants_they_need(conn: Conn, role: str) -> None:
    grants = {tuple(row) for row in conn.execute(_GRANTS, {"role": role})}
    assert grants == _EXPECTED_GRANTS[role]
    row = conn.execute(
        """
        SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls,
               (SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid)
        FROM pg_roles r WHERE rolname = %s
        """,
        (role,),
    ).fetchone()
    assert row == (True, False, False, False, False, False, 0)


_FORBIDDEN = [
    "INSERT INTO auth.users (id) VALUES (gen_random_uuid())",
    "SELECT count(*) FROM auth.users",
    "SELECT rolpassword FROM pg_catalog.pg_authid",
    "SELECT count(*) FROM public.user_profiles",
    "SELECT count(*) FROM public.chat_conversations",
    "INSERT INTO public.user_profiles (id) VALUES (gen_random_uuid())",
    "SELECT last_error FROM profile_sync.signup_events",
    "INSERT INTO profile_sync.signup_events (user_id) VALUES (gen_random_uuid())",
    "DELETE FROM profile_sync.signup_events",
    "TRUNCATE profile_sync.signup_events",
    "SELECT count(*) FROM profile_sync.schema_migrations",
    "SELECT count(*) FROM profile_sync.profile_waiters",
    "SELECT profile_sync.profile_state(gen_random_uuid())",
    "SELECT profile_sync.forget_dead_profile_waiters()",
    "DROP TABLE profile_sync.signup_events",
    "ALTER TABLE public.user_profiles DISABLE ROW LEVEL SECURITY",
    "CREATE TABLE public.intruder (id int)",
    "CREATE TABLE profile_sync.intruder (id int)",
    "CREATE FUNCTION profile_sync.intruder() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "ALTER TRIGGER profile_sync_on_auth_user_created ON auth.users RENAME TO intruder",
]
_FORBIDDEN_FOR = {
    PUBLISHER: [
        *_FORBIDDEN,
        "SELECT * FROM profile_sync.create_profiles(ARRAY[gen_random_uuid()])",
        "SELECT * FROM profile_sync.sync_profiles(ARRAY[gen_random_uuid()])",
    ],
    WORKER: [
        *_FORBIDDEN,
        "SELECT count(*) FROM profile_sync.publishers",
        "UPDATE profile_sync.signup_events SET enqueued_at = NULL",
    ],
}


@pytest.mark.parametrize("role", [PUBLISHER, WORKER])
def test_the_roles_can_do_nothing_else(conn: Conn, database_url: str, role: str) -> None:
    signup(conn)
    with psycopg.connect(as_role(database_url, role), autocommit=True) as restricted:
        for statement in _FORBIDDEN_FOR[role]:
            with pytest.raises(errors.InsufficientPrivilege):
                restricted.execute(statement)
    assert count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 1


# -- functions: not callable by PUBLIC, anon, authenticated; search_path pinned ------------------------------

_FUNCTIONS = """
SELECT p.oid::regprocedure::text, p.prosecdef, p.proconfig
FROM pg_proc p WHERE p.pronamespace = 'profile_sync'::regnamespace ORDER BY 1
"""


def test_no_function_of_ours_is_executable_by_public_anon_or_authenticated(conn: Conn) -> None:
    functions = conn.execute(_FUNCTIONS).fetchall()
    assert len(functions) >= 9
    public = conn.execute(
        """
        SELECT p.oid::regprocedure::text FROM pg_proc p
        WHERE p.pronamespace = 'profile_sync'::regnamespace
          AND (p.proacl IS NULL OR EXISTS (SELECT 1 FROM aclexplode(p.proacl) a WHERE a.grantee = 0))
        """
    ).fetchall()
    assert public == []
    for role in ("anon", "authenticated"):
        callable_ = conn.execute(
            """
            SELECT p.oid::regprocedure::text FROM pg_proc p
            WHERE p.pronamespace = 'profile_sync'::regnamespace
              AND has_function_privilege(%s, p.oid, 'EXECUTE')
            """,
            (role,),
        ).fetchall()
        assert callable_ == [], role


@pytest.mark.parametrize("role", ["anon", "authenticated"])
@pytest.mark.parametrize(
    "call",
    [
        "SELECT * FROM profile_sync.create_profiles(ARRAY[gen_random_uuid()])",
        "SELECT * FROM profile_sync.sync_profiles(ARRAY[gen_random_uuid()], 'overwrite')",
        "SELECT profile_sync.watch_profile(gen_random_uuid(), pg_backend_pid(), gen_random_uuid())",
        "SELECT profile_sync.recheck_profile(gen_random_uuid(), 10)",
        "SELECT profile_sync.clean_text('\"x\"'::jsonb, 10)",
    ],
)
def test_api_roles_get_42501_even_with_schema_usage(conn: Conn, role: str, call: str) -> None:
    # Schema USAGE alone would already stop them: grant it here, so the function's own ACL is what is tested.
    for usage in (False, True):
        with pytest.raises(errors.InsufficientPrivilege) as raised, conn.transaction():
            if usage:
                conn.execute(sql.SQL("GRANT USAGE ON SCHEMA profile_sync TO {}").format(sql.Identifier(role)))
            conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            conn.execute(call)
        assert raised.value.sqlstate == "42501"
        assert ("function" if usage else "schema") in str(raised.value)


def test_every_function_of_ours_pins_an_empty_search_path(conn: Conn) -> None:
    functions = conn.execute(_FUNCTIONS).fetchall()
    definers = [name for name, secdef, _ in functions if secdef]
    assert {"profile_sync.on_auth_user_created()", "profile_sync.create_profiles(uuid[])"} <= set(definers)
    # Trigger functions on auth.users may also bound their lock waits (lock_timeout); nothing else is set.
    unpinned = [
        name
        for name, _, config in functions
        if [c for c in config if "lock_timeout" not in c] != ['search_path=""']
    ]
    assert unpinned == []


# -- row level security ------------------------------------------------------------------------------------


@pytest.fixture
def two_users(conn: Conn) -> tuple[uuid.UUID, uuid.UUID]:
    alice, bob = signup(conn, "google"), signup(conn, "github")
    conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", ([alice, bob],))
    for user in (alice, bob):
        conn.execute("INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, 'hello')", (user,))
    return alice, bob


def test_rls_a_signed_in_user_sees_and_edits_only_their_own_profile(
    conn: Conn, two_users: tuple[uuid.UUID, uuid.UUID]
) -> None:
    alice, bob = two_users
    with conn.transaction(force_rollback=True):
        act_as(conn, "authenticated", alice)
        assert [r[0] for r in conn.execute("SELECT id FROM public.user_profiles")] == [alice]
        own = conn.execute("UPDATE public.user_profiles SET full_name = 'Ada' WHERE id = %s", (alice,))
        other = conn.execute("UPDATE public.user_profiles SET full_name = 'Eve' WHERE id = %s", (bob,))
        assert (own.rowcount, other.rowcount) == (1, 0)
    with conn.transaction(force_rollback=True):
        act_as(conn, "authenticated", alice)
        with pytest.raises(errors.InsufficientPrivilege):  # not a column a user edits
            conn.execute("UPDATE public.user_profiles SET email = 'x@example.com' WHERE id = %s", (alice,))
    with conn.transaction(force_rollback=True):
        act_as(conn, "authenticated", alice)
        with pytest.raises(errors.InsufficientPrivilege):
            conn.execute("INSERT INTO public.user_profiles (id) VALUES (gen_random_uuid())")
    with conn.transaction(force_rollback=True):
        act_as(conn, "authenticated", None)  # a token without sub: auth.uid() is NULL
        assert count(conn, "SELECT count(*) FROM public.user_profiles") == 0
    assert count(conn, "SELECT count(*) FROM public.user_profiles WHERE full_name IN ('Ada', 'Eve')") == 0


def test_rls_a_signed_in_user_sees_starts_and_deletes_only_their_own_conversations(
    conn: Conn, two_users: tuple[uuid.UUID, uuid.UUID]
) -> None:
    alice, bob = two_users
    conversations = "SELECT count(*) FROM public.chat_conversations WHERE user_id = %s"
    with conn.transaction(force_rollback=True):
        act_as(conn, "authenticated", alice)
        assert [r[0] for r in conn.execute("SELECT user_id FROM public.chat_conversations")] == [alice]
        conn.execute("INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, 'mine')", (alice,))
        assert count(conn, conversations, (alice,)) == 2
        assert conn.execute("DELETE FROM public.chat_conversations WHERE user_id = %s", (bob,)).rowcount == 0
        assert (
            conn.execute("DELETE FROM public.chat_conversations WHERE user_id = %s", (alice,)).rowcount == 2
        )
    with conn.transaction(force_rollback=True):
        act_as(conn, "authenticated", alice)
        with pytest.raises(errors.InsufficientPrivilege, match="row-level security"):
            conn.execute("INSERT INTO public.chat_conversations (user_id) VALUES (%s)", (bob,))
    assert count(conn, conversations, (bob,)) == 1


@pytest.mark.parametrize("table", ["user_profiles", "chat_conversations"])
def test_rls_anon_gets_nothing(conn: Conn, two_users: tuple[uuid.UUID, uuid.UUID], table: str) -> None:
    alice, _ = two_users
    name = sql.Identifier("public", table)
    select, delete = sql.SQL("SELECT count(*) FROM {}").format(name), sql.SQL("DELETE FROM {}").format(name)
    for statement in (select, delete):
        with pytest.raises(errors.InsufficientPrivilege), conn.transaction():
            act_as(conn, "anon", alice)  # even a forged sub claim
            conn.execute(statement)
    with conn.transaction(force_rollback=True):
        # Supabase's default privileges grant anon everything on public tables: RLS still shows it nothing.
        conn.execute(sql.SQL("GRANT ALL ON {} TO anon").format(name))
        act_as(conn, "anon", alice)
        assert conn.execute(select).fetchone() == (0,)
        assert conn.execute(delete).rowcount == 0
    assert conn.execute(select).fetchone() == (2,)


def test_rls_is_enabled_and_policies_use_the_cached_auth_uid(conn: Conn) -> None:
    rows = conn.execute(
        """
        SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity,
               (SELECT count(*) FROM pg_policies p WHERE p.tablename = c.relname AND p.schemaname = 'public'
                  AND coalesce(p.qual, p.with_check) LIKE '%%( SELECT auth.uid() AS uid)%%'
                  AND p.roles = '{authenticated}')
        FROM pg_class c
        WHERE c.oid IN ('public.user_profiles'::regclass, 'public.chat_conversations'::regclass)
        ORDER BY 1
        """
    ).fetchall()
    assert rows == [("chat_conversations", True, False, 3), ("user_profiles", True, False, 2)]


# -- the JSON serializer only ------------------------------------------------------------------------------


class _CreatesAFile:
    """Unpickling this opens (creates) a file: the stand-in for arbitrary code in a pickled job."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (open, (str(self.path), "w"))


def test_a_pickled_job_is_refused_without_running_code(
    conn: Conn, settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    marker = tmp_path / "pwned"
    pickled = Queue(DEFAULT_QUEUE, connection=redis_conn).enqueue(
        CREATE_PROFILES, args=(_CreatesAFile(marker),)
    )
    user = signup(conn)
    profiles_queue(redis_conn).enqueue(CREATE_PROFILES, args=([str(user)],))  # a good job behind it

    run_worker_burst(settings)

    assert not marker.exists()
    assert count(conn, PROFILES_OF, ([user],)) == 1  # the worker went on after refusing the pickled job
    job = Job.fetch(pickled.id, connection=redis_conn, serializer=JSONSerializer)
    assert job.get_status() == JobStatus.FAILED
    assert pickled.id in FailedJobRegistry(queue=profiles_queue(redis_conn)).get_job_ids()
    assert not marker.exists()


# -- logs --------------------------------------------------------------------------------------------------


def test_logs_of_a_pipeline_run_hold_no_emails_or_passwords(
    conn: Conn, database_url: str, settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    base = {
        **os.environ,
        "REDIS_URL": settings.redis_url,
        "PROFILESYNC_SAFETY_INTERVAL": "0.5",
        "PROFILESYNC_LOG_LEVEL": "INFO",
        "PROFILESYNC_LOG_FORMAT": "json",
    }
    # One user's profile fails for good: the error path (ERROR logs, failed job, last_error) is checked too.
    mallory_id = uuid.uuid4()
    reject_profile_of(conn, mallory_id)
    children = Children(base, tmp_path)
    children.start("publisher", "publisher", env={"DATABASE_URL": as_role(database_url, PUBLISHER, password)})
    children.start("worker", "worker", env={"DATABASE_URL": as_role(database_url, WORKER, password)})
    try:
        users = [signup(conn, kind) for kind in KINDS for _ in range(2)]
        mallory = signup(conn, id=mallory_id, email="mallory@evil.example", user_meta={"name": "Mallory"})
        assert wait_for(lambda: count(conn, PROFILES_OF, (users,)) == len(users))
        failed = (
            "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s AND failed_at IS NOT NULL"
        )
        assert wait_for(lambda: count(conn, failed, (mallory,)) == 1)
    finally:
        codes = children.stop(timeout=15)
    output = {name: children.log(name) for name in ("publisher", "worker")}
    assert codes == {"publisher": 0, "worker": 0}, output
    emails = [r[0] for r in conn.execute("SELECT email FROM auth.users WHERE email IS NOT NULL")]
    assert len(emails) == 9
    for name, text in output.items():
        records = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
        assert len(records) >= 2, name  # it did log: the checks below look at something
        for secret in (password, *emails):
            assert secret not in text, (name, secret)
    assert f"{PUBLISHER}:***@" in output["publisher"]  # the URL is logged, redacted
    assert "no_mallory" in output["worker"]  # the failure is logged, by constraint name

    # Nor in what a failure leaves for operators: the failed job and the event's last_error.
    (job_id,) = FailedJobRegistry(queue=profiles_queue(redis_conn)).get_job_ids()
    result = Job.fetch(job_id, connection=redis_conn, serializer=JSONSerializer).latest_result()
    assert result is not None and "no_mallory" in (result.exc_string or "")
    row = conn.execute(
        "SELECT last_error FROM profile_sync.signup_events WHERE user_id = %s", (mallory,)
    ).fetchone()
    assert row is not None and "no_mallory" in row[0]
    for text in (result.exc_string or "", row[0]):
        assert "mallory@" not in text and "Mallory" not in text, text


# -- the trigger never blocks a signup ---------------------------------------------------------------------

_GOTRUE_SIGNUP = "INSERT INTO users (id, email) VALUES (%s, %s)"


def _signup_as_auth_admin(url: str) -> tuple[uuid.UUID, list[str]]:
    """A signup as Supabase's auth server makes it; returns the user id and the warnings raised."""
    notices: list[str] = []
    user_id = uuid.uuid4()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        with conn.transaction():
            conn.execute("SET LOCAL ROLE supabase_auth_admin")
            conn.execute("SET LOCAL search_path = auth")
            conn.execute(_GOTRUE_SIGNUP, (user_id, f"{user_id.hex[:8]}@example.com"))
    return user_id, notices


@pytest.mark.parametrize(
    "breakage",
    [
        "DROP TABLE profile_sync.signup_events",
        "DROP SEQUENCE profile_sync.idle_publishers",
        "ALTER TABLE profile_sync.signup_events ADD COLUMN required text NOT NULL",
        "ALTER TABLE profile_sync.signup_events ADD CONSTRAINT nothing CHECK (false) NOT VALID",
        "REVOKE ALL ON SCHEMA profile_sync FROM CURRENT_USER",
        "REVOKE INSERT ON profile_sync.signup_events FROM CURRENT_USER",
        "REVOKE ALL ON SEQUENCE profile_sync.idle_publishers FROM CURRENT_USER",
    ],
)
def test_a_broken_schema_never_blocks_a_signup(owned_database_url: str, breakage: str) -> None:
    # The owner is no superuser here (as on Supabase): revoking its own privileges really breaks the trigger.
    with psycopg.connect(as_role(owned_database_url, OWNER), autocommit=True) as owner:
        owner.execute(breakage)
    user_id, notices = _signup_as_auth_admin(owned_database_url)
    with psycopg.connect(owned_database_url, autocommit=True) as admin:
        assert count(admin, "SELECT count(*) FROM auth.users WHERE id = %s", (user_id,)) == 1
        if breakage.startswith("REVOKE ALL ON SEQUENCE") and admin.info.server_version >= 170000:
            # PostgreSQL 17+ reads an unreadable sequence's value as NULL instead of raising: the signup is
            # recorded and only its NOTIFY is skipped (the publisher's safety timer drains it).
            assert not notices, notices
            recorded = "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s"
            assert count(admin, recorded, (user_id,)) == 1
            return
    assert any("not recorded" in n for n in notices), notices
