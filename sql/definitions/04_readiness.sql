-- Profile readiness for the chat service: NOTIFY `profile_sync_ready` with a profile id once that profile
-- exists, by any path (worker, backfill, a client guard, the app itself) -- but only for users someone waits on.
--
-- NOTIFY takes a cluster-wide lock at commit, so profile inserts must not notify when nobody listens.
-- A waiter registers in profile_waiters; the insert trigger notifies (and unregisters) only the waited-on ids.
--
-- Race freedom. A trigger runs before its transaction commits, so "waiter registers, then re-checks" alone could
-- miss a profile whose trigger already looked (no waiter yet) but which commits after the re-check. The lock-only
-- table readiness_barrier closes that gap:
--   * every profile-inserting statement takes ROW EXCLUSIVE on it before reading profile_waiters, held to commit;
--   * watch_profile registers, then takes SHARE on it (waits for inserts already past their check; inserts that
--     come later wait for the watcher's commit and then see its row), then re-checks.
-- ROW EXCLUSIVE locks don't conflict with each other (workers never wait on workers) and SHARE locks don't either
-- (waiters never wait on waiters). A waiter makes new profile inserts queue for as long as the profile inserts
-- already in flight take to commit: a few milliseconds for a worker batch.

CREATE OR REPLACE FUNCTION profile_sync.on_user_profiles_inserted() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  ready_id uuid;
BEGIN
  BEGIN
    LOCK TABLE profile_sync.readiness_barrier IN ROW EXCLUSIVE MODE;
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
      -- Our snapshot may predate a waiter that registered while we waited for the lock: notify every id.
      FOR ready_id IN SELECT DISTINCT n.{{profile_id}} FROM new_profiles n LOOP
        PERFORM pg_catalog.pg_notify('profile_sync_ready', ready_id::text);
      END LOOP;
      DELETE FROM profile_sync.profile_waiters w USING new_profiles n WHERE w.user_id = n.{{profile_id}};
    ELSIF EXISTS (SELECT 1 FROM profile_sync.profile_waiters) THEN
      FOR ready_id IN
        DELETE FROM profile_sync.profile_waiters w USING new_profiles n WHERE w.user_id = n.{{profile_id}}
        RETURNING w.user_id
      LOOP
        PERFORM pg_catalog.pg_notify('profile_sync_ready', ready_id::text);  -- duplicates collapse at commit
      END LOOP;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    -- Never fail a profile insert: a waiter that misses this wake-up falls back after its timeout.
    RAISE WARNING 'profile_sync: readiness not signalled (%: %)', SQLSTATE, SQLERRM;
  END;
  RETURN NULL;
END
$$;

-- Statement level with a transition table: one call per INSERT, however many rows a worker batch holds.
CREATE OR REPLACE TRIGGER profile_sync_on_user_profiles_inserted
  AFTER INSERT ON {{profile}}
  REFERENCING NEW TABLE AS new_profiles
  FOR EACH STATEMENT EXECUTE FUNCTION profile_sync.on_user_profiles_inserted();

-- Where a user's profile stands, without registering: 'ready', 'pending' or 'unknown' (as watch_profile).
CREATE OR REPLACE FUNCTION profile_sync.profile_state(p_user_id uuid) RETURNS text
LANGUAGE sql STABLE
SECURITY DEFINER
SET search_path = ''
AS $$
  SELECT CASE
    WHEN EXISTS (SELECT 1 FROM {{profile}} p WHERE p.{{profile_id}} = p_user_id) THEN 'ready'
    WHEN EXISTS (SELECT 1 FROM auth.users u WHERE u.id = p_user_id AND u.deleted_at IS NULL) THEN 'pending'
    ELSE 'unknown'
  END
$$;

-- Register a waiter for this user's profile and report where it stands, race-free (see above):
--   'ready'   the profile exists (nothing stays registered);
--   'unknown' no such user in auth.users, or soft-deleted (nothing stays registered);
--   'pending' registered as waiter_id: a NOTIFY on profile_sync_ready will carry the user id.
-- The caller must already LISTEN on profile_sync_ready from backend p_listener_pid.
CREATE OR REPLACE FUNCTION profile_sync.watch_profile(p_user_id uuid, p_listener_pid integer, p_lock_timeout_ms integer)
RETURNS TABLE (state text, waiter_id bigint)
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  new_id bigint;
BEGIN
  IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
    -- The re-check below must see inserts that commit while we wait for the barrier.
    RAISE EXCEPTION 'profile_sync.watch_profile needs READ COMMITTED isolation';
  END IF;
  PERFORM pg_catalog.set_config('lock_timeout', greatest(p_lock_timeout_ms, 1)::text, true);

  INSERT INTO profile_sync.profile_waiters (user_id, listener_pid)
  VALUES (p_user_id, p_listener_pid)
  RETURNING id INTO new_id;

  LOCK TABLE profile_sync.readiness_barrier IN SHARE MODE;

  state := profile_sync.profile_state(p_user_id);  -- a fresh snapshot: sees what committed while we waited
  IF state = 'pending' THEN
    RETURN QUERY SELECT state, new_id;
    RETURN;
  END IF;
  DELETE FROM profile_sync.profile_waiters w WHERE w.id = new_id;
  RETURN QUERY SELECT state, NULL::bigint;
END
$$;

-- Unregister waiters that gave up (timeout, reconnect). Waiters that were notified are already gone. A profile
-- insert that deleted those rows and has not committed (a wedged worker) must not hang the caller: after
-- lock_timeout it leaves them to that insert.
CREATE OR REPLACE FUNCTION profile_sync.unwatch_profiles(p_waiter_ids bigint[]) RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
SET lock_timeout = '1s'
AS $$
  DELETE FROM profile_sync.profile_waiters w WHERE w.id = ANY (p_waiter_ids)
$$;

-- Drop the registrations of LISTEN backends that no longer exist (a chat process killed while waiting).
CREATE OR REPLACE FUNCTION profile_sync.forget_dead_profile_waiters() RETURNS integer
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
  WITH gone AS (
    DELETE FROM profile_sync.profile_waiters w
    WHERE NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = w.listener_pid)
    RETURNING 1
  )
  SELECT count(*)::integer FROM gone
$$;
