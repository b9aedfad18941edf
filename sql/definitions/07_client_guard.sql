-- needs: chat
-- The client guarantee: a Supabase app's own inserts into the conversations table never fail with a foreign
-- key error (23503) because the user's profile is still on its way.
--
-- Who is a client. supabase-js / supabase-flutter reach the database through PostgREST, which runs each request
-- as `SET LOCAL ROLE authenticated` (or service_role, for a server holding the service key) with the JWT in
-- request.jwt.claims. Those two roles are the Supabase client roles; our own ChatService and other server roles
-- are not, and keep their contract (insert first, on 23503 wait for the readiness NOTIFY, bounded, fallback).
--
-- How. A BEFORE INSERT row trigger, restricted by its WHEN clause to requests under a client role: the `role`
-- setting, which PostgREST sets per request (set_config('role', ..., true), i.e. SET LOCAL ROLE). It is session
-- state, so it also holds inside an app's own SECURITY DEFINER function called by the request (where
-- current_user is that function's owner). Every other session (our ChatService, workers, migrations, the SQL
-- editor) has role 'none' or its own: the trigger costs one setting lookup there and no function call. For a
-- client the fast path is one index probe on the profile table's primary key inside the insert's own
-- statement: no extra round trip. Only when the profile is missing does it create it, with the worker's own
-- idempotent mapping profile_sync.create_profiles, inside the client's transaction (rolled back with it if the
-- insert fails for any other reason).
--
-- Errors an app sees:
--   PT404  the user does not exist in auth.users or is soft-deleted (HTTP 404, "code": "PT404"), never a bare
--          23503.
--   42501  an `authenticated` caller inserting a row for another user's id: row level security rejects it
--          (HTTP 403) and the trigger creates no profile for that user.
-- Isolation: PostgREST runs requests in READ COMMITTED. Under REPEATABLE READ a profile a worker commits
-- concurrently can make the inline creation fail with a serialization error (40001), to be retried.

CREATE OR REPLACE FUNCTION profile_sync.ensure_conversation_profile() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  -- The fast path: the profile exists (a NULL user_id is left to the table's NOT NULL constraint).
  IF NEW.user_id IS NULL OR EXISTS (SELECT 1 FROM {{profile}} p WHERE p.{{profile_id}} = NEW.user_id) THEN
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
  -- Re-read rather than trust the function's counts: whoever created the profile, it must exist now.
  PERFORM profile_sync.create_profiles(ARRAY[NEW.user_id]);
  IF NOT EXISTS (SELECT 1 FROM {{profile}} p WHERE p.{{profile_id}} = NEW.user_id) THEN
    RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', NEW.user_id
      USING ERRCODE = 'PT404',
            DETAIL = 'no profile can be created for a user missing from auth.users or soft-deleted',
            HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
  END IF;
  RETURN NEW;
END
$$;

-- Two triggers on one function: `authenticated` may have only its own profile created; `service_role` (a
-- server with the service key, RLS bypassed) may insert for any existing user.
CREATE OR REPLACE TRIGGER profile_sync_ensure_profile
  BEFORE INSERT ON {{chat}}
  FOR EACH ROW
  WHEN (pg_catalog.current_setting('role') = 'authenticated')
  EXECUTE FUNCTION profile_sync.ensure_conversation_profile('own');

CREATE OR REPLACE TRIGGER profile_sync_ensure_profile_service
  BEFORE INSERT ON {{chat}}
  FOR EACH ROW
  WHEN (pg_catalog.current_setting('role') = 'service_role')
  EXECUTE FUNCTION profile_sync.ensure_conversation_profile('any');
