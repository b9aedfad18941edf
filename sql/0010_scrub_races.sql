-- A soft-deleted user keeps no personal data in the profile, whatever the interleaving, and is treated as gone.
--
-- The invariant: a profile of a user whose auth.users.deleted_at is set holds no email, full_name or
-- avatar_url once the user's outbox is empty. Three parts keep it:
--   1. Whatever copies personal data into a profile reads the user's CURRENT row FOR SHARE and holds that lock
--      to its commit (sync_profiles, which the worker, the client guard, public.ensure_profile() and the
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
-- client guard answer PT404 as for a deleted user, and an UPDATE cannot put name or avatar back.

-- Bring these users' profiles in step with auth.users, idempotently, and retire their events.
-- Returns how many profiles were created, updated (email or policy fields changed), scrubbed (soft-deleted
-- users: email, full_name and avatar_url set to NULL; the row stays, since conversations reference it), and
-- how many ids have no live user (hard-deleted, soft-deleted, never existed): those are done, not errors.
--
-- One statement, so one snapshot: the events it deletes are exactly those committed before the users it
-- read, and a change committed meanwhile keeps its event for the next job.
-- The users are read FOR SHARE (see the top of this file): a soft delete in flight is waited for and then
-- seen, one arriving later waits for this transaction; so data is only ever copied from a row that is live
-- and stays live until the copy commits, and the scrub that retires a soft delete's event sees every profile
-- copied before it. The same lock keeps the foreign key safe: a hard delete either finished first (the user
-- is not found: missing) or waits for this transaction (and then cascades to the profile), so the foreign
-- key never fails a batch (23503).
-- ON CONFLICT DO UPDATE, not a separate UPDATE: it also catches a profile that another path (the chat
-- fallback) committed after this statement's snapshot.
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
    SELECT p.id FROM public.user_profiles p WHERE p.id = ANY (user_ids)
  ), upserted AS (
    INSERT INTO public.user_profiles AS p (id, email, full_name, avatar_url)
    SELECT l.id, l.email, l.full_name, l.avatar_url FROM live l
    ON CONFLICT (id) DO UPDATE SET
      email = excluded.email,
      full_name = profile_sync.apply_metadata_policy(metadata_policy, p.full_name, excluded.full_name),
      avatar_url = profile_sync.apply_metadata_policy(metadata_policy, p.avatar_url, excluded.avatar_url),
      updated_at = pg_catalog.now()
    WHERE (p.email, p.full_name, p.avatar_url) IS DISTINCT FROM (
      excluded.email,
      profile_sync.apply_metadata_policy(metadata_policy, p.full_name, excluded.full_name),
      profile_sync.apply_metadata_policy(metadata_policy, p.avatar_url, excluded.avatar_url))
    RETURNING p.id
  ), scrubbed_rows AS (
    UPDATE public.user_profiles p
    SET email = NULL, full_name = NULL, avatar_url = NULL, updated_at = pg_catalog.now()
    FROM target t
    WHERE p.id = t.id AND t.soft_deleted
      AND (p.email IS NOT NULL OR p.full_name IS NOT NULL OR p.avatar_url IS NOT NULL)
    RETURNING p.id
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

-- The sweeper: users whose profile is out of step and who have no outbox row get one, so the worker brings
-- them in step: live users without a profile (their signup's trigger gave up on a lock, or ran while our
-- schema was broken), and soft-deleted users whose profile still holds personal data (written by something
-- that bypassed the FOR SHARE rule above: an app's own insert, a restore). One call examines the next
-- p_limit users by primary key after p_after (NULL: from the start) and returns the last id it examined
-- (NULL once past the end: start over), so its cost is bounded by p_limit whatever the number of users (one
-- anti-join over every user costs seconds at 1,000,000; a slice of 50,000 tens of milliseconds).
-- Failed users keep their failed row and are not swept (that is `profilesync replay --events`' business).
-- Races: a signup still in flight is invisible until it commits with its own row; sync_profiles writes the
-- profile and deletes the rows in one transaction, so the statement's snapshot sees one or the other; a
-- concurrent backfill may record a user twice, which the idempotent path absorbs.
-- Planned with the actual values (EXECUTE): a generic plan guesses that a third of auth.users follows p_after
-- and scans it all. The probes are scalar subqueries, one index lookup per user of the slice: as NOT EXISTS
-- the planner turns them into hash anti-joins that read every profile, whatever the slice.
CREATE OR REPLACE FUNCTION profile_sync.record_unrecorded_users(p_after uuid, p_limit integer)
RETURNS TABLE (last_id uuid, recorded integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  RETURN QUERY EXECUTE pg_catalog.format($q$
    WITH slice AS (
      SELECT u.id, u.deleted_at FROM auth.users u
      WHERE u.id > %L::uuid
      ORDER BY u.id
      LIMIT %s
    ), inserted AS (
      INSERT INTO profile_sync.signup_events (user_id)
      SELECT s.id FROM slice s
      WHERE CASE WHEN s.deleted_at IS NULL
                 THEN (SELECT p.id FROM public.user_profiles p WHERE p.id = s.id) IS NULL
                 ELSE coalesce((SELECT p.email IS NOT NULL OR p.full_name IS NOT NULL OR p.avatar_url IS NOT NULL
                                FROM public.user_profiles p WHERE p.id = s.id), false)
            END
        AND (SELECT e.id FROM profile_sync.signup_events e WHERE e.user_id = s.id LIMIT 1) IS NULL
      RETURNING 1
    )
    SELECT CASE WHEN (SELECT count(*) FROM slice) = %s
                THEN (SELECT s.id FROM slice s ORDER BY s.id DESC LIMIT 1) END,
           (SELECT count(*)::integer FROM inserted)
  $q$, coalesce(p_after, '00000000-0000-0000-0000-000000000000'::uuid), p_limit, p_limit);
END
$$;

-- The client guarantee's trigger on public.chat_conversations (see 0006 for who is a client and the errors).
-- A soft-deleted user is gone: their still-valid JWT gets PT404 as a deleted user's does, also when a
-- (scrubbed) profile exists.
CREATE OR REPLACE FUNCTION profile_sync.ensure_conversation_profile() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  -- A NULL user_id is left to the table's NOT NULL constraint.
  IF NEW.user_id IS NULL THEN
    RETURN NEW;
  END IF;
  -- The fast path: the profile exists and its user is live (two primary-key probes, no extra round trip).
  IF EXISTS (
    SELECT 1 FROM public.user_profiles p JOIN auth.users u ON u.id = p.id
    WHERE p.id = NEW.user_id AND u.deleted_at IS NULL
  ) THEN
    RETURN NEW;
  END IF;
  -- A signed-in user only ever gets their own profile created. BEFORE ROW triggers run before row level
  -- security's WITH CHECK, so for another user's id we step aside and let RLS decide (inside an app's SECURITY
  -- DEFINER function, which RLS does not restrict, the foreign key): otherwise the caller would touch another
  -- user's rows, and PT404 against RLS's 42501 would tell them which user ids exist.
  IF TG_ARGV[0] = 'own' AND NEW.user_id IS DISTINCT FROM (SELECT auth.uid()) THEN
    RETURN NEW;
  END IF;
  -- Idempotent: a worker creating the same profile concurrently makes this wait for it and do nothing.
  -- Re-read rather than trust the function's counts: whoever created the profile, it must exist now, for a
  -- user that is live (create_profiles holds its FOR SHARE lock on the user until this transaction ends).
  PERFORM profile_sync.create_profiles(ARRAY[NEW.user_id]);
  IF NOT EXISTS (
    SELECT 1 FROM public.user_profiles p JOIN auth.users u ON u.id = p.id
    WHERE p.id = NEW.user_id AND u.deleted_at IS NULL
  ) THEN
    RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', NEW.user_id
      USING ERRCODE = 'PT404',
            DETAIL = 'no profile can be created for a user missing from auth.users or soft-deleted',
            HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
  END IF;
  RETURN NEW;
END
$$;

-- The caller's own profile, created if missing (see 0006). Only for a live user: a soft-deleted user's
-- still-valid JWT gets PT404 as a deleted user's does, never the (scrubbed) row.
CREATE OR REPLACE FUNCTION public.ensure_profile() RETURNS public.user_profiles
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  caller uuid := auth.uid();
  profile public.user_profiles;
BEGIN
  SELECT p.* INTO profile FROM public.user_profiles p
  WHERE p.id = caller AND EXISTS (SELECT 1 FROM auth.users u WHERE u.id = caller AND u.deleted_at IS NULL);
  IF FOUND THEN
    RETURN profile;
  END IF;
  IF caller IS NULL THEN
    RAISE EXCEPTION 'profile_sync: ensure_profile needs a signed-in user'
      USING ERRCODE = 'PT401',
            HINT = 'call it with the session of a signed-in user (request.jwt.claims has no sub)';
  END IF;
  PERFORM profile_sync.create_profiles(ARRAY[caller]);
  SELECT p.* INTO profile FROM public.user_profiles p
  WHERE p.id = caller AND EXISTS (SELECT 1 FROM auth.users u WHERE u.id = caller AND u.deleted_at IS NULL);
  IF NOT FOUND THEN
    RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', caller
      USING ERRCODE = 'PT404',
            DETAIL = 'no profile can be created for a user missing from auth.users or soft-deleted',
            HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
  END IF;
  RETURN profile;
END
$$;

-- The sanitising rules of 0005 on every later change of the profile, and part 1 of the invariant above for
-- UPDATEs: email, full_name or avatar_url set to a new non-NULL value only for a live user, checked on the
-- user's row read FOR SHARE (a soft delete in flight is waited for and seen; one arriving later waits for
-- this transaction, and its scrub then sees this change). Otherwise PT404, the error a deleted user gets from
-- ensure_profile(): a soft-deleted user's still-valid JWT cannot put name or avatar back. Clearing a field
-- (the scrub) and the worker's own updates of live users pass; the check runs only for a field that gets a
-- new value.
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
    PERFORM 1 FROM auth.users u WHERE u.id = NEW.id AND u.deleted_at IS NULL FOR SHARE OF u;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', NEW.id
        USING ERRCODE = 'PT404',
              DETAIL = 'the profile of a user missing from auth.users or soft-deleted keeps no personal data',
              HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
    END IF;
  END IF;
  RETURN NEW;
END
$$;

-- Also on email, which the worker, the scrub and service_role write (not `authenticated`: no UPDATE on it).
DROP TRIGGER profile_sync_check_profile_update ON public.user_profiles;
CREATE TRIGGER profile_sync_check_profile_update
  BEFORE UPDATE OF email, full_name, avatar_url ON public.user_profiles
  FOR EACH ROW EXECUTE FUNCTION profile_sync.check_profile_update();
