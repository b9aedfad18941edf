"""signup_cost ablations: variants of our signup trigger and outbox, each applied to its own database on top
of the migrations, measured in the same interleaved rounds as the baselines (with the publisher flag off, as
in `ours_busy`). Each isolates one cost of the signup path; `pending_index_and_table_probe` puts back all
three costs sql/0008_signup_path.sql avoids.
"""

from __future__ import annotations

_INSERT = "INSERT INTO profile_sync.signup_events (user_id) VALUES (NEW.id);"
_SEQUENCE_PROBE = """
IF pg_catalog.pg_sequence_last_value('profile_sync.idle_publishers'::pg_catalog.regclass) > 0 THEN
  PERFORM pg_catalog.pg_notify('profile_sync_signup', NEW.id::text);
END IF;"""
_TABLE_PROBE = """
IF EXISTS (SELECT 1 FROM profile_sync.publishers p WHERE p.idle) THEN
  PERFORM pg_catalog.pg_notify('profile_sync_signup', NEW.id::text);
END IF;"""


def _guarded(body: str) -> str:
    return f"""BEGIN
  {body}
EXCEPTION WHEN OTHERS THEN
  RAISE WARNING 'profile_sync: signup % not recorded (%: %)', NEW.id, SQLSTATE, SQLERRM;
END;"""


def trigger_sql(body: str, options: str = "SET search_path = '' SET lock_timeout = '150ms'") -> str:
    """Replace the signup trigger's function with `body` (statements before RETURN NEW)."""
    return f"""
CREATE OR REPLACE FUNCTION profile_sync.on_auth_user_created() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER {options}
AS $$
BEGIN
  {body}
  RETURN NEW;
END
$$;
"""


_PENDING_INDEX = (
    "CREATE INDEX signup_events_pending_idx ON profile_sync.signup_events (id) WHERE enqueued_at IS NULL;\n"
)

# name -> setup SQL (our trigger as migrated is `ours_busy` itself).
ABLATIONS: dict[str, str] = {
    # The pending partial index, a query on profile_sync.publishers for the idle check, no lock_timeout.
    "pending_index_and_table_probe": _PENDING_INDEX
    + trigger_sql(_guarded(_INSERT + _TABLE_PROBE), "SET search_path = ''"),
    # One idea at a time, from our trigger as migrated:
    "with_pending_index": _PENDING_INDEX,
    "table_probe": trigger_sql(_guarded(_INSERT + _TABLE_PROBE)),
    "no_user_id_index": "DROP INDEX profile_sync.signup_events_user_id_idx;\n",
    "no_lock_timeout": trigger_sql(_guarded(_INSERT + _SEQUENCE_PROBE), "SET search_path = ''"),
    # Unsafe, for scale only: what the exception block (a subtransaction per signup) and the probe cost.
    "no_exception_block": trigger_sql(_INSERT + _SEQUENCE_PROBE),
    "insert_only": trigger_sql(_INSERT, "SET search_path = ''"),
}
