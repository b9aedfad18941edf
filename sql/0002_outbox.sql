-- The durable signup outbox and the publishers' registry. The triggers that fill the outbox and the functions
-- that empty it are definitions (sql/definitions/).

-- One row per signup, written in the signup's own transaction. The publisher claims rows (enqueued_at, job_id);
-- profile_sync.sync_profiles deletes them once the profile exists, so Postgres stays the source of truth even
-- if Redis loses every job. Despite the name, a row means "bring this user's profile in step": the update
-- trigger (sql/definitions/) writes one for every change the profile follows, soft deletes included.
CREATE TABLE profile_sync.signup_events (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  user_id uuid NOT NULL,
  created_at timestamptz NOT NULL DEFAULT now(),
  enqueued_at timestamptz,
  job_id text,
  failed_at timestamptz,
  last_error text
);
CREATE INDEX signup_events_pending_idx ON profile_sync.signup_events (id) WHERE enqueued_at IS NULL;
CREATE INDEX signup_events_user_id_idx ON profile_sync.signup_events (user_id);

-- Publishers announce here when they are idle (waiting on LISTEN); announce_publisher derives the count the
-- signup trigger reads.
CREATE TABLE profile_sync.publishers (
  backend_pid integer PRIMARY KEY,
  idle boolean NOT NULL DEFAULT false,
  updated_at timestamptz NOT NULL DEFAULT now()
);
