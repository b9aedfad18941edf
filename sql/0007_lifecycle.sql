-- Profile lifecycle: keep public.user_profiles in step with auth.users after the signup.
--
-- Same path as a signup, no new moving parts: a change to a user that matters to the profile adds a row to
-- profile_sync.signup_events (the outbox), the publisher enqueues `profilesync.worker.jobs.create_profiles` with the user
-- ids, and the worker calls profile_sync.sync_profiles, which brings each profile in step with the user's
-- CURRENT auth.users row: insert it when missing, apply the metadata policy when present, scrub it when the
-- user is soft-deleted. An event says "look at this user again", never what changed, so events of one user
-- are interchangeable, a late or duplicate one is harmless, and the worker always applies the final state.

-- The transaction that recorded an event (its top-level id, also when the row was written inside a
-- subtransaction such as the triggers' exception blocks). The update trigger uses it to record at most one
-- event per user and transaction: a signup's own UPDATEs (GoTrue sets role and rewrites raw_user_meta_data
-- in the signup transaction) and the several UPDATEs of one soft delete or admin update find the event this
-- transaction already wrote, which covers them, since the worker reads the row only after the commit.
-- Two statements: a column added without a default needs no table rewrite; old rows stay NULL (committed by
-- earlier transactions, so never "this transaction").
ALTER TABLE profile_sync.signup_events ADD COLUMN xact_id xid8;
ALTER TABLE profile_sync.signup_events ALTER COLUMN xact_id SET DEFAULT pg_catalog.pg_current_xact_id();

CREATE FUNCTION profile_sync.on_auth_user_updated() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET lock_timeout = '150ms'
AS $$
BEGIN
  BEGIN
    -- Not "was the OLD row version written by this transaction": GoTrue's admin update and email
    -- confirmation first update other columns (password, confirmation token), then the metadata, and
    -- that second UPDATE would be skipped with no event recorded. What covers a change is an event
    -- that this transaction recorded, for this user (one index probe on signup_events.user_id).
    IF NOT EXISTS (
      SELECT 1 FROM profile_sync.signup_events e
      WHERE e.user_id = NEW.id AND e.xact_id = pg_catalog.pg_current_xact_id()
    ) THEN
      INSERT INTO profile_sync.signup_events (user_id) VALUES (NEW.id);
      IF EXISTS (SELECT 1 FROM profile_sync.publishers p WHERE p.idle) THEN
        PERFORM pg_catalog.pg_notify('profile_sync_signup', NEW.id::text);
      END IF;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    -- Never block GoTrue: the profile catches up with the user's next recorded change.
    RAISE WARNING 'profile_sync: change of user % not recorded (%: %)', NEW.id, SQLSTATE, SQLERRM;
  END;
  RETURN NULL;
END
$$;

-- Only the columns the profile is made of (email; the metadata keys that feed full_name and avatar_url, as
-- sync_profiles maps them: keep both lists equal; deleted_at for the scrub) or that mark a conversion (phone,
-- is_anonymous). GoTrue writes only the columns it changes (plus updated_at): the UPDATEs of every login,
-- token refresh and recovery (last_sign_in_at, tokens) do not name these columns and skip the trigger before
-- the WHEN is evaluated. The WHEN, evaluated when the event would be queued (no function call, no
-- privilege needed by supabase_auth_admin), stops an UPDATE that names them without changing what the
-- profile uses: an ORM writing every column, or the confirmation's metadata rewrite ("email_verified").
CREATE TRIGGER profile_sync_on_auth_user_updated
  AFTER UPDATE OF email, phone, raw_user_meta_data, is_anonymous, deleted_at ON auth.users
  FOR EACH ROW
  WHEN (OLD.email IS DISTINCT FROM NEW.email
        OR OLD.phone IS DISTINCT FROM NEW.phone
        OR OLD.is_anonymous IS DISTINCT FROM NEW.is_anonymous
        OR OLD.deleted_at IS DISTINCT FROM NEW.deleted_at
        OR (OLD.raw_user_meta_data IS DISTINCT FROM NEW.raw_user_meta_data
            AND ROW(OLD.raw_user_meta_data -> 'full_name', OLD.raw_user_meta_data -> 'name',
                    OLD.raw_user_meta_data -> 'user_name', OLD.raw_user_meta_data -> 'preferred_username',
                    OLD.raw_user_meta_data -> 'avatar_url', OLD.raw_user_meta_data -> 'picture')
                IS DISTINCT FROM
                ROW(NEW.raw_user_meta_data -> 'full_name', NEW.raw_user_meta_data -> 'name',
                    NEW.raw_user_meta_data -> 'user_name', NEW.raw_user_meta_data -> 'preferred_username',
                    NEW.raw_user_meta_data -> 'avatar_url', NEW.raw_user_meta_data -> 'picture')))
  EXECUTE FUNCTION profile_sync.on_auth_user_updated();

