-- Hardening: nothing of ours hangs a signup, users the trigger could not record are swept up, the documented
-- service_role can do its documented jobs, and the profile sanitising rules hold on UPDATE too.

-- 1. The signup trigger never waits long for a lock on our tables (LOCK TABLE, a queued ALTER TABLE, VACUUM
--    FULL, a future migration). After lock_timeout the INSERT into signup_events fails inside the trigger's
--    EXCEPTION block: a WARNING, and the signup commits without its outbox row; the publisher's sweeper
--    (record_unrecorded_users below) records that user later. A function-level SET, so a later migration
--    that redefines the body with CREATE OR REPLACE keeps it (CREATE OR REPLACE resets SET clauses only if it
--    states its own: keep `SET lock_timeout` in any redefinition).
ALTER FUNCTION profile_sync.on_auth_user_created() SET lock_timeout = '150ms';

-- 2. The sweeper: live users with neither profile nor outbox row get one. One call examines the next p_limit
--    users by primary key after p_after (NULL: from the start) and returns the last id it examined (NULL
--    once past the end: start over), so its cost is bounded by p_limit whatever the number of users (one
--    anti-join over every user costs seconds at 1,000,000; a slice of 50,000 tens of milliseconds).
--    Failed users keep their failed row and are not swept (that is `profilesync replay --events`' business).
--    Races: a signup still in flight is invisible until it commits with its own row; create_profiles inserts
--    the profile and deletes the rows in one transaction, so the statement's snapshot sees one or the other;
--    a concurrent backfill may record a user twice, which the idempotent path absorbs.
--    Planned with the actual values (EXECUTE): a generic plan guesses that a third of auth.users follows p_after
--    and scans it all. The probes are scalar subqueries, one index lookup per user of the slice: as NOT EXISTS
--    the planner turns them into hash anti-joins that read every profile, whatever the slice.
CREATE FUNCTION profile_sync.record_unrecorded_users(p_after uuid, p_limit integer)
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
      WHERE s.deleted_at IS NULL
        AND (SELECT p.id FROM public.user_profiles p WHERE p.id = s.id) IS NULL
        AND (SELECT e.id FROM profile_sync.signup_events e WHERE e.user_id = s.id LIMIT 1) IS NULL
      RETURNING 1
    )
    SELECT CASE WHEN (SELECT count(*) FROM slice) = %s
                THEN (SELECT s.id FROM slice s ORDER BY s.id DESC LIMIT 1) END,
           (SELECT count(*)::integer FROM inserted)
  $q$, coalesce(p_after, '00000000-0000-0000-0000-000000000000'::uuid), p_limit, p_limit);
