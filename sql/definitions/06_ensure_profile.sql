-- The caller's own profile, created if missing: call it on sign-in and on every auth state change (harmless on
-- every app start). In schema public so PostgREST exposes it as POST /rpc/ensure_profile. The fast path is one
-- primary-key lookup. Only auth.uid() is ever used: no argument names another user. Only for a live user: a
-- soft-deleted user's still-valid JWT gets PT404 as a deleted user's does, never the (scrubbed) row.
--
-- Errors an app sees (PostgREST forwards code, message, details and hint as JSON, and turns SQLSTATE PTxxx
-- into HTTP status xxx):
--   PT401  called without a user id in the JWT claims;
--   PT404  the user does not exist in auth.users or is soft-deleted (the session's account is gone).
CREATE OR REPLACE FUNCTION public.ensure_profile() RETURNS {{profile}}
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  caller uuid := auth.uid();
  profile {{profile}};
BEGIN
  SELECT p.* INTO profile FROM {{profile}} p
  WHERE p.{{profile_id}} = caller
    AND EXISTS (SELECT 1 FROM auth.users u WHERE u.id = caller AND u.deleted_at IS NULL);
  IF FOUND THEN
    RETURN profile;
  END IF;
  IF caller IS NULL THEN
    RAISE EXCEPTION 'profile_sync: ensure_profile needs a signed-in user'
      USING ERRCODE = 'PT401',
            HINT = 'call it with the session of a signed-in user (request.jwt.claims has no sub)';
  END IF;
  PERFORM profile_sync.create_profiles(ARRAY[caller]);
  SELECT p.* INTO profile FROM {{profile}} p
  WHERE p.{{profile_id}} = caller
    AND EXISTS (SELECT 1 FROM auth.users u WHERE u.id = caller AND u.deleted_at IS NULL);
  IF NOT FOUND THEN
    RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', caller
      USING ERRCODE = 'PT404',
            DETAIL = 'no profile can be created for a user missing from auth.users or soft-deleted',
            HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
  END IF;
  RETURN profile;
END
$$;

-- PostgREST caches the schema: ask it to reload so /rpc/ensure_profile exists at once (a no-op without it).
NOTIFY pgrst, 'reload schema';
