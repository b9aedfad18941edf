-- Profile readiness that no profile insert ever queues for (sql/definitions/04_readiness.sql explains the
-- protocol): waiters register under an opaque random token, which is all a NOTIFY carries, and the lock-only
-- table is gone (inserts take a transaction-level advisory lock instead).

ALTER TABLE profile_sync.profile_waiters ADD COLUMN token uuid;
UPDATE profile_sync.profile_waiters SET token = pg_catalog.gen_random_uuid();
ALTER TABLE profile_sync.profile_waiters ALTER COLUMN token SET NOT NULL;
CREATE UNIQUE INDEX profile_waiters_token_idx ON profile_sync.profile_waiters (token);

-- The waiter functions take tokens instead of row ids: their old signatures go (the definitions create the
-- new ones), and with them the last user of the lock-only table.
DROP FUNCTION IF EXISTS profile_sync.watch_profile(uuid, integer, integer);
DROP FUNCTION IF EXISTS profile_sync.unwatch_profiles(bigint[]);
DROP TABLE profile_sync.readiness_barrier;
