-- Profile readiness for the chat service (sql/definitions/04_readiness.sql explains the protocol): who waits for
-- which profile, and the lock target that makes waiting race-free.

CREATE TABLE profile_sync.profile_waiters (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL,
  listener_pid integer NOT NULL,  -- the waiter's LISTEN backend; rows of dead backends are garbage
  created_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX profile_waiters_user_id_idx ON profile_sync.profile_waiters (user_id);

CREATE TABLE profile_sync.readiness_barrier ();  -- never holds rows: a lock target only
