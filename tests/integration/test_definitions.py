"""One live definition per object: an install upgraded through every released migration equals a fresh one.

tests/fixtures/released_sql/ holds sql/0001-0009 exactly as released (functions, triggers and grants inside
the migrations, redefined up to three times); an existing install applied them with the bookkeeping of the
time.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

from profilesync.definitions import Context, render, state
from profilesync.migrate import Migrated, auth_stub, available, migrate
from tests.harness import count, signup
from tests.servers import OWNER, DatabaseFactory, as_role, create_owned_database

RELEASED = Path(__file__).parent.parent / "fixtures" / "released_sql"
SCHEMAS = ["public", "profile_sync", "auth"]

# Everything a migration or definition decides, by name, in a form that does not depend on the order things
# were created in (oids, attribute numbers of dropped columns, the order of grants).
_CATALOG = r"""
SELECT 'column ' || c.oid::regclass || '.' || a.attname,
       concat_ws(' ', format_type(a.atttypid, a.atttypmod), CASE WHEN a.attnotnull THEN 'not null' END,
                 'default ' || pg_get_expr(d.adbin, d.adrelid),
                 'identity ' || nullif(a.attidentity::text, ''),
                 'privileges ' || (SELECT string_agg(x::text, ' ' ORDER BY x::text) FROM unnest(a.attacl) x))
FROM pg_class c JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
LEFT JOIN pg_attrdef d ON d.adrelid = c.oid AND d.adnum = a.attnum
WHERE c.relnamespace::regnamespace::text = ANY (%(schemas)s) AND c.relkind IN ('r', 'p', 'v')
UNION ALL
SELECT 'relation ' || c.oid::regclass,
       concat_ws(' ', c.relkind::text, 'rls ' || c.relrowsecurity, 'force ' || c.relforcerowsecurity,
                 'options ' || array_to_string(c.reloptions, ','), 'owner ' || c.relowner::regrole,
                 'privileges ' || (SELECT string_agg(x::text, ' ' ORDER BY x::text) FROM unnest(c.relacl) x))
FROM pg_class c
WHERE c.relnamespace::regnamespace::text = ANY (%(schemas)s) AND c.relkind IN ('r', 'p', 'v', 'S', 'i')
UNION ALL
SELECT 'index ' || schemaname || '.' || indexname, indexdef
FROM pg_indexes WHERE schemaname = ANY (%(schemas)s)
UNION ALL
SELECT 'constraint ' || conname || ' on ' || conrelid::regclass, pg_get_constraintdef(oid)
FROM pg_constraint WHERE connamespace::regnamespace::text = ANY (%(schemas)s)
UNION ALL
SELECT 'sequence ' || schemaname || '.' || sequencename,
       concat_ws(' ', data_type, start_value, min_value, max_value, increment_by, cycle)
FROM pg_sequences WHERE schemaname = ANY (%(schemas)s)
UNION ALL
SELECT 'function ' || p.oid::regprocedure,
       pg_get_functiondef(p.oid) || ' owner ' || p.proowner::regrole || ' privileges '
         || coalesce((SELECT string_agg(x::text, ' ' ORDER BY x::text) FROM unnest(p.proacl) x), 'default')
FROM pg_proc p WHERE p.pronamespace::regnamespace::text = ANY (%(schemas)s)
UNION ALL
SELECT 'trigger ' || t.tgname || ' on ' || t.tgrelid::regclass,
       pg_get_triggerdef(t.oid) || ' ' || t.tgenabled::text
FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
WHERE NOT t.tgisinternal AND c.relnamespace::regnamespace::text = ANY (%(schemas)s)
UNION ALL
SELECT 'policy ' || policyname || ' on ' || schemaname || '.' || tablename,
       concat_ws(' | ', permissive, roles::text, cmd, qual, with_check)
FROM pg_policies WHERE schemaname = ANY (%(schemas)s)
UNION ALL
SELECT 'schema ' || nspname,
       'privileges ' || coalesce((SELECT string_agg(x::text, ' ' ORDER BY x::text) FROM unnest(nspacl) x), '')
