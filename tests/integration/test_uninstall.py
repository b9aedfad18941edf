"""`profilesync uninstall` on a private cluster (it drops cluster-wide roles: never on a shared server)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from profilesync import cli, logs
from profilesync.definitions import Context, render
from profilesync.devkit.embedded import EmbeddedPostgres
from profilesync.migrate import available, migrate
from profilesync.ops import objects
from tests.harness import PROFILE_OF, count, signup
from tests.servers import OWNER, as_role, create_owned_database

ROLES = "SELECT count(*) FROM pg_roles WHERE rolname IN ('profilesync_worker', 'profilesync_publisher')"
LEFTOVERS = """
SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'profile_sync')
     + (SELECT count(*) FROM pg_trigger WHERE tgrelid = 'auth.users'::regclass AND NOT tgisinternal)
     + (SELECT count(*) FROM pg_policy WHERE polname LIKE 'profile\\_sync\\_%%')
     + (SELECT count(*) FROM pg_proc WHERE proname = 'ensure_profile')
"""
# public.ensure_profile() comes with a later migration; the uninstall drops it whoever created it.
ENSURE_PROFILE = """
DO $$ BEGIN
  IF pg_catalog.to_regprocedure('public.ensure_profile()') IS NULL THEN
    CREATE FUNCTION public.ensure_profile() RETURNS void LANGUAGE sql AS '';
  END IF;
END $$
"""


@pytest.fixture(scope="module")
def private_cluster() -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(durable=False) as server:
        yield server


@pytest.fixture
def cluster(private_cluster: EmbeddedPostgres) -> Iterator[EmbeddedPostgres]:
    """The module's cluster; the databases a test made are dropped after it, so no grant outlives its test."""
    yield private_cluster
    with psycopg.connect(private_cluster.url, autocommit=True) as admin:
        for (name,) in admin.execute(
            "SELECT datname FROM pg_database WHERE datname LIKE 'app\\_%'"
        ).fetchall():
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture
def uninstall(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Any:
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)

    def run(url: str, *args: str) -> str:
        monkeypatch.setenv("DATABASE_URL", url)
        capsys.readouterr()
        assert cli.main(["uninstall", *args]) == 0
        return capsys.readouterr().out

    return run


def installed(cluster: EmbeddedPostgres) -> str:
    """A database owned and migrated by a non-superuser (as on Supabase); the owner's URL."""
    url = as_role(create_owned_database(cluster.url, f"app_{uuid.uuid4().hex[:8]}"), OWNER)
    with psycopg.connect(url, autocommit=True) as conn:
        migrate(conn, dev_auth_stub=True)
        conn.execute(ENSURE_PROFILE)
    return url


def auth_admin_signup(url: str) -> tuple[uuid.UUID, list[str]]:
    """A signup as Supabase's auth server makes it (its own login, not the owner's); the id and warnings."""
    notices: list[str] = []
    user_id = uuid.uuid4()
    with psycopg.connect(as_role(url, "postgres"), autocommit=True) as conn:
        conn.add_notice_handler(lambda diag: notices.append(diag.message_primary or ""))
        with conn.transaction():
            conn.execute("SET LOCAL ROLE supabase_auth_admin")
            conn.execute("SET LOCAL search_path = auth")
            conn.execute("INSERT INTO users (id, email) VALUES (%s, %s)", (user_id, f"{user_id}@x.example"))
    return user_id, notices


def test_uninstall_removes_our_objects_keeps_the_data_and_signups_go_on(
    cluster: EmbeddedPostgres, uninstall: Any
) -> None:
    url = installed(cluster)
    with psycopg.connect(url, autocommit=True) as conn:
        profiled = signup(conn, "google")
        conn.execute("SELECT profile_sync.create_profiles(%s)", ([profiled],))
        conn.execute("INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, 'hi')", (profiled,))
        signup(conn, "email")  # its event is still pending

        out = uninstall(url)
        assert "removed trigger profile_sync_on_auth_user_created on auth.users" in out
        assert "removed schema profile_sync (1 signup event(s) without a profile discarded" in out
        assert "removed role profilesync_worker" in out and "removed role profilesync_publisher" in out
        assert "kept table public.user_profiles with its rows" in out
        assert count(conn, LEFTOVERS) == 0
        assert count(conn, ROLES) == 0
        assert count(conn, PROFILE_OF, (profiled,)) == 1
        assert count(conn, "SELECT count(*) FROM public.chat_conversations") == 1

        user_id, notices = auth_admin_signup(url)  # nothing of ours left in its way, and no warning
        assert notices == []
        assert count(conn, "SELECT count(*) FROM auth.users WHERE id = %s", (user_id,)) == 1

        assert uninstall(url).startswith("nothing of profilesync's was installed\nkept table")  # idempotent
        installed_again = migrate(conn)  # installs again, roles included
        assert installed_again.migrations == [m.name for m in available()]
        assert installed_again.definitions == [d.name for d in render(Context())]
        assert objects.missing(conn, Context()) == []
        user_id, notices = auth_admin_signup(url)
        assert notices == []
        recorded = "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s"
        assert count(conn, recorded, (user_id,)) == 1


