-- The triggers on auth.users that fill the outbox (profile_sync.signup_events): one row per signup, and one per
-- later change that matters to the profile, written in the auth server's own transaction.
--
-- The contract of both: never block or fail the auth server. Each is tiny, SECURITY DEFINER with
-- search_path = '' and every name schema-qualified (GoTrue writes as supabase_auth_admin with search_path =
-- auth), waits at most lock_timeout for a lock on the outbox (LOCK TABLE, a queued ALTER TABLE, VACUUM FULL),
-- and turns any error into a WARNING: the user is recorded later by the publisher's sweeper
-- (record_unrecorded_users) or `profilesync backfill`.
--
-- NOTIFY only while a publisher waits on LISTEN: NOTIFY takes a cluster-wide lock at commit, which under
-- concurrent signups costs more than the insert itself. "Is a publisher idle?" is one simple expression (the
-- sequence profile_sync.idle_publishers, kept by announce_publisher), which PL/pgSQL evaluates without starting
-- an executor; the publishers' safety timer closes the race with a publisher that just went idle. The wake-up
-- carries nothing (any session may LISTEN): the publisher drains the outbox whatever the payload, and a
-- payload-free NOTIFY of one transaction is sent once however many users it records.

CREATE OR REPLACE FUNCTION profile_sync.on_auth_user_created() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET lock_timeout = '150ms'
AS $$
BEGIN
  BEGIN
    INSERT INTO profile_sync.signup_events (user_id) VALUES (NEW.id);
    IF pg_catalog.pg_sequence_last_value('profile_sync.idle_publishers'::pg_catalog.regclass) > 0 THEN
      PERFORM pg_catalog.pg_notify('profile_sync_signup', '');
    END IF;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'profile_sync: signup % not recorded (%: %)', NEW.id, SQLSTATE, SQLERRM;
  END;
  RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER profile_sync_on_auth_user_created
  AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION profile_sync.on_auth_user_created();

-- A later change is recorded at most once per user and transaction: a signup's own UPDATEs (GoTrue sets role
-- and rewrites raw_user_meta_data in the signup transaction) and the several UPDATEs of one soft delete or
-- admin update find the event this transaction already wrote (signup_events.xact_id), which covers them,
-- since the worker reads the user only after the commit. Not "was the OLD row version written by this
-- transaction": GoTrue's admin update and email confirmation first update other columns (password,
-- confirmation token), then the metadata, and that second UPDATE would be skipped with no event recorded.
-- An event says "look at this user again", never what changed: the worker applies the user's final state.
CREATE OR REPLACE FUNCTION profile_sync.on_auth_user_updated() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
SET lock_timeout = '150ms'
AS $$
BEGIN
  BEGIN
    IF NOT EXISTS (
      SELECT 1 FROM profile_sync.signup_events e
      WHERE e.user_id = NEW.id AND e.xact_id = pg_catalog.pg_current_xact_id()
    ) THEN
      INSERT INTO profile_sync.signup_events (user_id) VALUES (NEW.id);
      IF pg_catalog.pg_sequence_last_value('profile_sync.idle_publishers'::pg_catalog.regclass) > 0 THEN
        PERFORM pg_catalog.pg_notify('profile_sync_signup', '');
      END IF;
    END IF;
  EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'profile_sync: change of user % not recorded (%: %)', NEW.id, SQLSTATE, SQLERRM;
  END;
  RETURN NULL;
END
$$;

-- Only the columns the profile is made of (the mapped sources; deleted_at for the scrub) or that mark a
-- conversion (email, phone, is_anonymous). GoTrue writes only the columns it changes (plus updated_at): the
-- UPDATEs of every login, token refresh and recovery (last_sign_in_at, tokens) do not name these columns and
-- skip the trigger before the WHEN is evaluated. The WHEN, evaluated when the event would be queued (no
-- function call, no privilege needed by supabase_auth_admin), stops an UPDATE that names them without changing
-- what the profile uses: an ORM writing every column, or the confirmation's metadata rewrite
-- ("email_verified"). Rendered from the profile mapping (profilesync/profilesql.py): it compares exactly the
-- metadata keys sync_profiles reads.
{{update_trigger}}