END
$$;
REVOKE ALL ON FUNCTION profile_sync.record_unrecorded_users(uuid, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION profile_sync.record_unrecorded_users(uuid, integer) TO profilesync_publisher;

-- A chat caller unregisters its waiters when it gives up; a profile insert that deleted those rows and has not
-- committed (a wedged worker) must not hang it: the caller leaves them to that insert.
ALTER FUNCTION profile_sync.unwatch_profiles(bigint[]) SET lock_timeout = '1s';

-- 3. service_role, documented to run the chat service, doctor, backfill and replay: exactly what they use.
--    (Supabase's own grants give it the public tables; plain PostgreSQL with the dev stub does not.)
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
    RETURN;  -- not a Supabase database: the services run as the migrations' owner
  END IF;
  GRANT USAGE ON SCHEMA profile_sync TO service_role;
  -- chat service: wait for readiness, create a profile inline
  GRANT EXECUTE ON FUNCTION profile_sync.watch_profile(uuid, integer, integer),
                            profile_sync.unwatch_profiles(bigint[]),
                            profile_sync.profile_state(uuid),
                            profile_sync.forget_dead_profile_waiters(),
                            profile_sync.create_profiles(uuid[])
    TO service_role;
  GRANT SELECT, INSERT (user_id, title) ON public.chat_conversations TO service_role;
  -- doctor (migrations, backlog), backfill (records events), replay --events (makes failed rows pending)
  GRANT SELECT ON profile_sync.schema_migrations TO service_role;
  GRANT SELECT, INSERT (user_id), UPDATE (failed_at, last_error, enqueued_at, job_id)
    ON profile_sync.signup_events TO service_role;
  GRANT SELECT ON public.user_profiles TO service_role;
  BEGIN
    -- doctor and backfill count live users; Supabase owns auth.users, so this grant may not be ours to give
    GRANT SELECT (id, deleted_at, created_at) ON auth.users TO service_role;
  EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'profile_sync: could not grant SELECT on auth.users to service_role; run doctor and '
      'backfill as the migrations'' owner';
  END;
END $$;

-- 4. Sanitising, on every write. clean_text: also strip the line/paragraph separators U+2028/U+2029 and every
--    format character (Unicode category Cf: U+061C, U+200B-U+200F, U+202A-U+202E, U+2060-U+2064,
--    U+2066-U+206F, U+FEFF, U+FFF9-U+FFFB, soft hyphen …). PostgreSQL regular expressions have no \p{Cf}, so
--    the class is spelled out from the Unicode 15 table.
CREATE OR REPLACE FUNCTION profile_sync.clean_text(value jsonb, max_len integer) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT nullif(
           pg_catalog.left(
             pg_catalog.btrim(
               pg_catalog.regexp_replace(
                 pg_catalog.left(value #>> '{}', max_len * 4),
                 '[[:cntrl:]\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f'
                 '\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]', '', 'g')),
             max_len),
           '')
  WHERE pg_catalog.jsonb_typeof(value) = 'string'
$$;

-- clean_url: http(s) only, no whitespace, control or format characters anywhere (a U+202E can make
-- `https://evil.test/gpj.exe` display as something else), and no host that points inside the server's own
-- network if something ever fetches the avatar: localhost, loopback (127/8, ::1), link-local (169.254/16,
-- the cloud metadata address; fe80::/10), private (10/8, 172.16/12, 192.168/16; fc00::/7), 0.0.0.0.
-- Numeric hosts in decimal/hex/octal forms (http://2130706433/) are refused too: only dotted quads pass.
CREATE OR REPLACE FUNCTION profile_sync.clean_url(value jsonb) RETURNS text
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT s.v FROM (
    SELECT value #>> '{}' AS v,
           pg_catalog.lower(pg_catalog.substring(value #>> '{}',
             '^[hH][tT][tT][pP][sS]?://(?:[^/?#@]*@)?(\[[^]]*\]|[^/?#:]*)')) AS host
  ) s
  WHERE pg_catalog.jsonb_typeof(value) = 'string'
    AND pg_catalog.length(s.v) <= 2048
    AND s.v ~* '^https?://[^[:space:][:cntrl:]]+$'
    AND s.v !~ '[\u00ad\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u180e\u200b-\u200f\u2028-\u202e\u2060-\u2064\u2066-\u206f\ufeff\ufff9-\ufffb]'
    AND s.host <> ''
    AND s.host !~ '^(localhost|.*\.localhost|.*\.local|.*\.internal)\.?$'
    AND s.host !~ '^\['  -- IPv6 literals (::1, fe80::, fc00::, mapped IPv4 …): no avatar needs one
    -- numeric hosts: only plain dotted quads (not 2130706433, 0x7f.1, 0177.0.0.1), and not internal ones
    AND (s.host !~ '^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}\.?$'
         OR (s.host ~ '^((25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])\.){3}(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])$'
             AND s.host !~ '^(0|10|127)\.'
             AND s.host !~ '^169\.254\.'
             AND s.host !~ '^172\.(1[6-9]|2[0-9]|3[01])\.'
             AND s.host !~ '^192\.168\.'))
$$;

-- The same rules on every later change (a signed-in user may UPDATE full_name and avatar_url through
-- PostgREST): a value that cleaning would change is refused with check_violation (23514).
-- A trigger, not CHECK constraints: a constraint runs its functions as the writing role, so `authenticated`
-- would need EXECUTE on profile_sync functions and USAGE on the schema, which 0004 denies API roles on
-- purpose; this SECURITY DEFINER trigger needs neither and reuses the one definition of the rules. It only
-- looks at values that change, so rows an existing project already has stay editable in other columns (as a
-- NOT VALID constraint would), and it is not on INSERT: create_profiles writes cleaned values already, and
-- `authenticated` has no INSERT on the table; the worker's batch insert pays nothing.
CREATE FUNCTION profile_sync.check_profile_update() RETURNS trigger
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
  RETURN NEW;
END
$$;
REVOKE ALL ON FUNCTION profile_sync.check_profile_update() FROM PUBLIC;

CREATE TRIGGER profile_sync_check_profile_update
  BEFORE UPDATE OF full_name, avatar_url ON public.user_profiles
  FOR EACH ROW EXECUTE FUNCTION profile_sync.check_profile_update();

-- 0004 revoked every function of ours from anon and authenticated; the new ones too.
DO $$
BEGIN
  IF (SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname IN ('anon', 'authenticated')) = 2 THEN
    REVOKE ALL ON FUNCTION profile_sync.record_unrecorded_users(uuid, integer),
                           profile_sync.check_profile_update()
      FROM anon, authenticated;
  END IF;
END $$;
