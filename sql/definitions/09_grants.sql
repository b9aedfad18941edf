-- Every privilege on schema profile_sync and the objects in it, stated once: whoever else held one (PUBLIC,
-- Supabase's API roles anon and authenticated, a grant a project's default privileges added, one that an
-- earlier release made) loses it here, and the roles below get exactly what they use. SECURITY DEFINER
-- functions run as their owner, so EXECUTE is all a caller needs for what they do.
DO $$
DECLARE
  grantee text;
BEGIN
  FOR grantee IN
    SELECT 'PUBLIC'
    UNION ALL
    SELECT pg_catalog.quote_ident(rolname) FROM pg_catalog.pg_roles
    WHERE rolname IN ('anon', 'authenticated', 'service_role', 'profilesync_worker', 'profilesync_publisher')
  LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON ALL FUNCTIONS IN SCHEMA profile_sync FROM %s', grantee);
    EXECUTE pg_catalog.format('REVOKE ALL ON ALL TABLES IN SCHEMA profile_sync FROM %s', grantee);
    EXECUTE pg_catalog.format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA profile_sync FROM %s', grantee);
    EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA profile_sync FROM %s', grantee);
  END LOOP;
END $$;

-- The publisher: claim pending events, mark them enqueued, re-check stale ones; announce itself idle or busy;
-- sweep up unrecorded users; count users without a profile for its metrics. It never reads last_error (a failure's text may quote the profile row, email
-- included).
GRANT USAGE ON SCHEMA profile_sync TO profilesync_publisher;
GRANT SELECT (id, user_id, created_at, enqueued_at, job_id, failed_at),
      UPDATE (enqueued_at, job_id)  -- FOR UPDATE SKIP LOCKED needs UPDATE on a column
  ON profile_sync.signup_events TO profilesync_publisher;
GRANT SELECT, INSERT, UPDATE, DELETE ON profile_sync.publishers TO profilesync_publisher;
GRANT EXECUTE ON FUNCTION profile_sync.announce_publisher(integer, boolean),
                          profile_sync.record_unrecorded_users(uuid, integer),
                          profile_sync.profile_gap()
  TO profilesync_publisher;

-- The worker: sync profiles (the function does the rest as its owner), time them, mark a user's failure.
GRANT USAGE ON SCHEMA profile_sync TO profilesync_worker;
GRANT EXECUTE ON FUNCTION profile_sync.create_profiles(uuid[]),
                          profile_sync.sync_profiles(uuid[], text),
                          profile_sync.signup_ages(uuid[])
  TO profilesync_worker;
GRANT SELECT (user_id), UPDATE (failed_at, last_error) ON profile_sync.signup_events TO profilesync_worker;

-- service_role, documented to run the chat service, doctor, backfill and replay: exactly what they use.
-- (Supabase's own grants give it the application's tables; plain PostgreSQL with the dev stub does not.)
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
    RETURN;  -- not a Supabase database: the services run as the migrations' owner
  END IF;
  GRANT USAGE ON SCHEMA profile_sync TO service_role;
  -- chat service: wait for readiness, create a profile inline
  GRANT EXECUTE ON FUNCTION profile_sync.watch_profile(uuid, integer, uuid),
                            profile_sync.recheck_profile(uuid, integer),
                            profile_sync.unwatch_profiles(uuid[]),
                            profile_sync.profile_state(uuid),
                            profile_sync.forget_dead_profile_waiters(),
                            profile_sync.create_profiles(uuid[])
    TO service_role;
  GRANT SELECT ON {{profile}} TO service_role;
  -- doctor (migrations, definitions, guards, backlog), backfill (records events), replay --events (makes failed
  -- rows pending)
  GRANT SELECT ON profile_sync.schema_migrations, profile_sync.definitions, profile_sync.definition_objects
    TO service_role;
  GRANT EXECUTE ON FUNCTION profile_sync.profile_references(), profile_sync.guard_name(name) TO service_role;
  GRANT SELECT, INSERT (user_id), UPDATE (failed_at, last_error, enqueued_at, job_id)
    ON profile_sync.signup_events TO service_role;
  BEGIN
    -- doctor and backfill count live users; Supabase owns auth.users, so this grant may not be ours to give
    GRANT SELECT (id, deleted_at, created_at) ON auth.users TO service_role;
  EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'profile_sync: could not grant SELECT on auth.users to service_role; run doctor and '
      'backfill as the migrations'' owner';
  END;
END $$;

-- For signed-in users only: the caller's own profile. Supabase's default privileges grant EXECUTE on new public
-- functions to anon, authenticated and service_role: take it back from all but authenticated. service_role
-- carries no user id (its JWT has no sub), so it could only ever get PT401.
REVOKE ALL ON FUNCTION public.ensure_profile() FROM PUBLIC;
DO $$
DECLARE
  r text;
BEGIN
  FOR r IN SELECT rolname FROM pg_catalog.pg_roles WHERE rolname IN ('anon', 'service_role') LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION public.ensure_profile() FROM %I', r);
  END LOOP;
END $$;
GRANT EXECUTE ON FUNCTION public.ensure_profile() TO authenticated;
