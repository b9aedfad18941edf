-- needs: chat
-- Row level security, Supabase style: a signed-in user reads and edits their own profile, and reads, starts and
-- deletes their own conversations; anon gets nothing. Our SECURITY DEFINER functions run as the tables' owner,
-- which RLS does not restrict (no FORCE), and so do foreign key checks.
--
-- A table that has policies of its own (an existing project's, not named profile_sync_*) keeps them as they
-- are and gets none of ours, nor our grants to the API roles: permissive policies add up, ours could widen
-- theirs. Otherwise our policies are (re)created here, exactly as below.

ALTER TABLE {{profile}} ENABLE ROW LEVEL SECURITY;
ALTER TABLE {{chat}} ENABLE ROW LEVEL SECURITY;

DO $$
BEGIN
  IF (SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname IN ('anon', 'authenticated')) < 2
     OR pg_catalog.to_regprocedure('auth.uid()') IS NULL THEN
    RAISE EXCEPTION 'profile_sync: roles anon, authenticated and function auth.uid() are missing'
      USING HINT = 'point DATABASE_URL at a Supabase database, or run migrate --dev-auth-stub on plain PostgreSQL';
  END IF;

  IF NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_policy
    WHERE polrelid = {{profile_literal}}::pg_catalog.regclass AND polname NOT LIKE 'profile\_sync\_%'
  ) THEN
    DROP POLICY IF EXISTS profile_sync_select_own_profile ON {{profile}};
    DROP POLICY IF EXISTS profile_sync_update_own_profile ON {{profile}};
    CREATE POLICY profile_sync_select_own_profile ON {{profile}}
      FOR SELECT TO authenticated USING ({{profile_id}} = (SELECT auth.uid()));
    CREATE POLICY profile_sync_update_own_profile ON {{profile}}
      FOR UPDATE TO authenticated
      USING ({{profile_id}} = (SELECT auth.uid())) WITH CHECK ({{profile_id}} = (SELECT auth.uid()));
    REVOKE ALL ON {{profile}} FROM anon, authenticated;
    GRANT SELECT, UPDATE (full_name, avatar_url, preferences, updated_at) ON {{profile}} TO authenticated;
  END IF;

  IF NOT EXISTS (
    SELECT 1 FROM pg_catalog.pg_policy
    WHERE polrelid = {{chat_literal}}::pg_catalog.regclass AND polname NOT LIKE 'profile\_sync\_%'
  ) THEN
    DROP POLICY IF EXISTS profile_sync_select_own_conversations ON {{chat}};
    DROP POLICY IF EXISTS profile_sync_insert_own_conversations ON {{chat}};
    DROP POLICY IF EXISTS profile_sync_delete_own_conversations ON {{chat}};
    CREATE POLICY profile_sync_select_own_conversations ON {{chat}}
      FOR SELECT TO authenticated USING (user_id = (SELECT auth.uid()));
    CREATE POLICY profile_sync_insert_own_conversations ON {{chat}}
      FOR INSERT TO authenticated WITH CHECK (user_id = (SELECT auth.uid()));
    CREATE POLICY profile_sync_delete_own_conversations ON {{chat}}
      FOR DELETE TO authenticated USING (user_id = (SELECT auth.uid()));
    REVOKE ALL ON {{chat}} FROM anon, authenticated;
    GRANT SELECT, INSERT (user_id, title), DELETE ON {{chat}} TO authenticated;
  END IF;
END $$;

-- The chat service, run as service_role: read and start conversations (Supabase's own grants give it the
-- application's tables already; plain PostgreSQL with the dev stub does not).
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
    GRANT SELECT, INSERT (user_id, title) ON {{chat}} TO service_role;
  END IF;
END $$;
