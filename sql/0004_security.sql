-- Least privilege: login roles for the publisher and the workers, nothing executable by Supabase's API roles,
-- and row level security on the application tables.
--
-- Roles are cluster-wide: another database of the same cluster may have created them already, concurrently
-- even. They are created LOGIN without a password; an operator sets one (ALTER ROLE ... PASSWORD) or relies on
-- the server's own authentication (peer, certificates). A role that already exists is left as it is.

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['profilesync_worker', 'profilesync_publisher'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN', r);
      EXCEPTION
        WHEN duplicate_object OR unique_violation THEN
          NULL;  -- another database's migration created it concurrently
        WHEN insufficient_privilege THEN
          RAISE EXCEPTION 'profile_sync: the migrating role may not create role %', r
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format('an administrator runs CREATE ROLE %I LOGIN, then migrate again', r);
      END;
    END IF;
  END LOOP;
END $$;

-- The publisher: claim pending events, mark them enqueued, re-check stale ones; announce itself idle or busy.
-- It never reads last_error (a failure's text may quote the profile row, email included).
GRANT USAGE ON SCHEMA profile_sync TO profilesync_publisher;
GRANT SELECT (id, user_id, created_at, enqueued_at, job_id, failed_at),
      UPDATE (enqueued_at, job_id)  -- FOR UPDATE SKIP LOCKED needs UPDATE on a column
  ON profile_sync.signup_events TO profilesync_publisher;
GRANT SELECT, INSERT, UPDATE, DELETE ON profile_sync.publishers TO profilesync_publisher;

-- The worker: create profiles (the function does the rest as its owner) and mark a user's failure.
GRANT USAGE ON SCHEMA profile_sync TO profilesync_worker;
GRANT EXECUTE ON FUNCTION profile_sync.create_profiles(uuid[]) TO profilesync_worker;
GRANT SELECT (user_id), UPDATE (failed_at, last_error) ON profile_sync.signup_events TO profilesync_worker;

-- Nothing of ours is executable or readable by PUBLIC or Supabase's API roles (anon, authenticated), whatever
-- default privileges the project has. Every function of ours: SECURITY DEFINER ones run as their owner.
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
    FOR fn IN
      SELECT p.oid::regprocedure FROM pg_catalog.pg_proc p
      WHERE p.pronamespace = 'profile_sync'::regnamespace
    LOOP
      EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM %s', fn, grantee);
    END LOOP;
    EXECUTE pg_catalog.format('REVOKE ALL ON ALL TABLES IN SCHEMA profile_sync FROM %s', grantee);
    EXECUTE pg_catalog.format('REVOKE ALL ON ALL SEQUENCES IN SCHEMA profile_sync FROM %s', grantee);
    EXECUTE pg_catalog.format('REVOKE ALL ON SCHEMA profile_sync FROM %s', grantee);
  END LOOP;
END $$;

-- Row level security, Supabase style: a signed-in user reads and edits their own profile, and reads, starts
-- and deletes their own conversations; anon gets nothing. Our SECURITY DEFINER functions run as the tables'
-- owner, which RLS does not restrict (no FORCE), and so do foreign key checks.
--
-- 0001 creates these tables only when absent. If a table already has policies (an existing project's own),
-- they are kept as they are and ours are not added: permissive policies add up, ours could widen theirs.
ALTER TABLE public.user_profiles ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.chat_conversations ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
  IF (SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname IN ('anon', 'authenticated')) < 2
     OR pg_catalog.to_regprocedure('auth.uid()') IS NULL THEN
    RAISE EXCEPTION 'profile_sync: roles anon, authenticated and function auth.uid() are missing'
      USING HINT = 'point DATABASE_URL at a Supabase database, or run migrate --dev-auth-stub on plain PostgreSQL';
  END IF;

  IF NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = 'public.user_profiles'::regclass
  ) THEN
    CREATE POLICY profile_sync_select_own_profile ON public.user_profiles
      FOR SELECT TO authenticated USING (id = (SELECT auth.uid()));
    CREATE POLICY profile_sync_update_own_profile ON public.user_profiles
      FOR UPDATE TO authenticated
      USING (id = (SELECT auth.uid())) WITH CHECK (id = (SELECT auth.uid()));
    REVOKE ALL ON public.user_profiles FROM anon, authenticated;
    GRANT SELECT, UPDATE (full_name, avatar_url, preferences, updated_at)
      ON public.user_profiles TO authenticated;
  END IF;

  IF NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_policy WHERE polrelid = 'public.chat_conversations'::regclass
  ) THEN
    CREATE POLICY profile_sync_select_own_conversations ON public.chat_conversations
      FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
    CREATE POLICY profile_sync_insert_own_conversations ON public.chat_conversations
      FOR INSERT TO authenticated WITH CHECK (user_id = (SELECT auth.uid()));
    CREATE POLICY profile_sync_delete_own_conversations ON public.chat_conversations
      FOR DELETE TO authenticated USING (user_id = (SELECT auth.uid()));
    REVOKE ALL ON public.chat_conversations FROM anon, authenticated;
    GRANT SELECT, INSERT (user_id, title), DELETE ON public.chat_conversations TO authenticated;
  END IF;
END $$;
