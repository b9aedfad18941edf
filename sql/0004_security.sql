-- Least privilege: login roles for the publisher and the workers (their grants, and everything withheld from
-- Supabase's API roles, are the definition sql/definitions/09_grants.sql).
--
-- Roles are cluster-wide: another database of the same cluster may have created them already, concurrently
-- even. They are created LOGIN without a password; an operator sets one (ALTER ROLE ... PASSWORD) or relies on
-- the server's own authentication (peer, certificates). A role that already exists is left as it is.

DO $$
DECLARE
  r text;
BEGIN
  FOREACH r IN ARRAY ARRAY['profilesync_worker', 'profilesync_publisher'] LOOP
    IF NOT EXISTS (SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = r) THEN
      BEGIN
        EXECUTE pg_catalog.format('CREATE ROLE %I LOGIN', r);
      EXCEPTION
        WHEN duplicate_object OR unique_violation THEN
          NULL;  -- another database's migration created it concurrently
        WHEN insufficient_privilege THEN
          RAISE EXCEPTION 'profile_sync: the migrating role may not create role %', r
            USING ERRCODE = 'insufficient_privilege',
                  HINT = pg_catalog.format('an administrator runs CREATE ROLE %I LOGIN, then migrate again', r);
      END;
    END IF;
  END LOOP;
END $$;
