"""`profilesync uninstall`: remove what `profilesync migrate` installed, keep the application's data.

Removed, in one transaction: the signup trigger on auth.users, our row level security policies (named
profile_sync_*), public.ensure_profile(), and schema profile_sync with everything in it (CASCADE: the outbox
and any pending signup events in it, the readiness trigger on user_profiles, the bookkeeping of applied
migrations). public.user_profiles and public.chat_conversations stay, rows included, unless drop_tables; their
row level security stays enabled, so without our policies Supabase's API roles see nothing until the project
adds its own.

Locks: auth.users is what every sign-in reads and every signup writes, so it is locked last, once every other
table the drops touch is held (one LOCK TABLE), and every lock wait is bounded by `lock_timeout`. Behind a
session that holds one of those tables (a report left idle in transaction), the transaction ends having
changed nothing and holding auth.users for no time at all; behind one that holds auth.users, sign-ins queue
behind the uninstall for at most `lock_timeout`. A few attempts, then one line naming the session in the way.

Then the roles profilesync_worker and profilesync_publisher, each on its own: roles belong to the whole
cluster, and another database of it may still grant them something. PostgreSQL then refuses DROP ROLE
(dependent objects) and the role is kept, with the reason.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC
from typing import Any

import psycopg
from psycopg import errors, sql

from profilesync.errors import ProfileSyncError
from profilesync.ops.objects import PUBLISHER, WORKER
from profilesync.ops.printable import printable

SIGNUP_TRIGGER = "profile_sync_on_auth_user_created"
ROLES = (WORKER, PUBLISHER)
TABLES = ("public.chat_conversations", "public.user_profiles")  # in dependency order

_POLICIES = r"""
SELECT c.oid::regclass::text, p.polname FROM pg_catalog.pg_policy p
JOIN pg_catalog.pg_class c ON c.oid = p.polrelid
WHERE p.polname LIKE 'profile\_sync\_%' ORDER BY 1, 2
"""
_PENDING_EVENTS = "SELECT count(*) FROM profile_sync.signup_events"
# Every relation the drops below lock, except auth.users: profile_sync's tables and views, the tables that
# carry our policies or a trigger running a profile_sync function (the application's guarded tables too),
# and with --drop-tables the profile and chat tables. profile_sync's own come last: while the lock waits for
# a reader of an application table, the signup trigger's outbox stays writable.
_TO_LOCK = r"""
SELECT c.relnamespace::regnamespace::text || '.' || pg_catalog.quote_ident(c.relname)
FROM pg_catalog.pg_class c
WHERE c.oid IS DISTINCT FROM pg_catalog.to_regclass('auth.users')
  AND ((c.relnamespace = pg_catalog.to_regnamespace('profile_sync') AND c.relkind IN ('r', 'p', 'v', 'm'))
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_proc f ON f.oid = t.tgfoid
                  WHERE t.tgrelid = c.oid AND f.pronamespace = pg_catalog.to_regnamespace('profile_sync'))
       OR EXISTS (SELECT 1 FROM pg_catalog.pg_policy p
                  WHERE p.polrelid = c.oid AND p.polname LIKE 'profile\_sync\_%%')
       OR c.oid IN (SELECT pg_catalog.to_regclass(t) FROM unnest(%(tables)s::text[]) t))
ORDER BY c.relnamespace = pg_catalog.to_regnamespace('profile_sync'), 1
"""
# The session holding a lock on one of these relations in the oldest open transaction: who is in the way.
_HOLDER = """
SELECT c.relnamespace::regnamespace::text || '.' || pg_catalog.quote_ident(c.relname),
       a.pid, a.application_name, a.state, a.xact_start, extract(epoch FROM now() - a.xact_start)::float8
FROM pg_catalog.pg_locks l
JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
JOIN pg_catalog.pg_class c ON c.oid = l.relation
WHERE l.locktype = 'relation' AND l.granted AND l.pid <> pg_catalog.pg_backend_pid()
  AND l.database = (SELECT oid FROM pg_catalog.pg_database WHERE datname = pg_catalog.current_database())
  AND l.relation = ANY(%s::regclass[])
ORDER BY a.xact_start NULLS LAST
LIMIT 1
"""


class UninstallBlockedError(ProfileSyncError):
    """uninstall changed nothing: it could not take its locks in time"""


class UninstallDeniedError(ProfileSyncError):
    """uninstall changed nothing: this role may not drop the signup trigger on auth.users (SQLSTATE 42501)"""


class _Busy(Exception):
    """A lock wait ran out (or deadlocked) on one of `relations`."""

    def __init__(self, relations: list[str]) -> None:
        super().__init__(", ".join(relations))
        self.relations = relations


@dataclass
class Uninstalled:
    """What was removed and what was kept (with why), one line each."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)


def uninstall(
    conn: psycopg.Connection[Any],
    *,
    drop_tables: bool = False,
    lock_timeout: float = 2.0,
    attempts: int = 3,
) -> Uninstalled:
    conn.autocommit = True
    for attempt in range(1, attempts + 1):
        result = Uninstalled()
        try:
            with conn.transaction():
                conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{lock_timeout}s",))
                _lock_all_but_auth_users(conn, drop_tables)
                _drop_database_objects(conn, result, drop_tables)
            break
        except _Busy as busy:
            if attempt == attempts:
                raise UninstallBlockedError(_blocked(conn, busy.relations, attempts, lock_timeout)) from None
            time.sleep(0.5 * attempt)  # the holder may be about to finish
    for role in ROLES:
        _drop_role(conn, role, result)
    return result


def _lock_all_but_auth_users(conn: psycopg.Connection[Any], drop_tables: bool) -> None:
    """Hold every relation the drops touch but auth.users: its lock comes last, and nothing waits after it."""
    tables = list(TABLES) if drop_tables else []
    relations = [row[0] for row in conn.execute(_TO_LOCK, {"tables": tables})]
    if relations:
        names = sql.SQL(", ").join(sql.SQL(name) for name in relations)  # schema.name, quoted as needed
        _bounded(conn, sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(names), relations)


def _bounded(conn: psycopg.Connection[Any], statement: sql.Composed, relations: list[str]) -> None:
    try:
        conn.execute(statement)
    except (errors.LockNotAvailable, errors.DeadlockDetected):
        raise _Busy(relations) from None


def _blocked(conn: psycopg.Connection[Any], relations: list[str], attempts: int, lock_timeout: float) -> str:
    tried = f"{attempts} attempts, each waiting {lock_timeout:g}s for a lock"
    row = conn.execute(_HOLDER, (relations,)).fetchone()
    if row is None:
        return (
            f"{', '.join(relations)} stayed locked through {tried}; that session ended: run uninstall again"
        )
    relation, pid, application, state, since, seconds = row
    opened = "" if since is None else f" since {since.astimezone(UTC):%H:%M:%S} UTC ({seconds:.0f}s)"
    who = f"pid {pid} (application {printable(application or '-')!r}, {state or 'state hidden'}{opened})"
    return (
        f"{relation} is held by {who} through {tried}; end that transaction (or SELECT "
        f"pg_terminate_backend({pid})) and run uninstall again"
    )


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
        drop = sql.SQL("DROP TRIGGER {} ON auth.users").format(sql.Identifier(SIGNUP_TRIGGER))
        try:
            _bounded(conn, drop, ["auth.users"])
        except errors.InsufficientPrivilege:
            raise UninstallDeniedError(
                "run it as the owner of auth.users, or on Supabase as postgres where supautils lets it drop "
                "triggers on auth tables (setting supautils.drop_trigger_grants)"
            ) from None
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
