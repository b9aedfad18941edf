-- What the publisher calls besides claiming events: announcing whether it is idle, and the sweeper.

-- A publisher records whether it is idle (or, after registering/unregistering, just refreshes the count) and
-- the count of idle publishers goes to the sequence profile_sync.idle_publishers, which the auth.users
-- triggers read. setval is not transactional: the value is visible at once, to signups already in flight
-- too. The table lock serialises publishers announcing at the same time, so the last count written is a
-- count of committed states, never a stale one.
CREATE OR REPLACE FUNCTION profile_sync.announce_publisher(p_backend_pid integer, p_idle boolean) RETURNS void
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  LOCK TABLE profile_sync.publishers IN SHARE ROW EXCLUSIVE MODE;
  UPDATE profile_sync.publishers SET idle = p_idle, updated_at = pg_catalog.now()
  WHERE backend_pid = p_backend_pid;
  PERFORM pg_catalog.setval(
    'profile_sync.idle_publishers', (SELECT count(*) FROM profile_sync.publishers p WHERE p.idle), true
  );
END
$$;

-- The sweeper: users whose profile is out of step and who have no outbox row get one, so the worker brings
-- them in step: live users without a profile (their signup's trigger gave up on a lock, ran while our schema
-- was broken, or they signed up before the install), and soft-deleted users whose profile still holds
-- a mapped value (written by something that bypassed the FOR SHARE rule of sync_profiles: an app's own insert,
-- a restore). One call examines the next p_limit users by primary key after p_after (NULL: from the start)
-- and returns the last id it examined (NULL once past the end: start over), so its cost is bounded by p_limit
-- whatever the number of users (one anti-join over every user costs seconds at 1,000,000; a slice of 50,000
-- tens of milliseconds).
-- Failed users keep their failed row and are not swept (that is `profilesync replay --events`' business).
-- Races: a signup still in flight is invisible until it commits with its own row; sync_profiles writes the
-- profile and deletes the rows in one transaction, so the statement's snapshot sees one or the other; a
-- concurrent backfill may record a user twice, which the idempotent path absorbs.
-- Planned with the actual values (EXECUTE): a generic plan guesses that a third of auth.users follows p_after
-- and scans it all. The probes are scalar subqueries, one index lookup per user of the slice: as NOT EXISTS
-- the planner turns them into hash anti-joins that read every profile, whatever the slice.
CREATE OR REPLACE FUNCTION profile_sync.record_unrecorded_users(p_after uuid, p_limit integer)
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
      WHERE CASE WHEN s.deleted_at IS NULL
                 THEN (SELECT p.{{profile_id}} FROM {{profile}} p WHERE p.{{profile_id}} = s.id) IS NULL
                 ELSE coalesce((SELECT {{profile_personal}} FROM {{profile}} p WHERE p.{{profile_id}} = s.id),
                               false)
            END
        AND (SELECT e.id FROM profile_sync.signup_events e WHERE e.user_id = s.id LIMIT 1) IS NULL
      RETURNING 1
    )
    SELECT CASE WHEN (SELECT count(*) FROM slice) = %s
                THEN (SELECT s.id FROM slice s ORDER BY s.id DESC LIMIT 1) END,
           (SELECT count(*)::integer FROM inserted)
  $q$, coalesce(p_after, '00000000-0000-0000-0000-000000000000'::uuid), p_limit, p_limit);
END
$$;

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
  WHERE u.deleted_at IS NULL
    AND NOT EXISTS (SELECT 1 FROM {{profile}} p WHERE p.{{profile_id}} = u.id)
$$;
