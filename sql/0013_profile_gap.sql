-- Users without a profile, for the publisher's /metrics (profilesync_users_without_profile and
-- profilesync_users_unrecorded) and doctor. SECURITY DEFINER: the publisher's login role reads neither
-- auth.users nor the profile table, and needs only these two numbers.
CREATE OR REPLACE FUNCTION profile_sync.profile_gap(OUT without_profile bigint, OUT unrecorded bigint)
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
  SELECT count(*),
         count(*) FILTER (WHERE NOT EXISTS (SELECT 1 FROM profile_sync.signup_events e WHERE e.user_id = u.id))
  FROM auth.users u
  WHERE u.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM public.user_profiles p WHERE p.id = u.id)
$$;
REVOKE ALL ON FUNCTION profile_sync.profile_gap() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION profile_sync.profile_gap() TO profilesync_publisher;
