-- Values the app's constraints reject never cost a user their profile (see profilesync/profilesql.py, which
-- renders profile_sync.sync_profiles): the value is dropped, and recorded here and by a WARNING. Counted per
-- column (a query away for an operator; the tests read it); never the value itself, only where it was dropped.

CREATE TABLE profile_sync.dropped_values (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL,
  column_name text NOT NULL,
  reason text NOT NULL,  -- the rejecting constraint's (or unique index's) name, else the error's SQLSTATE
  dropped_at timestamptz NOT NULL DEFAULT now()
);

-- The mapped columns an error of an INSERT/UPDATE on the profile table points at: the NOT NULL column it
-- names; else the columns of the constraint or unique index it names; else (a value too long for a varchar,
-- a domain's check, an expression index) every mapped column. Only mapped columns: a constraint on the app's
-- other columns is not ours to work around.
CREATE FUNCTION profile_sync.rejected_columns(
  p_table regclass, p_constraint text, p_column text, p_mapped text[]
) RETURNS text[]
LANGUAGE sql STABLE
SET search_path = ''
AS $$
  WITH named AS (
    SELECT a.attname::text AS name
    FROM pg_catalog.pg_constraint c
    JOIN pg_catalog.pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
    WHERE c.conrelid = p_table AND c.conname = p_constraint
    UNION
    SELECT a.attname::text
    FROM pg_catalog.pg_index i
    JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid
    JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])
    WHERE i.indrelid = p_table AND x.relname = p_constraint AND i.indexprs IS NULL
  ), known AS (
    SELECT EXISTS (
      SELECT 1 FROM pg_catalog.pg_constraint c WHERE c.conrelid = p_table AND c.conname = p_constraint
      UNION ALL
      SELECT 1 FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class x ON x.oid = i.indexrelid
      WHERE i.indrelid = p_table AND x.relname = p_constraint AND i.indexprs IS NULL
    ) AS found
  )
  SELECT CASE
    WHEN coalesce(p_column, '') <> '' THEN ARRAY(SELECT m FROM pg_catalog.unnest(p_mapped) m WHERE m = p_column)
    WHEN (SELECT found FROM known) THEN
      ARRAY(SELECT m FROM pg_catalog.unnest(p_mapped) m WHERE m IN (SELECT n.name FROM named n))
    ELSE p_mapped
  END
$$;

-- Record and report values dropped from one user's profile: a row per column here, and a WARNING per column
-- (server log; the worker and chat service count and log it) with SQLSTATE PS001, the column in COLUMN and
-- the user id in DETAIL. Never the value: it is the user's data.
CREATE FUNCTION profile_sync.report_dropped(p_user_id uuid, p_columns text[], p_reason text) RETURNS void
LANGUAGE plpgsql
SET search_path = ''
AS $$
DECLARE
  dropped_column text;
BEGIN
  FOREACH dropped_column IN ARRAY p_columns LOOP
    INSERT INTO profile_sync.dropped_values (user_id, column_name, reason)
    VALUES (p_user_id, dropped_column, p_reason);
    RAISE WARNING 'profile_sync: profile value of column % dropped for user % (rejected by %)',
      dropped_column, p_user_id, p_reason
      USING ERRCODE = 'PS001', COLUMN = dropped_column, DETAIL = p_user_id::text;
  END LOOP;
END
$$;

REVOKE ALL ON FUNCTION profile_sync.rejected_columns(regclass, text, text, text[]),
                       profile_sync.report_dropped(uuid, text[], text)
  FROM PUBLIC;
REVOKE ALL ON profile_sync.dropped_values FROM PUBLIC;
DO $$
BEGIN
  IF (SELECT count(*) FROM pg_catalog.pg_roles WHERE rolname IN ('anon', 'authenticated')) = 2 THEN
    REVOKE ALL ON FUNCTION profile_sync.rejected_columns(regclass, text, text, text[]),
                           profile_sync.report_dropped(uuid, text[], text)
      FROM anon, authenticated;
    REVOKE ALL ON profile_sync.dropped_values FROM anon, authenticated;
  END IF;
END $$;
