-- Profile readiness for the chat service: NOTIFY `profile_sync_ready` once a waited-for profile exists, by any
-- path (worker, backfill, a client guard, the app itself) -- but only for users someone waits on: NOTIFY takes
-- a cluster-wide lock at commit, so profile inserts must not notify when nobody listens.
--
-- NOTIFY channels are readable by any session that LISTENs (no privilege is needed), so neither channel
-- carries anything about a user:
--   profile_sync_signup  an empty payload: "the outbox has rows", the publisher drains the table anyway;
--   profile_sync_ready   a waiter's token, an opaque random value the waiter chose when it registered in
--                        profile_sync.profile_waiters (readable only by the migrations' owner), or an empty
--                        payload, "every waiter checks again".
--
-- Race freedom without a lock that profile inserts wait for. A trigger runs before its transaction commits,
-- so "waiter registers, then re-checks" alone could miss a profile whose insert already looked for waiters
-- (none yet) but commits after the re-check. Every profile-inserting statement therefore takes, before it
-- looks for waiters, a transaction-level advisory lock whose key is unique to its transaction (the low 32
-- bits of its xid, under a class that says which users it inserts, see readiness_class). Nobody else ever
-- asks for that key in a mode that conflicts with anything but its holder, so inserts never wait for it. A
-- waiter (1) registers and commits, then (2) in recheck_profile waits for the holders of the keys of its
-- user's class that exist at that moment, and reads the profile with a fresh snapshot. An insert that looked
-- for waiters before the registration committed took its key before that, so step 2 either sees it in
-- pg_locks and waits for its end, or it had already committed: either way the re-check sees its profile.
-- An insert that looked after the registration committed finds the waiter and NOTIFYs its token.
--
-- Waiters wait for inserts, never the other way round: a client transaction that creates one profile and
-- stays open for a long time delays only waiters of that user (whose profile it holds), and workers never.

-- The high 32 bits of a readiness key (the low 32 bits are the inserting transaction's xid): per user for
-- a statement of a few rows (a client's inline creation, ensure_profile, a one-user job), in [2^30, 2^31);
-- one shared class for bigger statements (a worker batch), below 2^30. A waiter waits for the holders of
-- its user's class and of the shared class, so a long transaction that created one profile holds up only
-- that user's waiters. Application advisory locks in this range could only make a waiter wait (bounded).
CREATE OR REPLACE FUNCTION profile_sync.readiness_class(p_user_id uuid) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT CASE WHEN p_user_id IS NULL THEN 810697817  -- the shared class
              ELSE 1073741824 + (pg_catalog.uuid_hash(p_user_id) & 1073741823)::bigint END
$$;

CREATE OR REPLACE FUNCTION profile_sync.on_user_profiles_inserted() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  xact bigint;
  ready uuid;
BEGIN
  BEGIN
    -- First the key (never waited for: unique to this transaction), then the look for waiters.
    xact := pg_catalog.pg_current_xact_id()::text::bigint % 4294967296;
    IF (SELECT count(*) FROM (SELECT 1 FROM new_profiles LIMIT 9) few) <= 8 THEN
      PERFORM pg_catalog.pg_advisory_xact_lock(profile_sync.readiness_class(n.{{profile_id}}) * 4294967296 + xact)
      FROM new_profiles n;
    ELSE
      PERFORM pg_catalog.pg_advisory_xact_lock(profile_sync.readiness_class(NULL) * 4294967296 + xact);
    END IF;
    IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
      -- Our snapshot may predate a waiter that registered since: every waiter checks again.
      PERFORM pg_catalog.pg_notify('profile_sync_ready', '');
    ELSIF EXISTS (SELECT 1 FROM profile_sync.profile_waiters) THEN
      -- Only reads: each waiter removes its own registration, so this never waits for a row lock.
      FOR ready IN
        SELECT w.token FROM profile_sync.profile_waiters w JOIN new_profiles n ON n.{{profile_id}} = w.user_id
      LOOP
        PERFORM pg_catalog.pg_notify('profile_sync_ready', ready::text);
      END LOOP;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    -- Never fail a profile insert: a waiter that misses this wake-up reads the profile at its deadline.
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

-- Step 1: register a waiter for this user's profile under p_token (the caller's random token, already
-- known to its LISTEN thread, so a NOTIFY that comes at once is not missed) and report where the profile
-- stands: 'ready' and 'unknown' (no such user, or soft-deleted) register nothing; 'pending' registers.
-- The caller must already LISTEN on profile_sync_ready from backend p_listener_pid, and commit this before
-- step 2 (autocommit).
CREATE OR REPLACE FUNCTION profile_sync.watch_profile(p_user_id uuid, p_listener_pid integer, p_token uuid)
RETURNS text
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
  WITH s AS (
    SELECT profile_sync.profile_state(p_user_id) AS state
  ), registered AS (
    INSERT INTO profile_sync.profile_waiters (user_id, listener_pid, token)
    SELECT p_user_id, p_listener_pid, p_token FROM s WHERE s.state = 'pending'
  )
  SELECT s.state FROM s
$$;

-- Step 2: wait at most p_lock_timeout_ms for the profile inserts in flight that may have looked for waiters
-- before step 1 committed (see above), then report where the profile stands, as profile_state.
CREATE OR REPLACE FUNCTION profile_sync.recheck_profile(p_user_id uuid, p_lock_timeout_ms integer) RETURNS text
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  inserting bigint;
BEGIN
  IF pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
    -- The re-check below must see inserts that commit while we wait for them.
    RAISE EXCEPTION 'profile_sync.recheck_profile needs READ COMMITTED isolation';
  END IF;
  PERFORM pg_catalog.set_config('lock_timeout', greatest(p_lock_timeout_ms, 1)::text, true);
  FOR inserting IN
    SELECT l.classid::bigint * 4294967296 + l.objid::bigint
    FROM pg_catalog.pg_locks l
    WHERE l.locktype = 'advisory' AND l.objsubid = 1 AND l.mode = 'ExclusiveLock' AND l.granted
      AND l.database = (SELECT d.oid FROM pg_catalog.pg_database d
                        WHERE d.datname = pg_catalog.current_database())
      AND l.classid::bigint IN (profile_sync.readiness_class(p_user_id), profile_sync.readiness_class(NULL))
  LOOP
    PERFORM pg_catalog.pg_advisory_xact_lock_shared(inserting);  -- returns once that transaction ended
  END LOOP;
  RETURN profile_sync.profile_state(p_user_id);  -- a fresh snapshot: sees what committed while we waited
END
$$;

-- Remove a caller's registrations (when its wait ends, whichever way). Rows another session is deleting
-- (forget_dead_profile_waiters) are skipped, not waited for.
CREATE OR REPLACE FUNCTION profile_sync.unwatch_profiles(p_tokens uuid[]) RETURNS void
LANGUAGE sql
SECURITY DEFINER
SET search_path = ''
AS $$
  DELETE FROM profile_sync.profile_waiters w
  WHERE w.id IN (SELECT x.id FROM profile_sync.profile_waiters x WHERE x.token = ANY (p_tokens)
                 FOR UPDATE SKIP LOCKED)
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
