-- A cheaper signup path and polling that stays cheap under long-running transactions.
--
-- What every signup pays (measured by the bench's signup_cost ablations, `python -m bench --only signup_cost`):
--   * one index fewer: the pending partial index is gone. The publisher reads pending events through the
--     primary key from the last id it claimed (`id > cursor AND enqueued_at IS NULL`), so a snapshot held
--     open for a long time (which keeps every retired event's index entry alive) no longer makes each poll
--     walk all of them: only those above the cursor. A full sweep from id 0 still runs on the safety timer
--     (events whose signup committed after the cursor had passed their id).
--   * the idle check is one simple expression (a sequence's value) instead of a query on
--     profile_sync.publishers (sql/definitions/03_auth_users.sql).
-- The user_id index stays: sync_profiles retires events by user, and sweepers/probes look users up in the
-- outbox.

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

-- How many publishers wait on LISTEN right now, for the auth.users triggers (0: none, so no NOTIFY). Derived
-- from profile_sync.publishers by announce_publisher.
CREATE SEQUENCE profile_sync.idle_publishers AS integer MINVALUE 0 START 0;
SELECT pg_catalog.setval(
  'profile_sync.idle_publishers', (SELECT count(*) FROM profile_sync.publishers p WHERE p.idle), true
);
