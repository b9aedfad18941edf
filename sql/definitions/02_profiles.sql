-- Creating and syncing profiles: the one mapping from auth.users to the profile table, used by the worker
-- (sync_profiles), by every other path that creates a profile (create_profiles), and the workers' latency probe.
--
-- A soft-deleted user keeps no personal data in the profile, whatever the interleaving, and is treated as gone.
-- The invariant: a profile of a user whose auth.users.deleted_at is set holds no email, full_name or
-- avatar_url once the user's outbox is empty. Three parts keep it:
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

-- Bring these users' profiles in step with auth.users, idempotently, and retire their events.
-- Returns how many profiles were created, updated (email or policy fields changed), scrubbed (soft-deleted
-- users: email, full_name and avatar_url set to NULL; the row stays, since other tables reference it), and
-- how many ids have no live user (hard-deleted, soft-deleted, never existed): those are done, not errors.
--
-- Metadata mapping: full_name ← full_name | name | user_name | preferred_username (display text, 200
-- characters), avatar_url ← avatar_url | picture (public http(s) URLs), email ← auth.users.email.
--
-- One statement, so one snapshot: the events it deletes are exactly those committed before the users it
-- read, and a change committed meanwhile keeps its event for the next job.
-- The users are read FOR SHARE (see the top of this file): a soft delete in flight is waited for and then
-- seen, one arriving later waits for this transaction; so data is only ever copied from a row that is live
-- and stays live until the copy commits, and the scrub that retires a soft delete's event sees every profile
-- copied before it. The same lock keeps the foreign key safe: a hard delete either finished first (the user
-- is not found: missing) or waits for this transaction (and then cascades to the profile), so the foreign
-- key never fails a batch (23503).
-- ON CONFLICT DO UPDATE, not a separate UPDATE: it also catches a profile that another path (a client guard,
-- the chat fallback) committed after this statement's snapshot.
CREATE OR REPLACE FUNCTION profile_sync.sync_profiles(user_ids uuid[], metadata_policy text DEFAULT 'fill-null')
RETURNS TABLE (created integer, updated integer, scrubbed integer, missing integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  IF metadata_policy IS NULL OR metadata_policy NOT IN ('fill-null', 'overwrite', 'off') THEN
    RAISE EXCEPTION 'profile_sync: unknown metadata policy %', pg_catalog.quote_literal(metadata_policy)
      USING ERRCODE = 'invalid_parameter_value', HINT = 'fill-null, overwrite or off';
  END IF;

  RETURN QUERY
  WITH target AS (
    -- FOR SHARE, not FOR KEY SHARE: it must also conflict with an UPDATE that sets deleted_at without
    -- changing a key column. The row returned is the latest committed version, deleted_at included.
    SELECT u.id, u.deleted_at IS NOT NULL AS soft_deleted, u.email,
           coalesce(u.raw_user_meta_data, '{}'::jsonb) AS m
    FROM auth.users u
    WHERE u.id = ANY (user_ids)
    FOR SHARE OF u
  ), live AS (
    -- The metadata keys read here are the ones the update trigger's WHEN compares: keep both lists equal.
    SELECT
      t.id,
      nullif(pg_catalog.btrim(t.email), '') AS email,
      coalesce(
        profile_sync.clean_text(t.m -> 'full_name', 200),
        profile_sync.clean_text(t.m -> 'name', 200),
        profile_sync.clean_text(t.m -> 'user_name', 200),
        profile_sync.clean_text(t.m -> 'preferred_username', 200)) AS full_name,
      coalesce(profile_sync.clean_url(t.m -> 'avatar_url'), profile_sync.clean_url(t.m -> 'picture'))
        AS avatar_url
    FROM target t
    WHERE NOT t.soft_deleted
  ), existing AS (
    SELECT p.{{profile_id}} AS id FROM {{profile}} p WHERE p.{{profile_id}} = ANY (user_ids)
  ), upserted AS (
    INSERT INTO {{profile}} AS p ({{profile_id}}, email, full_name, avatar_url)
    SELECT l.id, l.email, l.full_name, l.avatar_url FROM live l
    ON CONFLICT ({{profile_id}}) DO UPDATE SET
      email = excluded.email,
      full_name = profile_sync.apply_metadata_policy(metadata_policy, p.full_name, excluded.full_name),
      avatar_url = profile_sync.apply_metadata_policy(metadata_policy, p.avatar_url, excluded.avatar_url),
      updated_at = pg_catalog.now()
    WHERE (p.email, p.full_name, p.avatar_url) IS DISTINCT FROM (
      excluded.email,
      profile_sync.apply_metadata_policy(metadata_policy, p.full_name, excluded.full_name),
      profile_sync.apply_metadata_policy(metadata_policy, p.avatar_url, excluded.avatar_url))
    RETURNING p.{{profile_id}} AS id
  ), scrubbed_rows AS (
    UPDATE {{profile}} p
    SET email = NULL, full_name = NULL, avatar_url = NULL, updated_at = pg_catalog.now()
    FROM target t
    WHERE p.{{profile_id}} = t.id AND t.soft_deleted
      AND (p.email IS NOT NULL OR p.full_name IS NOT NULL OR p.avatar_url IS NOT NULL)
    RETURNING p.{{profile_id}} AS id
  ), retired AS (
    -- Only the events this statement's snapshot sees. A soft delete's event is among them only if the soft
    -- delete committed before the snapshot, and then so did every profile copied from the live row (the
    -- soft delete waited for their FOR SHARE locks): scrubbed_rows sees them all.
    DELETE FROM profile_sync.signup_events e WHERE e.user_id = ANY (user_ids)
  )
  SELECT
    (SELECT count(*)::integer FROM upserted x WHERE x.id NOT IN (SELECT ex.id FROM existing ex)),
    (SELECT count(*)::integer FROM upserted x WHERE x.id IN (SELECT ex.id FROM existing ex)),
    (SELECT count(*)::integer FROM scrubbed_rows),
    (SELECT count(DISTINCT x)::integer FROM pg_catalog.unnest(user_ids) x) - (SELECT count(*)::integer FROM live);
END
$$;

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

-- The sanitising rules on every later change (a signed-in user may UPDATE full_name and avatar_url through
-- PostgREST): a value that cleaning would change is refused with check_violation (23514). And part 1 of the
-- invariant above for UPDATEs: email, full_name or avatar_url set to a new non-NULL value only for a live
-- user, checked on the user's row read FOR SHARE (a soft delete in flight is waited for and seen; one arriving
-- later waits for this transaction, and its scrub then sees this change). Otherwise PT404, the error a deleted
-- user gets from ensure_profile(): a soft-deleted user's still-valid JWT cannot put name or avatar back.
-- Clearing a field (the scrub) and the worker's own updates of live users pass; the check runs only for a
-- field that gets a new value. Also on email, which the worker, the scrub and service_role write (not
-- `authenticated`: no UPDATE on it).
-- A trigger, not CHECK constraints: a constraint runs its functions as the writing role, so `authenticated`
-- would need EXECUTE on profile_sync functions and USAGE on the schema, which the grants deny API roles on
-- purpose; this SECURITY DEFINER trigger needs neither and reuses the one definition of the rules. It only
-- looks at values that change, so rows an existing project already has stay editable in other columns (as a
-- NOT VALID constraint would), and it is not on INSERT: sync_profiles writes cleaned values already, and
-- `authenticated` has no INSERT on the table; the worker's batch insert pays nothing.
CREATE OR REPLACE FUNCTION profile_sync.check_profile_update() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  IF NEW.full_name IS DISTINCT FROM OLD.full_name AND NEW.full_name IS NOT NULL
     AND NEW.full_name IS DISTINCT FROM profile_sync.clean_text(pg_catalog.to_jsonb(NEW.full_name), 200) THEN
    RAISE EXCEPTION 'profile_sync: full_name must be at most 200 characters of display text'
      USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.avatar_url IS DISTINCT FROM OLD.avatar_url AND NEW.avatar_url IS NOT NULL
     AND NEW.avatar_url IS DISTINCT FROM profile_sync.clean_url(pg_catalog.to_jsonb(NEW.avatar_url)) THEN
    RAISE EXCEPTION 'profile_sync: avatar_url must be a public http(s) URL'
      USING ERRCODE = 'check_violation';
  END IF;
  IF (NEW.email IS DISTINCT FROM OLD.email AND NEW.email IS NOT NULL)
     OR (NEW.full_name IS DISTINCT FROM OLD.full_name AND NEW.full_name IS NOT NULL)
     OR (NEW.avatar_url IS DISTINCT FROM OLD.avatar_url AND NEW.avatar_url IS NOT NULL) THEN
    PERFORM 1 FROM auth.users u WHERE u.id = NEW.{{profile_id}} AND u.deleted_at IS NULL FOR SHARE OF u;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', NEW.{{profile_id}}
        USING ERRCODE = 'PT404',
              DETAIL = 'the profile of a user missing from auth.users or soft-deleted keeps no personal data',
              HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
    END IF;
  END IF;
  RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER profile_sync_check_profile_update
  BEFORE UPDATE OF email, full_name, avatar_url ON {{profile}}
  FOR EACH ROW EXECUTE FUNCTION profile_sync.check_profile_update();
