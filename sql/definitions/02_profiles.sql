-- Creating and syncing profiles: the one mapping from auth.users to the profile table, used by the worker
-- (sync_profiles), by every other path that creates a profile (create_profiles), and the workers' latency probe.
--
-- A soft-deleted user keeps no personal data in the profile, whatever the interleaving, and is treated as gone.
-- The invariant: a profile of a user whose auth.users.deleted_at is set holds no mapped value (the seed's
-- email, full_name, avatar_url) once the user's outbox is empty. Three parts keep it:
--   1. Whatever copies personal data into a profile reads the user's CURRENT row FOR SHARE and holds that lock
--      to its commit (sync_profiles, which the worker, the client guards, public.ensure_profile() and the
--      ChatService fallback all go through; check_profile_update for a direct UPDATE of the profile).
--   2. The scrub (sync_profiles for a soft-deleted user) retires only the events its own snapshot sees.
--   3. Whatever escaped both (data an app wrote itself, a profile restored from a backup) is found by the
--      publisher's sweeper (record_unrecorded_users), by `profilesync backfill`, and reported by doctor.
--
-- Why FOR SHARE and not FOR KEY SHARE. A row lock taken by a reader conflicts with an UPDATE according to
-- the UPDATE's own mode: FOR UPDATE when it changes a key column (one with a plain unique index), FOR NO KEY
-- UPDATE otherwise. GoTrue's soft delete sets deleted_at in the same UPDATE that obfuscates phone, which
-- Supabase's auth.users keeps unique (users_phone_key): a key update, which FOR KEY SHARE already blocks.
-- But an UPDATE setting deleted_at without changing a key column (an operator's or an admin tool's soft
-- delete, an auth schema without that constraint) takes FOR NO KEY UPDATE, which FOR KEY SHARE lets through:
-- then a profile copied from the live row could commit after the soft delete and after the scrub that
-- retired its event. FOR SHARE conflicts with every UPDATE of the row, so for any soft delete S:
--   * S in flight when the copy reads the row: the read waits for S and then sees S's row version (a locking
--     read in READ COMMITTED follows the update; under REPEATABLE READ it fails with 40001, to be retried):
--     deleted_at is set, nothing is copied;
--   * S arriving while a copy holds the lock: S waits for the copy's commit. S's event therefore commits
--     after the copied profile, and a scrub whose snapshot includes that event sees that profile and clears
--     it. A scrub whose snapshot predates the event leaves the event for the next job (part 2).
-- The price: a copy and a concurrent UPDATE of the same user (a login's last_sign_in_at) wait for each other
-- for the length of the shorter transaction (milliseconds), where FOR KEY SHARE let them pass.
--
-- Treated as gone (a soft-deleted user's JWT stays valid until it expires): public.ensure_profile() and the
-- client guards answer PT404 as for a deleted user, and an UPDATE cannot put name or avatar back.

-- PROFILESYNC_METADATA_POLICY for a field the metadata feeds (full_name, avatar_url) of an existing profile:
--   fill-null  fill the field while it is still NULL, never overwrite what the user edited (the default);
--   overwrite  the metadata's value wins whenever it has one (a field it lacks is kept, never cleared);
--   off        the metadata feeds a profile only when it is created.
CREATE OR REPLACE FUNCTION profile_sync.apply_metadata_policy(policy text, current_value text, metadata_value text)
RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT CASE policy
    WHEN 'fill-null' THEN coalesce(current_value, metadata_value)
    WHEN 'overwrite' THEN coalesce(metadata_value, current_value)
    ELSE current_value
  END
$$;

-- The mapped columns an error of an INSERT/UPDATE on the profile table points at: the NOT NULL column it
-- names; else the columns of the constraint or unique index it names; else (a value too long for a varchar,
-- a domain's check, an expression index) every mapped column. Only mapped columns: a constraint on the app's
-- other columns is not ours to work around.
CREATE OR REPLACE FUNCTION profile_sync.rejected_columns(
  p_table regclass, p_constraint text, p_column text, p_mapped text[]
) RETURNS text[]
LANGUAGE sql STABLE
SET search_path = ''
AS $$
  WITH named AS (
    SELECT a.attname::text AS name
    FROM pg_catalog.pg_constraint c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
    WHERE c.conrelid = p_table AND c.conname = p_constraint
    UNION
    SELECT a.attname::text
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
    WHERE i.indrelid = p_table AND x.relname = p_constraint AND i.indexprs IS NULL
  ), known AS (
    SELECT EXISTS (
      SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conrelid = p_table AND c.conname = p_constraint
      UNION ALL
      SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid
      WHERE i.indrelid = p_table AND x.relname = p_constraint AND i.indexprs IS NULL
    ) AS found
  )
  SELECT CASE
    WHEN coalesce(p_column, '') <> '' THEN ARRAY(SELECT m FROM pg_catalog.unnest(p_mapped) m WHERE m = p_column)
    WHEN (SELECT found FROM known) THEN
      ARRAY(SELECT m FROM pg_catalog.unnest(p_mapped) m WHERE m IN (SELECT n.name FROM named n))
    ELSE p_mapped
  END
$$;

-- Record and report values dropped from one user's profile: a row per column here, and a WARNING per column
-- (server log; the worker and chat service count and log it) with SQLSTATE PS001, the column in COLUMN and
-- the user id in DETAIL. Never the value: it is the user's data.
CREATE OR REPLACE FUNCTION profile_sync.report_dropped(p_user_id uuid, p_columns text[], p_reason text) RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
  dropped_column text;
BEGIN
  FOREACH dropped_column IN ARRAY p_columns LOOP
    INSERT INTO profile_sync.dropped_values (user_id, column_name, reason)
    VALUES (p_user_id, dropped_column, p_reason);
    RAISE WARNING 'profile_sync: profile value of column % dropped for user % (rejected by %)',
      dropped_column, p_user_id, p_reason
      USING ERRCODE = 'PS001', COLUMN = dropped_column, DETAIL = p_user_id::text;
  END LOOP;
END
$$;

-- Bring these users' profiles in step with auth.users, idempotently, and retire their events.
-- Returns how many profiles were created, updated (a mapped column changed), scrubbed (soft-deleted users:
-- every mapped column cleared; the row stays, since other tables reference it), and how many ids have no live
-- user (hard-deleted, soft-deleted, never existed): those are done, not errors.
--
-- Rendered from the profile mapping (PROFILESYNC_CONFIG; the seed's: email ← auth.users.email, full_name ←
-- full_name | name | user_name | preferred_username, avatar_url ← avatar_url | picture) by
-- profilesync/profilesql.py, which explains the statement, its snapshot, and the user-by-user retry that
-- drops the values the table's constraints reject.
{{sync_profiles}}

-- The entry point of every path but the worker's (client guards, ensure_profile, the chat fallback,
-- operators): the same work under the default policy, returning (created, missing).
CREATE OR REPLACE FUNCTION profile_sync.create_profiles(user_ids uuid[])
RETURNS TABLE (created integer, missing integer)
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
  SELECT s.created, s.missing FROM profile_sync.sync_profiles(user_ids) s
$$;

-- Signup→profile latency for the workers' histogram (profilesync_signup_to_profile_seconds), at no extra round
-- trip: a worker with metrics on calls this in the same statement as profile_sync.sync_profiles. A STABLE
-- function reads the calling statement's snapshot, so it sees the batch as it was before sync_profiles
-- inserted profiles and deleted events, whichever of the two the planner runs first.
--
-- The age is measured from the user's outbox row (written in the signup transaction, or by backfill/sweeper
-- for users recorded later, whose auth.users.created_at may be months old) to now(), the transaction time that
-- the new profile's created_at also gets. Only users that get their profile in this call count: present,
-- not soft-deleted, without a profile yet.
--
-- The batch drives the plan (unnest, then index lookups): a SQL function runs a generic plan, and with
-- `e.user_id = ANY (user_ids)` that plan scanned every auth.users row against the array (52 ms for 250 users
-- in a fresh database, instead of ~2).
CREATE OR REPLACE FUNCTION profile_sync.signup_ages(user_ids uuid[]) RETURNS double precision[]
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
  SELECT coalesce(pg_catalog.array_agg(s.age), '{}')
  FROM (
    SELECT EXTRACT(EPOCH FROM pg_catalog.now() - pg_catalog.min(e.created_at))::double precision AS age
    FROM pg_catalog.unnest(user_ids) AS x(id)
    JOIN profile_sync.signup_events e ON e.user_id = x.id
    JOIN auth.users u ON u.id = x.id AND u.deleted_at IS NULL
    WHERE NOT EXISTS (SELECT 1 FROM {{profile}} p WHERE p.{{profile_id}} = x.id)
    GROUP BY x.id
  ) s
$$;
