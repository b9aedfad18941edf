-- needs: seed
-- The seed's own table only: an app's profile table keeps its own rules for what its users may edit.
--
-- The sanitising rules on every later change (a signed-in user may UPDATE full_name and avatar_url through
-- PostgREST): a value that cleaning would change is refused with check_violation (23514). And part 1 of the
-- invariant above for UPDATEs: email, full_name or avatar_url set to a new non-NULL value only for a live
-- user, checked on the user's row read FOR SHARE (a soft delete in flight is waited for and seen; one arriving
-- later waits for this transaction, and its scrub then sees this change). Otherwise PT404, the error a deleted
-- user gets from ensure_profile(): a soft-deleted user's still-valid JWT cannot put name or avatar back.
-- Clearing a field (the scrub) and the worker's own updates of live users pass; the check runs only for a
-- field that gets a new value. Also on email, which the worker, the scrub and service_role write (not
-- `authenticated`: no UPDATE on it).
-- A trigger, not CHECK constraints: a constraint runs its functions as the writing role, so `authenticated`
-- would need EXECUTE on profile_sync functions and USAGE on the schema, which the grants deny API roles on
-- purpose; this SECURITY DEFINER trigger needs neither and reuses the one definition of the rules. It only
-- looks at values that change, so rows an existing project already has stay editable in other columns (as a
-- NOT VALID constraint would), and it is not on INSERT: sync_profiles writes cleaned values already, and
-- `authenticated` has no INSERT on the table; the worker's batch insert pays nothing.
CREATE OR REPLACE FUNCTION profile_sync.check_profile_update() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = ''
AS $$
BEGIN
  IF NEW.full_name IS DISTINCT FROM OLD.full_name AND NEW.full_name IS NOT NULL
     AND NEW.full_name IS DISTINCT FROM profile_sync.clean_text(pg_catalog.to_jsonb(NEW.full_name), 200) THEN
    RAISE EXCEPTION 'profile_sync: full_name must be at most 200 characters of display text'
      USING ERRCODE = 'check_violation';
  END IF;
  IF NEW.avatar_url IS DISTINCT FROM OLD.avatar_url AND NEW.avatar_url IS NOT NULL
     AND NEW.avatar_url IS DISTINCT FROM profile_sync.clean_url(pg_catalog.to_jsonb(NEW.avatar_url)) THEN
    RAISE EXCEPTION 'profile_sync: avatar_url must be a public http(s) URL'
      USING ERRCODE = 'check_violation';
  END IF;
  IF (NEW.email IS DISTINCT FROM OLD.email AND NEW.email IS NOT NULL)
     OR (NEW.full_name IS DISTINCT FROM OLD.full_name AND NEW.full_name IS NOT NULL)
     OR (NEW.avatar_url IS DISTINCT FROM OLD.avatar_url AND NEW.avatar_url IS NOT NULL) THEN
    PERFORM 1 FROM auth.users u WHERE u.id = NEW.{{profile_id}} AND u.deleted_at IS NULL FOR SHARE OF u;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'profile_sync: user % does not exist or was deleted', NEW.{{profile_id}}
        USING ERRCODE = 'PT404',
              DETAIL = 'the profile of a user missing from auth.users or soft-deleted keeps no personal data',
              HINT = 'the account behind this session is gone: sign the user out (supabase.auth.signOut())';
    END IF;
  END IF;
  RETURN NEW;
END
$$;

CREATE OR REPLACE TRIGGER profile_sync_check_profile_update
  BEFORE UPDATE OF email, full_name, avatar_url ON {{profile}}
  FOR EACH ROW EXECUTE FUNCTION profile_sync.check_profile_update();
