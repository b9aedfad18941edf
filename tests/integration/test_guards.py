"""Every foreign key that references the profile table is guarded for Supabase's client roles, whatever its
schema, table and column name: a client's insert right after a GoTrue signup never gets 23503."""

from __future__ import annotations

import uuid
from typing import Any

import psycopg
import pytest
from psycopg import errors

from profilesync.config import Settings
from profilesync.definitions import guards
from profilesync.migrate import Migrated, migrate
from profilesync.ops.doctor import Thresholds, evaluate, gather
from tests.harness import act_as, count, gotrue_signup

Conn = psycopg.Connection[Any]

# An app's own tables, as starters make them: other schemas, other column names, one table with two.
APP_TABLES = """
CREATE SCHEMA blog;
CREATE TABLE blog.posts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  author_id uuid NOT NULL REFERENCES public.user_profiles (id),
  editor_id uuid REFERENCES public.user_profiles (id) ON DELETE SET NULL,
  body text
);
CREATE SCHEMA "Workspace";
CREATE TABLE "Workspace".channels (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  created_by uuid NOT NULL REFERENCES public.user_profiles (id) ON DELETE CASCADE,
  name text
);
CREATE TABLE public.notes (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  owner uuid NOT NULL REFERENCES public.user_profiles (id) ON DELETE CASCADE,
  body text
);
GRANT USAGE ON SCHEMA blog, "Workspace" TO authenticated, service_role;
GRANT SELECT, INSERT, UPDATE ON blog.posts, "Workspace".channels, public.notes TO authenticated, service_role;
"""
REFERENCES = [
    '"Workspace".channels.created_by',
    "blog.posts.author_id",
    "blog.posts.editor_id",
    "public.chat_conversations.user_id",
    "public.notes.owner",
]
INSERTS = [
    "INSERT INTO blog.posts (author_id, body) VALUES (%s, 'first post')",
    "INSERT INTO \"Workspace\".channels (created_by, name) VALUES (%s, 'general')",
    "INSERT INTO public.notes (owner, body) VALUES (%s, 'todo')",
]


def _doctor_guards(settings: Settings) -> tuple[str, str]:
    (check,) = evaluate(gather(settings, ["guards"]), Thresholds(), ["guards"])
    return check.status, check.detail


def _first_insert(
    conn: Conn, role: str, statement: str, user: uuid.UUID, caller: uuid.UUID | None = None
) -> None:
    """One PostgREST request: its own transaction, the client role and the caller's JWT claims."""
    with conn.transaction():
        act_as(conn, role, caller or user)
        conn.execute(statement, (user,))


def test_referencing_columns_of_any_name_and_schema_are_guarded_at_migrate(
    conn: Conn, settings: Settings
) -> None:
    conn.execute(APP_TABLES)
    found = guards(conn)
    assert found is not None
    assert found.references == REFERENCES
    assert found.unguarded == REFERENCES[:3] + REFERENCES[4:]  # the seed's conversations were guarded already
    assert _doctor_guards(settings)[0] == "fail"

    assert migrate(conn).definitions  # the unguarded columns make it apply the definitions again
    assert guards(conn) == type(found)(REFERENCES, [], 0)
    assert _doctor_guards(settings) == (
        "ok",
        "5 column(s) referencing the profile table, each guarded for clients",
    )
    assert migrate(conn) == Migrated([], [])

    for kind in ("email", "google", "github", "phone", "anonymous"):  # no worker runs: the guard creates them
        for statement in INSERTS:
            user = gotrue_signup(conn, kind)
            _first_insert(conn, "authenticated", statement, user)
            assert count(conn, "SELECT count(*) FROM public.user_profiles WHERE id = %s", (user,)) == 1
    server_side = gotrue_signup(conn, "google")  # service_role (a server with the service key): any user
    _first_insert(conn, "service_role", "UPDATE blog.posts SET editor_id = %s", server_side)
    assert count(conn, "SELECT count(*) FROM public.user_profiles WHERE id = %s", (server_side,)) == 1


def test_a_signed_in_user_never_gets_another_users_profile_created(conn: Conn) -> None:
    conn.execute(APP_TABLES)
    migrate(conn)
    me, other = gotrue_signup(conn), gotrue_signup(conn)
    with pytest.raises(errors.ForeignKeyViolation):  # no policy here: the foreign key decides
        _first_insert(conn, "authenticated", INSERTS[0], other, caller=me)
    assert count(conn, "SELECT count(*) FROM public.user_profiles WHERE id = %s", (other,)) == 0


def test_a_table_added_after_migrate_fails_doctor_until_migrate_guards_it(
    conn: Conn, settings: Settings
) -> None:
    conn.execute(
        """
        CREATE SCHEMA forum;
        CREATE TABLE forum.replies (id bigserial PRIMARY KEY,
                                    written_by uuid NOT NULL REFERENCES public.user_profiles (id), body text);
        GRANT USAGE ON SCHEMA forum TO authenticated;
        GRANT INSERT, SELECT ON forum.replies TO authenticated;
        GRANT USAGE ON SEQUENCE forum.replies_id_seq TO authenticated;
        """
    )
    status, detail = _doctor_guards(settings)
    assert status == "fail"
    assert detail.startswith("not guarded: forum.replies.written_by:") and detail.endswith(
        "(run profilesync migrate)"
    )
    insert = "INSERT INTO forum.replies (written_by, body) VALUES (%s, 'hi')"
    with pytest.raises(errors.ForeignKeyViolation):  # what the guard exists to prevent
        _first_insert(conn, "authenticated", insert, gotrue_signup(conn))

    migrate(conn)
    assert _doctor_guards(settings)[0] == "ok"
    _first_insert(conn, "authenticated", insert, gotrue_signup(conn))


def test_a_guard_whose_foreign_key_is_gone_is_removed_at_migrate(conn: Conn) -> None:
    conn.execute(APP_TABLES)
    migrate(conn)
    conn.execute("ALTER TABLE public.notes DROP CONSTRAINT notes_owner_fkey")
    found = guards(conn)
    assert found is not None and found.stale == 1
    assert migrate(conn).definitions
    found = guards(conn)
    assert found is not None and found.stale == 0 and "public.notes.owner" not in found.references
    triggers = "SELECT count(*) FROM pg_trigger WHERE tgrelid = 'public.notes'::regclass AND NOT tgisinternal"
    assert count(conn, triggers) == 0


def test_a_profile_key_without_on_delete_cascade_is_advice(conn: Conn, settings: Settings) -> None:
    def delete_cascade() -> tuple[str, str]:
        (check,) = evaluate(gather(settings, ["delete_cascade"]), Thresholds(), ["delete_cascade"])
        return check.status, check.detail

    assert delete_cascade()[0] == "ok"
    conn.execute(
        "ALTER TABLE public.user_profiles DROP CONSTRAINT user_profiles_id_fkey,"
        " ADD CONSTRAINT user_profiles_id_fkey FOREIGN KEY (id) REFERENCES auth.users (id)"
    )
    status, detail = delete_cascade()
    assert status == "warn"
    assert "without ON DELETE CASCADE: deleting a user" in detail and "23503" in detail
