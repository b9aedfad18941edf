"""Do the objects our migrations install actually exist? (`profilesync doctor`'s `objects` check)

The bookkeeping rows in profile_sync.schema_migrations say what was applied, not what is still there: a
hand-run DROP FUNCTION, a restore without our schema, or a REVOKE breaks the pipeline while every migration
reads as applied. This reads the catalog instead. The signup trigger on auth.users has its own check
(`trigger`); a migration that adds an object the pipeline relies on adds it here.
"""

from __future__ import annotations

from typing import Any

import psycopg

WORKER, PUBLISHER = "profilesync_worker", "profilesync_publisher"

TABLES = (
    "public.user_profiles",
    "public.chat_conversations",
    "profile_sync.signup_events",
    "profile_sync.publishers",
    "profile_sync.profile_waiters",
)
FUNCTIONS = (
    "profile_sync.on_auth_user_created()",
    "profile_sync.clean_text(jsonb, integer)",
    "profile_sync.clean_url(jsonb)",
    "profile_sync.create_profiles(uuid[])",
    "profile_sync.on_user_profiles_inserted()",
    "profile_sync.profile_state(uuid)",
    "profile_sync.readiness_class(uuid)",
    "profile_sync.watch_profile(uuid, integer, uuid)",
    "profile_sync.recheck_profile(uuid, integer)",
    "profile_sync.unwatch_profiles(uuid[])",
    "profile_sync.forget_dead_profile_waiters()",
    "profile_sync.record_unrecorded_users(uuid, integer)",
    "profile_sync.profile_gap()",
    "profile_sync.check_profile_update()",
    "profile_sync.ensure_conversation_profile()",
    "public.ensure_profile()",
    "profile_sync.on_auth_user_updated()",
    "profile_sync.apply_metadata_policy(text, text, text)",
    "profile_sync.sync_profiles(uuid[], text)",
    "profile_sync.announce_publisher(integer, boolean)",
    "profile_sync.signup_ages(uuid[])",
)
# (table, trigger) other than the signup trigger: enabled (origin or always).
TRIGGERS = (
    ("public.user_profiles", "profile_sync_on_user_profiles_inserted"),
    ("public.user_profiles", "profile_sync_check_profile_update"),
    ("public.chat_conversations", "profile_sync_ensure_profile"),
    ("public.chat_conversations", "profile_sync_ensure_profile_service"),
    ("auth.users", "profile_sync_on_auth_user_updated"),
)
# (role, object kind, object, privilege): what the least-privilege roles need to run (sql/0004_security.sql
# and the grants of later migrations).
GRANTS = (
    (WORKER, "schema", "profile_sync", "USAGE"),
    (WORKER, "function", "profile_sync.create_profiles(uuid[])", "EXECUTE"),
    (WORKER, "function", "profile_sync.sync_profiles(uuid[], text)", "EXECUTE"),
    (WORKER, "function", "profile_sync.signup_ages(uuid[])", "EXECUTE"),
    (WORKER, "column", "profile_sync.signup_events.user_id", "SELECT"),
    (WORKER, "column", "profile_sync.signup_events.failed_at", "UPDATE"),
    (PUBLISHER, "schema", "profile_sync", "USAGE"),
    (PUBLISHER, "column", "profile_sync.signup_events.id", "SELECT"),
    (PUBLISHER, "column", "profile_sync.signup_events.enqueued_at", "UPDATE"),
    (PUBLISHER, "table", "profile_sync.publishers", "INSERT"),
    (PUBLISHER, "table", "profile_sync.publishers", "UPDATE"),
    (PUBLISHER, "table", "profile_sync.publishers", "DELETE"),
    (PUBLISHER, "function", "profile_sync.announce_publisher(integer, boolean)", "EXECUTE"),
    (PUBLISHER, "function", "profile_sync.record_unrecorded_users(uuid, integer)", "EXECUTE"),
    (PUBLISHER, "function", "profile_sync.profile_gap()", "EXECUTE"),
)
# Supabase's API roles must not execute anything of ours.
API_ROLES = ("anon", "authenticated")

_MISSING = """
SELECT 'table ' || t FROM unnest(%(tables)s::text[]) t WHERE pg_catalog.to_regclass(t) IS NULL
UNION ALL
SELECT 'function ' || f FROM unnest(%(functions)s::text[]) f WHERE pg_catalog.to_regprocedure(f) IS NULL
UNION ALL
SELECT 'trigger ' || x.name || ' on ' || x.rel || ' (missing or disabled)'
FROM unnest(%(trigger_tables)s::text[], %(trigger_names)s::text[]) AS x (rel, name)
WHERE NOT EXISTS (
  SELECT 1 FROM pg_catalog.pg_trigger t
  WHERE t.tgrelid = pg_catalog.to_regclass(x.rel) AND t.tgname = x.name AND t.tgenabled IN ('O', 'A')
)
UNION ALL
SELECT 'role ' || r FROM unnest(%(roles)s::text[]) r WHERE pg_catalog.to_regrole(r) IS NULL
"""
_GRANT_HELD = {
    "schema": "pg_catalog.has_schema_privilege(%s, %s, %s)",
    "function": "pg_catalog.has_function_privilege(%s, %s, %s)",
    "table": "pg_catalog.has_table_privilege(%s, %s, %s)",
}
_API_EXECUTABLE = """
SELECT p.oid::regprocedure::text || ' executable by ' || r
FROM pg_catalog.pg_proc p, unnest(%(roles)s::text[]) r
WHERE p.pronamespace = pg_catalog.to_regnamespace('profile_sync')
  AND pg_catalog.to_regrole(r) IS NOT NULL
  AND pg_catalog.has_function_privilege(r, p.oid, 'EXECUTE')
"""


def missing(conn: psycopg.Connection[Any]) -> list[str]:
    """What is missing or wrong, one short line each; empty when everything is in place."""
    found = [
        row[0]
        for row in conn.execute(
            _MISSING,
            {
                "tables": list(TABLES),
                "functions": list(FUNCTIONS),
                "trigger_tables": [rel for rel, _ in TRIGGERS],
                "trigger_names": [name for _, name in TRIGGERS],
                "roles": [WORKER, PUBLISHER],
            },
        )
    ]
    if found:
        return found  # grants on missing objects or roles cannot be read
    for role, kind, name, privilege in GRANTS:
        if not _holds(conn, role, kind, name, privilege):
            found.append(f"grant {privilege} on {name} to {role}")
    found.extend(row[0] for row in conn.execute(_API_EXECUTABLE, {"roles": list(API_ROLES)}))
    return found


def _holds(conn: psycopg.Connection[Any], role: str, kind: str, name: str, privilege: str) -> bool:
    if kind == "column":
        table, column = name.rsplit(".", 1)
        query = "SELECT pg_catalog.has_column_privilege(%s, %s, %s, %s)"
        row = conn.execute(query, (role, table, column, privilege)).fetchone()
    else:
        row = conn.execute(f"SELECT {_GRANT_HELD[kind]}", (role, name, privilege)).fetchone()
    return bool(row and row[0])
