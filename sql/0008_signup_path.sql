-- A cheaper signup path and polling that stays cheap under long-running transactions.
--
-- What every signup pays (measured by the bench's signup_cost ablations, `python -m bench --only signup_cost`):
--   * one index fewer: the pending partial index is gone. The publisher reads pending events through the
--     primary key from the last id it claimed (`id > cursor AND enqueued_at IS NULL`), so a snapshot held
--     open for a long time (which keeps every retired event's index entry alive) no longer makes each poll
--     walk all of them: only those above the cursor. A full sweep from id 0 still runs on the safety timer
--     (events whose signup committed after the cursor had passed their id).
--   * the idle check is one simple expression (a sequence's value) instead of a query on
--     profile_sync.publishers: PL/pgSQL evaluates it without starting an executor.
-- The user_id index stays: profile_sync.create_profiles retires events by user, and sweepers/probes look users
-- up in the outbox.

DROP INDEX profile_sync.signup_events_pending_idx;

-- Stale claimed events for redelivery, oldest claim first, straight from an index (no scan and sort of the
-- whole outbox under a backlog). Only claimed rows have an entry: the signup's INSERT adds none.
CREATE INDEX signup_events_enqueued_idx ON profile_sync.signup_events (enqueued_at)
  WHERE enqueued_at IS NOT NULL AND failed_at IS NULL;

-- A queue table: its rows live for milliseconds. Vacuum it by dead-row count, not by a fraction of a table
-- whose size swings between empty and a backlog.
ALTER TABLE profile_sync.signup_events SET (
  autovacuum_vacuum_scale_factor = 0,
  autovacuum_vacuum_threshold = 5000,
  autovacuum_vacuum_insert_scale_factor = 0,
  autovacuum_vacuum_insert_threshold = 5000
);

-- How many publishers wait on LISTEN right now, for the signup trigger (0: none, so no NOTIFY). Derived from
-- profile_sync.publishers by announce_publisher. setval is not transactional: the value is visible at once, to
-- signups already in flight too.
CREATE SEQUENCE profile_sync.idle_publishers AS integer MINVALUE 0 START 0;
SELECT pg_catalog.setval(
  'profile_sync.idle_publishers', (SELECT count(*) FROM profile_sync.publishers p WHERE p.idle), true
);

-- A publisher records whether it is idle (or, after registering/unregistering, just refreshes the count).
-- The table lock serialises publishers announcing at the same time, so the last count written is a count of
-- committed states, never a stale one.
CREATE FUNCTION profile_sync.announce_publisher(p_backend_pid integer, p_idle boolean) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  LOCK TABLE profile_sync.publishers IN SHARE ROW EXCLUSIVE MODE;
  UPDATE profile_sync.publishers SET idle = p_idle, updated_at = pg_catalog.now()
  WHERE backend_pid = p_backend_pid;
  PERFORM pg_catalog.setval(
    'profile_sync.idle_publishers', (SELECT count(*) FROM profile_sync.publishers p WHERE p.idle), true
  );
END
$$;

REVOKE ALL ON FUNCTION profile_sync.announce_publisher(integer, boolean) FROM PUBLIC;
REVOKE ALL ON SEQUENCE profile_sync.idle_publishers FROM PUBLIC;
GRANT EXECUTE ON FUNCTION profile_sync.announce_publisher(integer, boolean) TO profilesync_publisher;

-- The same trigger contract as 0002 (never block or fail a signup: a lock on the outbox is waited for at most
-- lock_timeout, any error is a warning and the sweep/backfill records the user later), cheaper per signup.
-- CREATE OR REPLACE drops the function's SET options unless repeated: both are here.
CREATE OR REPLACE FUNCTION profile_sync.on_auth_user_created() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET lock_timeout = '150ms'
AS $$
BEGIN
  BEGIN
    INSERT INTO profile_sync.signup_events (user_id) VALUES (NEW.id);
    IF pg_catalog.pg_sequence_last_value('profile_sync.idle_publishers'::pg_catalog.regclass) > 0 THEN
      PERFORM pg_catalog.pg_notify('profile_sync_signup', NEW.id::text);
    END IF;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'profile_sync: signup % not recorded (%: %)', NEW.id, SQLSTATE, SQLERRM;
  END;
  RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION profile_sync.on_auth_user_created() FROM PUBLIC;

-- The update trigger (0007) wakes the publisher the same way, with the same cheaper idle check; its body is
-- otherwise 0007's (see there), SET options repeated.
CREATE OR REPLACE FUNCTION profile_sync.on_auth_user_updated() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET lock_timeout = '150ms'
AS $$
BEGIN
  BEGIN
    IF NOT EXISTS (
      SELECT 1 FROM profile_sync.signup_events e
      WHERE e.user_id = NEW.id AND e.xact_id = pg_catalog.pg_current_xact_id()
    ) THEN
      INSERT INTO profile_sync.signup_events (user_id) VALUES (NEW.id);
      IF pg_catalog.pg_sequence_last_value('profile_sync.idle_publishers'::pg_catalog.regclass) > 0 THEN
        PERFORM pg_catalog.pg_notify('profile_sync_signup', NEW.id::text);
      END IF;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'profile_sync: change of user % not recorded (%: %)', NEW.id, SQLSTATE, SQLERRM;
  END;
  RETURN NULL;
END
$$;

REVOKE ALL ON FUNCTION profile_sync.on_auth_user_updated() FROM PUBLIC;

-- Supabase's API roles get nothing of ours, whatever default privileges the project has (as in 0004).
DO $$
DECLARE
  grantee text;
BEGIN
  FOR grantee IN
    SELECT pg_catalog.quote_ident(rolname) FROM pg_catalog.pg_roles WHERE rolname IN ('anon', 'authenticated')
  LOOP
    EXECUTE pg_catalog.format(
      'REVOKE ALL ON FUNCTION profile_sync.announce_publisher(integer, boolean) FROM %s', grantee);
    EXECUTE pg_catalog.format('REVOKE ALL ON SEQUENCE profile_sync.idle_publishers FROM %s', grantee);
  END LOOP;
END $$;