-- PROFILESYNC_METADATA_POLICY for a field the metadata feeds (full_name, avatar_url) of an existing profile:
--   fill-null  fill the field while it is still NULL, never overwrite what the user edited (the default);
--   overwrite  the metadata's value wins whenever it has one (a field it lacks is kept, never cleared);
--   off        the metadata feeds a profile only when it is created.
CREATE FUNCTION profile_sync.apply_metadata_policy(policy text, current_value text, metadata_value text)
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
-- users: email, full_name and avatar_url set to NULL; the row stays, since conversations reference it), and
-- how many ids have no live user (hard-deleted, soft-deleted, never existed): those are done, not errors.
--
-- One statement, so one snapshot: the events it deletes are exactly those committed before the users it
-- read, and a change committed meanwhile keeps its event for the next job. The users are read FOR KEY SHARE:
-- a hard delete running concurrently either finished first (the user is not found: missing) or waits for
-- this transaction (and then cascades to the profile), so the foreign key never fails a batch (23503).
-- ON CONFLICT DO UPDATE, not a separate UPDATE: it also catches a profile that another path (the chat
-- fallback) committed after this statement's snapshot.
CREATE FUNCTION profile_sync.sync_profiles(user_ids uuid[], metadata_policy text DEFAULT 'fill-null')
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
    SELECT u.id, u.deleted_at IS NOT NULL AS soft_deleted, u.email,
           coalesce(u.raw_user_meta_data, '{}'::jsonb) AS m
    FROM auth.users u
    WHERE u.id = ANY (user_ids)
    FOR KEY SHARE OF u
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
    DELETE FROM profile_sync.signup_events e WHERE e.user_id = ANY (user_ids)
  )
  SELECT
    (SELECT count(*)::integer FROM upserted x WHERE x.id NOT IN (SELECT ex.id FROM existing ex)),
    (SELECT count(*)::integer FROM upserted x WHERE x.id IN (SELECT ex.id FROM existing ex)),
    (SELECT count(*)::integer FROM scrubbed_rows),
    (SELECT count(DISTINCT x)::integer FROM pg_catalog.unnest(user_ids) x) - (SELECT count(*)::integer FROM live);
END
$$;

-- The one-argument entry point stays for its other callers (the chat fallback, client guards, operators):
-- the same work under the default policy, returning (created, missing) as before. Replaced, not dropped, so
-- its grants stay.
CREATE OR REPLACE FUNCTION profile_sync.create_profiles(user_ids uuid[])
RETURNS TABLE (created integer, missing integer)
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
  SELECT s.created, s.missing FROM profile_sync.sync_profiles(user_ids) s
$$;

-- Nothing new is executable by PUBLIC or Supabase's API roles (see 0004); the worker calls sync_profiles.
DO $$
DECLARE
  fn regprocedure;
  grantee text;
BEGIN
  FOR grantee IN
    SELECT 'PUBLIC'
    UNION ALL
    SELECT pg_catalog.quote_ident(rolname) FROM pg_catalog.pg_roles WHERE rolname IN ('anon', 'authenticated')
  LOOP
    FOREACH fn IN ARRAY ARRAY[
      'profile_sync.on_auth_user_updated()',
      'profile_sync.apply_metadata_policy(text, text, text)',
      'profile_sync.sync_profiles(uuid[], text)'
    ]::regprocedure[] LOOP
      EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
    END LOOP;
  END LOOP;
END $$;

GRANT EXECUTE ON FUNCTION profile_sync.sync_profiles(uuid[], text) TO profilesync_worker;
