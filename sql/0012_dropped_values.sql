-- Values the app's constraints reject never cost a user their profile (see profilesync/profilesql.py, which
-- renders profile_sync.sync_profiles, and profile_sync.report_dropped in sql/definitions/02_profiles.sql): the
-- value is dropped, and recorded here and by a WARNING. Never the value itself, only where it was dropped.
-- Privileges: sql/definitions/09_grants.sql (nobody but the owner).

CREATE TABLE profile_sync.dropped_values (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL,
  column_name text NOT NULL,
  reason text NOT NULL,  -- the rejecting constraint's (or unique index's) name, else the error's SQLSTATE
  dropped_at timestamptz NOT NULL DEFAULT now()
);