def test_roles_another_database_still_uses_are_kept(cluster: EmbeddedPostgres, uninstall: Any) -> None:
    first, second = installed(cluster), installed(cluster)
    out = uninstall(first)
    assert "kept role profilesync_worker: still used in another database of the cluster" in out
    with psycopg.connect(second, autocommit=True) as conn:
        assert count(conn, ROLES) == 2
        assert objects.missing(conn, Context()) == []  # the other database is untouched
    out = uninstall(second)
    assert "removed role profilesync_worker" in out
    with psycopg.connect(second, autocommit=True) as conn:
        assert count(conn, ROLES) == 0


def test_drop_tables_removes_the_application_tables_too(cluster: EmbeddedPostgres, uninstall: Any) -> None:
    url = installed(cluster)
    out = uninstall(url, "--drop-tables")
    assert "removed table public.user_profiles" in out and "removed table public.chat_conversations" in out
    with psycopg.connect(url, autocommit=True) as conn:
        tables = "SELECT count(*) FROM pg_class WHERE relname IN ('user_profiles', 'chat_conversations')"
        assert count(conn, tables) == 0
        assert auth_admin_signup(url)[1] == []


class AuthTraffic(threading.Thread):
    """Supabase's auth server at work: a signup then a sign-in (last_sign_in_at), over and over, each in its
    own transaction as supabase_auth_admin; the longest either took."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.stop, self.done, self.longest = as_role(url, "postgres"), threading.Event(), 0, 0.0

    def run(self) -> None:
        with psycopg.connect(self.url, autocommit=True, options="-c statement_timeout=30000") as conn:
            while not self.stop.is_set():
                user_id = uuid.uuid4()
                for statement, params in (
                    ("INSERT INTO users (id, email) VALUES (%s, %s)", (user_id, f"{user_id}@x.example")),
                    ("UPDATE users SET last_sign_in_at = now() WHERE id = %s", (user_id,)),
                ):
                    started = time.monotonic()
                    with conn.transaction():
                        conn.execute("SET LOCAL ROLE supabase_auth_admin")
                        conn.execute("SET LOCAL search_path = auth")
                        conn.execute(statement, params)
                    self.longest = max(self.longest, time.monotonic() - started)
                self.done += 1
                time.sleep(0.02)


@pytest.mark.parametrize("held", ["public.user_profiles", "auth.users"])
def test_uninstall_behind_an_open_transaction_changes_nothing_names_it_and_never_stalls_signups(
    cluster: EmbeddedPostgres, held: str
) -> None:
    url, lock_timeout = installed(cluster), 1.0
    env = {**os.environ, "DATABASE_URL": url, "PROFILESYNC_LOCK_TIMEOUT": str(lock_timeout)}
    traffic = AuthTraffic(url)
    with psycopg.connect(url, application_name="monthly-report") as report:
        report.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.SQL(held)))  # then idle in transaction
        traffic.start()
        started = time.monotonic()
        try:
            done = subprocess.run(
                [sys.executable, "-m", "profilesync.cli", "uninstall"],
                env=env,
                capture_output=True,
                text=True,
                timeout=60,
            )
        finally:
            elapsed = time.monotonic() - started
            report.rollback()
            traffic.stop.set()
            traffic.join(timeout=60)
        pid = report.info.backend_pid
    print(
        f"uninstall behind a reader of {held}: exit {done.returncode} after {elapsed:.1f}s; "
        f"{traffic.done} signups + sign-ins meanwhile, the longest statement {traffic.longest * 1000:.0f} ms"
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith(
        "profilesync: uninstall changed nothing: it could not take its locks in time: "
        f"{held} is held by pid {pid} (application 'monthly-report', idle in transaction since "
    )
    assert "through 3 attempts, each waiting 1s for a lock" in done.stderr
    assert elapsed < 3 * lock_timeout + 1.5 + 10  # the attempts, their pauses, starting Python on a busy box
    assert traffic.done >= 3 and traffic.longest < lock_timeout + 2.0  # queued behind it for one wait at most
    with psycopg.connect(url, autocommit=True) as conn:
        assert objects.missing(conn, Context()) == []  # nothing dropped
        assert count(conn, ROLES) == 2


def test_a_role_that_does_not_own_auth_users_changes_nothing_and_is_told_what_it_needs(
    cluster: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = installed(cluster)
    with psycopg.connect(as_role(url, "postgres"), autocommit=True) as admin:
        admin.execute("ALTER TABLE auth.users OWNER TO supabase_auth_admin")  # as on hosted Supabase
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    monkeypatch.setenv("DATABASE_URL", url)
    assert cli.main(["uninstall"]) == 1
    err = capsys.readouterr().err
    assert err == (
        "profilesync: uninstall changed nothing: this role may not drop the signup trigger on auth.users "
        "(SQLSTATE 42501): run it as the owner of auth.users, or on Supabase as postgres where supautils "
        "lets it drop triggers on auth tables (setting supautils.drop_trigger_grants)\n"
    )
    with psycopg.connect(url, autocommit=True) as conn:
        assert objects.missing(conn, Context()) == [] and count(conn, ROLES) == 2
