-- Signup→profile latency for the workers' histogram (profilesync_signup_to_profile_seconds), at no extra round
-- trip: a worker with metrics on calls this in the same statement as profile_sync.create_profiles. A STABLE
-- function reads the calling statement's snapshot, so it sees the batch as it was before create_profiles
-- inserted profiles and deleted events, whichever of the two the planner runs first.
--
-- The age is measured from the user's outbox row (written in the signup transaction, or by backfill/sweeper
-- for users recorded later, whose auth.users.created_at may be months old) to now(), the transaction time that
-- the new profile's created_at also gets. Only users that get their profile in this call count: present,
-- not soft-deleted, without a profile yet.
CREATE FUNCTION profile_sync.signup_ages(user_ids uuid[]) RETURNS double precision[]
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
  SELECT coalesce(pg_catalog.array_agg(s.age), '{}')
  FROM (
    SELECT EXTRACT(EPOCH FROM pg_catalog.now() - pg_catalog.min(e.created_at))::double precision AS age
    FROM profile_sync.signup_events e
    JOIN auth.users u ON u.id = e.user_id AND u.deleted_at IS NULL
    WHERE e.user_id = ANY (user_ids)
      AND NOT EXISTS (SELECT 1 FROM public.user_profiles p WHERE p.id = e.user_id)
    GROUP BY e.user_id
  ) s
$$;

REVOKE ALL ON FUNCTION profile_sync.signup_ages(uuid[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION profile_sync.signup_ages(uuid[]) TO profilesync_worker;

-- Never callable by Supabase's API roles, whatever default privileges the project has (as in 0004).
DO $$
DECLARE
  r text;
BEGIN
  FOR r IN SELECT rolname FROM pg_catalog.pg_roles WHERE rolname IN ('anon', 'authenticated') LOOP
    EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION profile_sync.signup_ages(uuid[]) FROM %I', r);
  END LOOP;
END $$;
