-- The client guarantee: a Supabase app's own inserts into any table that references the profile table never fail
-- with a foreign key error (23503) because the user's profile is still on its way.
--
-- Who is a client. supabase-js / supabase-flutter reach the database through PostgREST, which runs each request
-- as `SET LOCAL ROLE authenticated` (or service_role, for a server holding the service key) with the JWT in
-- request.jwt.claims. Those two roles are the Supabase client roles; our own ChatService and other server roles
-- are not, and keep their contract (insert first, on 23503 wait for the readiness NOTIFY, bounded, fallback).
--
-- How. On every foreign key column that references the profile table's primary key, whatever its schema, table
-- and name (discovered from the catalog each time this definition is applied; doctor names a referencing table
-- added since), a BEFORE INSERT OR UPDATE OF that column row trigger, restricted by its WHEN clause to requests
-- under a client role: the `role` setting, which PostgREST sets per request (set_config('role', ..., true), i.e.
-- SET LOCAL ROLE). It is session state, so it also holds inside an app's own SECURITY DEFINER function called
-- by the request (where current_user is that function's owner). Every other session (our ChatService,
-- workers, migrations, the SQL editor) has role 'none' or its own: the trigger costs one setting lookup there
-- and no function call. For a client the fast path is one index probe on the profile table's primary key
-- inside the insert's own statement: no extra round trip. Only when the profile is missing does it create it,
-- with the worker's own idempotent mapping profile_sync.create_profiles, inside the client's transaction
-- (rolled back with it if the insert fails for any other reason).
--
-- Errors an app sees:
--   PT404  the user does not exist in auth.users or is soft-deleted (HTTP 404, "code": "PT404"), never a bare
--          23503. A soft-deleted user is gone: their still-valid JWT gets PT404 as a deleted user's does, also
--          when a (scrubbed) profile exists.
--   42501  an `authenticated` caller writing another user's id where row level security forbids it (HTTP 403);
--          the trigger creates no profile for another user (without such a policy the foreign key decides).
-- Isolation: PostgREST runs requests in READ COMMITTED. Under REPEATABLE READ a profile a worker commits
-- concurrently can make the inline creation fail with a serialization error (40001), to be retried.

-- Every single-column foreign key that references the profile table's primary key (partitions' copies of a
-- partitioned table's key excluded: the trigger on the partitioned table covers them).
CREATE OR REPLACE FUNCTION profile_sync.profile_references()
RETURNS TABLE (referencing pg_catalog.regclass, column_name name)
LANGUAGE sql STABLE
SET search_path = ''
AS $$
  SELECT c.conrelid::pg_catalog.regclass, a.attname
  FROM pg_catalog.pg_constraint c
  JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
  JOIN pg_catalog.pg_attribute k ON k.attrelid = c.confrelid AND k.attnum = c.confkey[1]
  WHERE c.contype = 'f'
    AND c.conparentid = 0
    AND c.confrelid = {{profile_literal}}::pg_catalog.regclass
    AND pg_catalog.cardinality(c.conkey) = 1
    AND k.attname = {{profile_id_literal}}
$$;

-- The guard trigger's name on a referencing table, one per column (trigger names are per table, at most 63
-- bytes: a long column name is shortened with a digest that keeps two such columns apart).
CREATE OR REPLACE FUNCTION profile_sync.guard_name(column_name name) RETURNS name
LANGUAGE sql IMMUTABLE PARALLEL SAFE
SET search_path = ''
AS $$
  SELECT (CASE WHEN pg_catalog.octet_length(column_name) <= 44 THEN 'profile_sync_guard_' || column_name
               ELSE 'profile_sync_guard_' || pg_catalog.left(column_name, 20) || '_'
                    || pg_catalog.left(pg_catalog.md5(column_name), 12) END)::name
$$;

-- TG_ARGV[0] names the referencing column. A signed-in user only ever gets their own profile created. BEFORE
-- ROW triggers run before row level security's WITH CHECK, so for another user's id we step aside and let RLS
-- (inside an app's SECURITY DEFINER function, which RLS does not restrict, the foreign key) decide: otherwise
-- the caller would touch another user's rows, and PT404 against RLS's 42501 would tell them which user ids
-- exist. service_role (a server with the service key, RLS bypassed) may write any existing user's id.
CREATE OR REPLACE FUNCTION profile_sync.guard_profile_reference() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
DECLARE
  referenced uuid := pg_catalog.to_jsonb(NEW) ->> TG_ARGV[0];
BEGIN
  -- A NULL is left to the column's own constraints.
  IF referenced IS NULL THEN
    RETURN NEW;
  END IF;
  -- The fast path: the profile exists and its user is live (two primary-key probes, no extra round trip).
  IF EXISTS (
    SELECT 1 FROM {{profile}} p JOIN auth.users u ON u.id = p.{{profile_id}}
    WHERE p.{{profile_id}} = referenced AND u.deleted_at IS NULL
  ) THEN
    RETURN NEW;
  END IF;
  IF pg_catalog.current_setting('role') = 'authenticated' AND referenced IS DISTINCT FROM (SELECT auth.uid()) THEN
    RETURN NEW;
  END IF;
  -- Idempotent: a worker creating the same profile concurrently makes this wait for it and do nothing.
  -- Re-read rather than trust the function's counts: whoever created the profile, it must exist now, for a
  -- user that is live (create_profiles holds its FOR SHARE lock on the user until this transaction ends).
  PERFORM profile_sync.create_profiles(ARRAY[referenced]);
  IF NOT EXISTS (
    SELECT 1 FROM {{profile}} p JOIN auth.users u ON u.id = p.{{profile_id}}
    WHERE p.{{profile_id}} = referenced AND u.deleted_at IS NULL
  ) THEN
    RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', referenced
      USING ERRCODE = 'PT404',
            DETAIL = 'no profile can be created for a user missing from auth.users or soft-deleted',
            HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
  END IF;
  RETURN NEW;
END
$$;

-- One guard per referencing column, and none left where the foreign key is gone. The conversations table's
-- two triggers on a conversation-only function are replaced by this guard (dropping that function drops them).
DROP FUNCTION IF EXISTS profile_sync.ensure_conversation_profile() CASCADE;
DO $$
DECLARE
  ref record;
  stale record;
  kept text[] := '{}';
BEGIN
  FOR ref IN SELECT r.referencing, r.column_name FROM profile_sync.profile_references() r ORDER BY 1, 2 LOOP
    EXECUTE pg_catalog.format(
      'CREATE OR REPLACE TRIGGER %I BEFORE INSERT OR UPDATE OF %I ON %s FOR EACH ROW'
      ' WHEN (pg_catalog.current_setting(''role'') IN (''authenticated'', ''service_role''))'
      ' EXECUTE FUNCTION profile_sync.guard_profile_reference(%L)',
      profile_sync.guard_name(ref.column_name), ref.column_name, ref.referencing, ref.column_name);
    kept := kept || pg_catalog.format('%s %s', ref.referencing::oid, profile_sync.guard_name(ref.column_name));
  END LOOP;
  FOR stale IN
    SELECT t.tgrelid::pg_catalog.regclass AS referencing, t.tgname FROM pg_catalog.pg_trigger t
    WHERE t.tgfoid = 'profile_sync.guard_profile_reference()'::pg_catalog.regprocedure
      AND pg_catalog.format('%s %s', t.tgrelid::oid, t.tgname) <> ALL (kept)
  LOOP
    EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', stale.tgname, stale.referencing);
  END LOOP;
END $$;
