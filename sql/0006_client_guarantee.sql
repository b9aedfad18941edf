-- The client guarantee: a Supabase app's own inserts into public.chat_conversations never fail with a foreign key
-- error (23503) because the user's profile is still on its way, and an RPC that ensures the caller's profile.
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
-- client the fast path is one index probe on user_profiles' primary key inside the insert's own statement: no
-- extra round trip. Only when the profile is missing does it create it, with the worker's own idempotent
-- mapping profile_sync.create_profiles, inside the client's transaction (rolled back with it if the insert
-- fails for any other reason).
--
-- Errors an app sees (PostgREST forwards code, message, details and hint as JSON):
--   PT404  the user does not exist in auth.users or is soft-deleted (the session's account is gone). PostgREST
--          turns SQLSTATE PTxxx into HTTP status xxx: 404, with "code": "PT404". Never a bare 23503.
--   PT401  public.ensure_profile() called without a user id in the JWT claims (HTTP 401).
--   42501  an `authenticated` caller inserting a conversation for another user's id: row level security rejects
--          it (HTTP 403) and the trigger creates no profile for that user.
-- Isolation: PostgREST runs requests in READ COMMITTED. Under REPEATABLE READ a profile a worker commits
-- concurrently can make the inline creation fail with a serialization error (40001), to be retried.

CREATE FUNCTION profile_sync.ensure_conversation_profile() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  -- The fast path: the profile exists (a NULL user_id is left to the table's NOT NULL constraint).
  IF NEW.user_id IS NULL OR EXISTS (SELECT 1 FROM public.user_profiles p WHERE p.id = NEW.user_id) THEN
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
  IF NOT EXISTS (SELECT 1 FROM public.user_profiles p WHERE p.id = NEW.user_id) THEN
    RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', NEW.user_id
      USING ERRCODE = 'PT404',
            DETAIL = 'no profile can be created for a user missing from auth.users or soft-deleted',
            HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
  END IF;
  RETURN NEW;
END
$$;

REVOKE ALL ON FUNCTION profile_sync.ensure_conversation_profile() FROM PUBLIC, anon, authenticated;

-- Two triggers on one function: `authenticated` may have only its own profile created; `service_role` (a
-- server with the service key, RLS bypassed) may insert for any existing user.
CREATE TRIGGER profile_sync_ensure_profile
  BEFORE INSERT ON public.chat_conversations
  FOR EACH ROW
  WHEN (pg_catalog.current_setting('role') = 'authenticated')
  EXECUTE FUNCTION profile_sync.ensure_conversation_profile('own');

CREATE TRIGGER profile_sync_ensure_profile_service
  BEFORE INSERT ON public.chat_conversations
  FOR EACH ROW
  WHEN (pg_catalog.current_setting('role') = 'service_role')
  EXECUTE FUNCTION profile_sync.ensure_conversation_profile('any');

-- The caller's own profile, created if missing ("seed layer 2": call it on sign-in and on every auth state
-- change; harmless on every app start). In schema public so PostgREST exposes it as POST /rpc/ensure_profile.
-- The fast path is one primary-key lookup. Only auth.uid() is ever used: no argument names another user.
CREATE FUNCTION public.ensure_profile() RETURNS public.user_profiles
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  caller uuid := auth.uid();
  profile public.user_profiles;
BEGIN
  SELECT p.* INTO profile FROM public.user_profiles p WHERE p.id = caller;
  IF FOUND THEN
    RETURN profile;
  END IF;
  IF caller IS NULL THEN
    RAISE EXCEPTION 'profile_sync: ensure_profile needs a signed-in user'
      USING ERRCODE = 'PT401',
            HINT = 'call it with the session of a signed-in user (request.jwt.claims has no sub)';
  END IF;
  PERFORM profile_sync.create_profiles(ARRAY[caller]);
  SELECT p.* INTO profile FROM public.user_profiles p WHERE p.id = caller;
  IF NOT FOUND THEN
    RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', caller
      USING ERRCODE = 'PT404',
            DETAIL = 'no profile can be created for a user missing from auth.users or soft-deleted',
            HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
  END IF;
  RETURN profile;
END
$$;

-- For signed-in users only. Supabase's default privileges grant EXECUTE on new public functions to anon,
-- authenticated and service_role: take it back from all but authenticated. service_role carries no user id
-- (its JWT has no sub), so it could only ever get PT401.
REVOKE ALL ON FUNCTION public.ensure_profile() FROM PUBLIC, anon;
GRANT EXECUTE ON FUNCTION public.ensure_profile() TO authenticated;
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = 'service_role') THEN
    REVOKE ALL ON FUNCTION public.ensure_profile() FROM service_role;
  END IF;
END $$;

-- PostgREST caches the schema: ask it to reload so /rpc/ensure_profile exists at once (a no-op without it).
NOTIFY pgrst, 'reload schema';
