-- The durable signup outbox, the trigger that fills it, and the profile-creating function.

-- One row per signup, written in the signup's own transaction. The publisher claims rows (enqueued_at, job_id);
-- create_profiles deletes them once the profile exists, so Postgres stays the source of truth even if Redis
-- loses every job. Despite the name, a row means "bring this user's profile in step": the update trigger
-- (0007_lifecycle.sql) writes one for every change the profile follows, soft deletes included.
CREATE TABLE profile_sync.signup_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  enqueued_at timestamptz,
  job_id text,
  failed_at timestamptz,
  last_error text
);
CREATE INDEX signup_events_pending_idx ON profile_sync.signup_events (id) WHERE enqueued_at IS NULL;
CREATE INDEX signup_events_user_id_idx ON profile_sync.signup_events (user_id);

-- Publishers announce here when they are idle (waiting on LISTEN). The signup trigger only NOTIFYs when one is:
-- NOTIFY takes a cluster-wide lock at commit, which under concurrent signups costs more than the insert itself.
CREATE TABLE profile_sync.publishers (
  backend_pid integer PRIMARY KEY,
  idle boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION profile_sync.on_auth_user_created() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  BEGIN
    INSERT INTO profile_sync.signup_events (user_id) VALUES (NEW.id);
    IF EXISTS (SELECT 1 FROM profile_sync.publishers p WHERE p.idle) THEN
      PERFORM pg_catalog.pg_notify('profile_sync_signup', NEW.id::text);
    END IF;
  EXCEPTION WHEN OTHERS THEN
    -- Never block a signup: the backfill (`profilesync backfill`) repairs what was not recorded.
    RAISE WARNING 'profile_sync: signup % not recorded (%: %)', NEW.id, SQLSTATE, SQLERRM;
  END;
  RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION profile_sync.on_auth_user_created() FROM PUBLIC;

CREATE TRIGGER profile_sync_on_auth_user_created
  AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION profile_sync.on_auth_user_created();

-- A metadata value as safe display text: strings only, control characters removed, trimmed, capped.
CREATE FUNCTION profile_sync.clean_text(value jsonb, max_len integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT nullif(
           pg_catalog.left(
             pg_catalog.btrim(
               pg_catalog.regexp_replace(
                 pg_catalog.left(value #>> '{}', max_len * 4),
                 '[[:cntrl:]\u200e\u200f\u202a-\u202e\u2066-\u2069]', '', 'g')),
             max_len),
           '')
  WHERE pg_catalog.jsonb_typeof(value) = 'string'
$$;

-- An avatar URL: http(s) only, no whitespace, capped; anything else is dropped.
CREATE FUNCTION profile_sync.clean_url(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT v FROM (SELECT value #>> '{}' AS v) s
  WHERE pg_catalog.jsonb_typeof(value) = 'string'
    AND pg_catalog.length(v) <= 2048
    AND v ~* '^https?://[^[:space:][:cntrl:]]+$'
$$;

-- Create the profiles of these users, idempotently, and retire their signup events.
-- Users missing from auth.users (deleted) or soft-deleted are done, not errors.
CREATE FUNCTION profile_sync.create_profiles(user_ids uuid[])
RETURNS TABLE (created integer, missing integer)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  n_created integer;
  n_found integer;
BEGIN
  WITH found AS (
    SELECT u.id, u.email, coalesce(u.raw_user_meta_data, '{}'::jsonb) AS m
    FROM auth.users u
    WHERE u.id = ANY (user_ids) AND u.deleted_at IS NULL
  ), inserted AS (
    INSERT INTO public.user_profiles (id, email, full_name, avatar_url)
    SELECT
      f.id,
      nullif(pg_catalog.btrim(f.email), ''),
      coalesce(
        profile_sync.clean_text(f.m -> 'full_name', 200),
        profile_sync.clean_text(f.m -> 'name', 200),
        profile_sync.clean_text(f.m -> 'user_name', 200),
        profile_sync.clean_text(f.m -> 'preferred_username', 200)),
      coalesce(profile_sync.clean_url(f.m -> 'avatar_url'), profile_sync.clean_url(f.m -> 'picture'))
    FROM found f
    ON CONFLICT (id) DO NOTHING
    RETURNING 1
  )
  SELECT (SELECT count(*) FROM inserted), (SELECT count(*) FROM found) INTO n_created, n_found;

  DELETE FROM profile_sync.signup_events e WHERE e.user_id = ANY (user_ids);

  RETURN QUERY SELECT n_created,
    (SELECT count(DISTINCT x)::integer FROM pg_catalog.unnest(user_ids) x) - n_found;
END
$$;

REVOKE ALL ON FUNCTION profile_sync.create_profiles(uuid[]) FROM PUBLIC;
