-- Signup→profile latency for the workers' histogram (profilesync_signup_to_profile_seconds), at no extra round
-- trip: a worker with metrics on calls this in the same statement as profile_sync.create_profiles. A STABLE
-- function reads the calling statement's snapshot, so it sees the batch as it was before create_profiles
-- inserted profiles and deleted events, whichever of the two the planner runs first.
--
-- The age is measured from the user's outbox row (written in the signup transaction, or by backfill/sweeper
-- for users recorded later, whose auth.users.created_at may be months old) to now(), the transaction time that
-- the new profile's created_at also gets. Only users that get their profile in this call count: present,
-- not soft-deleted, without a profile yet.
--
-- The batch drives the plan (unnest, then index lookups): a SQL function runs a generic plan, and with
-- `e.user_id = ANY (user_ids)` that plan scanned every auth.users row against the array (52 ms for 250 users
-- in a fresh database, instead of ~2).
CREATE FUNCTION profile_sync.signup_ages(user_ids uuid[]) RETURNS double precision[]
LANGUAGE sql
STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
  SELECT coalesce(pg_catalog.array_agg(s.age), '{}')
  FROM (
    SELECT EXTRACT(EPOCH FROM pg_catalog.now() - pg_catalog.min(e.created_at))::double precision AS age
    FROM pg_catalog.unnest(user_ids) AS x(id)
    JOIN profile_sync.signup_events e ON e.user_id = x.id
    JOIN auth.users u ON u.id = x.id AND u.deleted_at IS NULL
    WHERE NOT EXISTS (SELECT 1 FROM public.user_profiles p WHERE p.id = x.id)
    GROUP BY x.id
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
