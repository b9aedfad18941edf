"""`profilesync uninstall`: remove what `profilesync migrate` installed, keep the application's data.

Removed, in one transaction: the signup trigger on auth.users, our row level security policies (named
profile_sync_*), public.ensure_profile(), and schema profile_sync with everything in it (CASCADE: the outbox
and any pending signup events in it, the readiness trigger on user_profiles, the bookkeeping of applied
migrations). public.user_profiles and public.chat_conversations stay, rows included, unless drop_tables; their
row level security stays enabled, so without our policies Supabase's API roles see nothing until the project
adds its own.

Then the roles profilesync_worker and profilesync_publisher, each on its own: roles belong to the whole
cluster, and another database of it may still grant them something. PostgreSQL then refuses DROP ROLE
(dependent objects) and the role is kept, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import errors, sql

from profilesync.ops.objects import PUBLISHER, WORKER

SIGNUP_TRIGGER = "profile_sync_on_auth_user_created"
ROLES = (WORKER, PUBLISHER)
TABLES = ("public.chat_conversations", "public.user_profiles")  # in dependency order

_POLICIES = r"""
SELECT c.oid::regclass::text, p.polname FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
WHERE p.polname LIKE 'profile\_sync\_%' ORDER BY 1, 2
"""
_PENDING_EVENTS = "SELECT count(*) FROM profile_sync.signup_events"


@dataclass
class Uninstalled:
    """What was removed and what was kept (with why), one line each."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def uninstall(conn: psycopg.Connection[Any], *, drop_tables: bool = False) -> Uninstalled:
    result = Uninstalled()
    conn.autocommit = True
    with conn.transaction():
        _drop_database_objects(conn, result, drop_tables)
    for role in ROLES:
        _drop_role(conn, role, result)
    return result


def _exists(conn: psycopg.Connection[Any], query: str, name: str) -> bool:
    row = conn.execute(query, (name,)).fetchone()
    return bool(row and row[0])


def _drop_database_objects(conn: psycopg.Connection[Any], result: Uninstalled, drop_tables: bool) -> None:
    if _exists(
        conn,
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger"
        " WHERE tgrelid = pg_catalog.to_regclass('auth.users') AND tgname = %s)",
        SIGNUP_TRIGGER,
    ):
        conn.execute(sql.SQL("DROP TRIGGER {} ON auth.users").format(sql.Identifier(SIGNUP_TRIGGER)))
        result.removed.append(f"trigger {SIGNUP_TRIGGER} on auth.users")
    for table, policy in conn.execute(_POLICIES).fetchall():
        conn.execute(sql.SQL("DROP POLICY {} ON {}").format(sql.Identifier(policy), sql.SQL(table)))
        result.removed.append(f"policy {policy} on {table}")
    if _exists(conn, "SELECT pg_catalog.to_regprocedure(%s) IS NOT NULL", "public.ensure_profile()"):
        conn.execute("DROP FUNCTION public.ensure_profile()")
        result.removed.append("function public.ensure_profile()")
    if _exists(conn, "SELECT pg_catalog.to_regnamespace(%s) IS NOT NULL", "profile_sync"):
        events = 0
        if _exists(conn, "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", "profile_sync.signup_events"):
            row = conn.execute(_PENDING_EVENTS).fetchone()
            events = int(row[0]) if row else 0
        conn.execute("DROP SCHEMA profile_sync CASCADE")
        note = f" ({events} signup event(s) without a profile discarded: backfill after reinstalling)"
        result.removed.append("schema profile_sync" + (note if events else ""))
    for table in TABLES:
        if not _exists(conn, "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", table):
            continue
        if drop_tables:
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.SQL(table)))
            result.removed.append(f"table {table}")
        else:
            result.kept.append(f"table {table} with its rows (--drop-tables removes it)")


def _drop_role(conn: psycopg.Connection[Any], role: str, result: Uninstalled) -> None:
    if not _exists(conn, "SELECT pg_catalog.to_regrole(%s) IS NOT NULL", role):
        return
    try:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    except errors.DependentObjectsStillExist as exc:
        detail = (exc.diag.message_detail or "").splitlines()
        why = detail[0] if detail else "other objects depend on it"
        result.kept.append(f"role {role}: still used in another database of the cluster ({why})")
    except errors.InsufficientPrivilege:
        result.kept.append(f"role {role}: this role may not drop it (an administrator runs DROP ROLE {role})")
    else:
        result.removed.append(f"role {role}")


def format_result(result: Uninstalled) -> str:
    lines = [f"removed {line}" for line in result.removed] or ["nothing of profilesync's was installed"]
    return "\n".join([*lines, *(f"kept {line}" for line in result.kept)])