FROM pg_namespace WHERE nspname = ANY (%(schemas)s)
"""


def catalog(conn: psycopg.Connection[Any]) -> dict[str, str]:
    return {row[0]: row[1] for row in conn.execute(_CATALOG, {"schemas": SCHEMAS})}


def differences(left: dict[str, str], right: dict[str, str]) -> list[str]:
    return [
        f"{name}:\n  upgraded: {left.get(name)}\n  fresh:    {right.get(name)}"
        for name in sorted(left.keys() | right.keys())
        if left.get(name) != right.get(name)
    ]


def install_released(url: str) -> None:
    """What `profilesync migrate` of the release did: the bookkeeping table, then each file once."""
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(auth_stub().encode())
        conn.execute(
            "CREATE SCHEMA IF NOT EXISTS profile_sync;"
            "CREATE TABLE IF NOT EXISTS profile_sync.schema_migrations ("
            " version text PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        for path in sorted(RELEASED.glob("*.sql")):
            with conn.transaction():
                conn.execute(path.read_text(encoding="utf-8").encode())
                conn.execute(
                    "INSERT INTO profile_sync.schema_migrations (version, name) VALUES (%s, %s)",
                    (path.name[:4], path.stem),
                )


def rows(conn: psycopg.Connection[Any], table: str) -> list[tuple[Any, ...]]:
    return conn.execute(f"SELECT * FROM {table} ORDER BY 1").fetchall()  # noqa: S608 (a constant name)


@pytest.fixture
def released_install(database_factory: DatabaseFactory) -> Any:
    name = f"profilesync_released_{uuid.uuid4().hex[:12]}"
    url = create_owned_database(database_factory.admin_url, name)
    install_released(as_role(url, OWNER))
    yield as_role(url, OWNER)
    database_factory.drop(url)


def test_the_released_migrations_are_kept_as_released() -> None:
    assert [p.name for p in sorted(RELEASED.glob("*.sql"))] == [
        "0001_tables.sql",
        "0002_outbox.sql",
        "0003_readiness.sql",
        "0004_security.sql",
        "0005_hardening.sql",
        "0006_client_guarantee.sql",
        "0007_lifecycle.sql",
        "0008_signup_path.sql",
        "0009_signup_ages.sql",
    ]
    assert "CREATE OR REPLACE FUNCTION profile_sync.on_auth_user_created()" in (
        RELEASED / "0008_signup_path.sql"
    ).read_text(encoding="utf-8")


def test_an_install_upgraded_from_every_release_equals_a_fresh_one_and_keeps_its_data(
    released_install: str, conn: psycopg.Connection[Any]
) -> None:
    with psycopg.connect(released_install, autocommit=True) as old:
        profiled = [signup(old, kind) for kind in ("email", "google", "github")]
        old.execute("SELECT profile_sync.create_profiles(%s)", (profiled,))
        old.execute(
            "INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, 'hi')", (profiled[0],)
        )
        pending = [signup(old, kind) for kind in ("email", "phone", "anonymous")]
        old.execute(
            "UPDATE profile_sync.signup_events SET failed_at = now(), last_error = 'x' WHERE user_id = %s",
            (pending[0],),
        )
        old.execute(
            'UPDATE auth.users SET raw_user_meta_data = \'{"name": "Later"}\' WHERE id = %s', (profiled[1],)
        )
        before = {
            t: rows(old, t)
            for t in ("public.user_profiles", "profile_sync.signup_events", "public.chat_conversations")
        }

        done = migrate(old)
        unreleased = [m.name for m in available() if m.version > "0009"]  # released: 0001-0009
        assert done == Migrated(unreleased, [d.name for d in render(Context())])
        assert migrate(old) == Migrated([], [])  # and nothing more to do

        assert {t: rows(old, t) for t in before} == before  # no profile changed, no event lost
        assert differences(catalog(old), catalog(conn)) == []
        assert state(old) == state(conn)

        # the pipeline goes on: the pending and changed users get their profiles, new signups are recorded
        old.execute("SELECT * FROM profile_sync.sync_profiles(%s)", ([*pending[1:], profiled[1]],))
        assert count(old, "SELECT count(*) FROM public.user_profiles") == 5
        name = "SELECT full_name FROM public.user_profiles WHERE id = %s"
        assert old.execute(name, (profiled[1],)).fetchone() is not None
        user = signup(old)
        assert count(old, "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s", (user,)) == 1


def test_migrate_applies_the_definitions_again_when_the_recorded_ones_differ(
    conn: psycopg.Connection[Any],
) -> None:
    conn.execute("UPDATE profile_sync.definitions SET checksum = 'older' WHERE name = '03_auth_users'")
    assert migrate(conn).definitions == [d.name for d in render(Context())]
    assert migrate(conn) == Migrated([], [])
