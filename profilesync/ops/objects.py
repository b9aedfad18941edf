"""Do the objects profilesync installs actually exist? (`profilesync doctor`'s `objects` check)

The bookkeeping rows in profile_sync.schema_migrations say what was applied, not what is still there: a
hand-run DROP FUNCTION or a restore without our schema breaks the pipeline while every migration reads as
applied. This reads the catalog instead, for the tables the migrations create and the functions and triggers
the definitions create (read from their rendered text: profilesync.definitions.inventory), and checks that
Supabase's API roles execute nothing of ours. Whether each object still matches its definition (settings,
body, privileges, a disabled trigger) is the `definitions` check's business. The signup trigger on auth.users
has its own check (`trigger`).
"""

from __future__ import annotations

import re
from typing import Any

import psycopg

from profilesync.definitions import Context, inventory, render
from profilesync.migrate import available

WORKER, PUBLISHER = "profilesync_worker", "profilesync_publisher"
SIGNUP_TRIGGER = "profile_sync_on_auth_user_created"
# Supabase's API roles must not execute anything of ours.
API_ROLES = ("anon", "authenticated")

_CREATE_TABLE = re.compile(r"^CREATE TABLE (?:IF NOT EXISTS )?([\w.]+)", re.MULTILINE)
_DROP_TABLE = re.compile(r"^DROP TABLE (?:IF EXISTS )?([\w.]+)", re.MULTILINE)

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
_API_EXECUTABLE = """
SELECT p.oid::regprocedure::text || ' executable by ' || r
FROM pg_catalog.pg_proc p, unnest(%(roles)s::text[]) r
WHERE p.pronamespace = pg_catalog.to_regnamespace('profile_sync')
  AND pg_catalog.to_regrole(r) IS NOT NULL
  AND pg_catalog.has_function_privilege(r, p.oid, 'EXECUTE')
"""


def tables() -> tuple[str, ...]:
    """The tables the migrations create and no later one drops, in order."""
    texts = [migration.read() for migration in available()]
    dropped = {m.group(1) for text in texts for m in _DROP_TABLE.finditer(text)}
    created = (m.group(1) for text in texts for m in _CREATE_TABLE.finditer(text))
    return tuple(name for name in created if name not in dropped)


def missing(conn: psycopg.Connection[Any], context: Context) -> list[str]:
    """What is missing or wrong, one short line each; empty when everything is in place."""
    made = inventory(render(context))
    triggers = [(rel, name) for rel, name in made.triggers if name != SIGNUP_TRIGGER]  # its own check
    found = [
        row[0]
        for row in conn.execute(
            _MISSING,
            {
                "tables": list(tables()),
                "functions": list(made.functions),
                "trigger_tables": [rel for rel, _ in triggers],
                "trigger_names": [name for _, name in triggers],
                "roles": [WORKER, PUBLISHER],
            },
        )
    ]
    if found:
        return found  # privileges on missing objects or roles cannot be read
    found.extend(row[0] for row in conn.execute(_API_EXECUTABLE, {"roles": list(API_ROLES)}))
    return found
