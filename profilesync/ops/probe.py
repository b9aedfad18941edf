"""`profilesync doctor --probe`: one signup through the real path, rolled back.

In one transaction that is always rolled back: a test user is inserted into auth.users the way Supabase's
auth server does it (as `supabase_auth_admin` where the doctor's role may act as it, `search_path = auth`, an
INSERT with `role = ''` then an UPDATE), the outbox must hold its event, and `public.ensure_profile()` called
the way PostgREST calls it for that user (role `authenticated`, the JWT claims) must return its profile: the
path a client's first insert relies on. The rollback leaves no row, and a NOTIFY of a rolled-back transaction
is never delivered; only sequences advance (an outbox id is skipped, as for any failed signup).

Run it in CI against every environment after `supabase db push`: preview branches and `supabase db diff/pull`
are known to drop triggers on auth tables.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

# GoTrue's signup: an INSERT through its ORM (unqualified table, search_path = auth), then role and metadata.
_AS_AUTH_SERVER = """
SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'supabase_auth_admin')
            THEN pg_catalog.pg_has_role('supabase_auth_admin', 'MEMBER') ELSE false END
"""
_INSERT = """
INSERT INTO "users" (instance_id, id, aud, role, email, encrypted_password, raw_app_meta_data,
                     raw_user_meta_data, is_sso_user, is_anonymous, created_at, updated_at)
VALUES ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', '', %s, '', %s, %s, false, false,
        now(), now())
"""
_UPDATE = """
UPDATE "users" AS users SET role = 'authenticated', raw_user_meta_data = %s, updated_at = now()
WHERE users.id = %s
"""
_RECORDED = "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s"
_AS_CLIENT = """
SELECT pg_catalog.set_config('role', 'authenticated', true),
       pg_catalog.set_config('request.jwt.claims', %s, true),
       pg_catalog.set_config('search_path', 'public, extensions', true)
"""
_ENSURE = "SELECT count(*) FROM public.ensure_profile()"


class _Broken(Exception):
    """A step of the signup path failed: the message says which and why."""


def signup_path(conn: psycopg.Connection[Any]) -> list[str]:
    """Run the rolled-back signup on `conn` (inside the caller's transaction); the problems found, [] if none.

    Operational errors (a lock or statement timeout of the doctor's bounds, a lost connection) propagate.
    """
    warnings: list[str] = []

    def keep_warning(diagnostic: psycopg.errors.Diagnostic) -> None:
        if diagnostic.severity_nonlocalized == "WARNING" and diagnostic.message_primary:
            warnings.append(diagnostic.message_primary)

    conn.add_notice_handler(keep_warning)
    try:
        with conn.transaction(force_rollback=True):
            _walk(conn, uuid.uuid4(), warnings)
    except _Broken as exc:
        return [str(exc)]
    finally:
        conn.remove_notice_handler(keep_warning)
    return []


def _walk(conn: psycopg.Connection[Any], user_id: uuid.UUID, warnings: list[str]) -> None:
    email = f"profilesync-probe-{user_id.hex[:12]}@probe.invalid"
    row = conn.execute(_AS_AUTH_SERVER).fetchone()
    as_auth_server = bool(row and row[0])
    with _step("the auth server's signup failed"):
        if as_auth_server:
            conn.execute("SET LOCAL ROLE supabase_auth_admin")
        conn.execute("SELECT pg_catalog.set_config('search_path', 'auth', true)")
        conn.execute(
            _INSERT, (user_id, email, Jsonb({"provider": "email", "providers": ["email"]}), Jsonb({}))
        )
        identity = {"sub": str(user_id), "email": email, "email_verified": False, "phone_verified": False}
        conn.execute(_UPDATE, (Jsonb(identity), user_id))
        conn.execute("RESET ROLE")
        conn.execute("RESET search_path")
    row = conn.execute(_RECORDED, (user_id,)).fetchone()
    if not row or row[0] != 1:
        why = f" (the trigger warned: {warnings[-1]})" if warnings else ""
        raise _Broken(
            f"a test signup left {row[0] if row else 0} outbox events, expected 1: the trigger on auth.users "
            f"is missing, disabled or failing{why} (run profilesync migrate)"
        )
    with _step("a client's ensure_profile() failed for the test user"):
        claims = {"sub": str(user_id), "role": "authenticated", "aud": "authenticated", "email": email}
        conn.execute(_AS_CLIENT, (json.dumps(claims),))
        row = conn.execute(_ENSURE).fetchone()
        if not row or row[0] != 1:
            raise _Broken("a client's ensure_profile() returned no profile for the test user")


@contextmanager
def _step(what: str) -> Iterator[None]:
    """A database error of one step as one line naming the step; operational errors (the doctor's lock and
    statement timeouts, a lost connection) propagate as themselves."""
    try:
        yield
    except psycopg.OperationalError:
        raise
    except psycopg.Error as exc:
        detail = (exc.diag.message_primary or str(exc)).strip().splitlines()[0]
        raise _Broken(f"{what}: {detail} (SQLSTATE {exc.sqlstate}; run profilesync migrate)") from exc
