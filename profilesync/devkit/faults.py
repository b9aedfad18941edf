"""What the fault suite and the chaos soak share: short timers for their `profilesync` children, the audit
triggers they add to their own database, and the queries that read the outcome.

Only ever applied to a database made for the run (never a deployment's): the triggers cost every profile
insert two extra rows.
"""

from __future__ import annotations

import os

from profilesync.queueing import RETRY_MAX

# Short timers so that every recovery path runs within seconds (production defaults in config.py).
SAFETY_INTERVAL = 0.5
REDELIVER_AFTER = 3.0
RECONNECT_MAX_DELAY = 1.0
JOB_TIMEOUT = 5  # a SimpleWorker's started-registry entry expires JOB_TIMEOUT + 60 s after the job started
STATEMENT_TIMEOUT = 3  # below JOB_TIMEOUT, as in production
LOCK_TIMEOUT = 2
SWEEP_INTERVAL = 1.0
WORKER_MAINTENANCE_INTERVAL = 5
# Worst case for a killed worker's job: its registry entry expires, the next maintenance pass of a live worker
# retries it (taking over the dead worker's scheduler lock, which expires 61 s after its last heartbeat), the
# scheduler enqueues the retry, a worker runs it.
WORKER_KILL_BOUND = JOB_TIMEOUT + 60 + WORKER_MAINTENANCE_INTERVAL + RETRY_MAX + 15

QUICK_TIMERS = {
    "PROFILESYNC_SAFETY_INTERVAL": str(SAFETY_INTERVAL),
    "PROFILESYNC_REDELIVER_AFTER": str(REDELIVER_AFTER),
    "PROFILESYNC_RECONNECT_MAX_DELAY": str(RECONNECT_MAX_DELAY),
    "PROFILESYNC_JOB_TIMEOUT": str(JOB_TIMEOUT),
    "PROFILESYNC_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
    "PROFILESYNC_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
    "PROFILESYNC_SWEEP_INTERVAL": str(SWEEP_INTERVAL),
    "PROFILESYNC_WORKER_MAINTENANCE_INTERVAL": str(WORKER_MAINTENANCE_INTERVAL),
}


def child_env(database_url: str, redis_url: str) -> dict[str, str]:
    """The environment of a `profilesync` child on the run's own servers: QUICK_TIMERS, JSON logs."""
    inherited = ("LISTEN_DATABASE_URL", "PROFILESYNC_METRICS_PORT")  # each child gets its own, or none
    env = {k: v for k, v in os.environ.items() if k not in inherited}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            **QUICK_TIMERS,
            "PROFILESYNC_LOG_FORMAT": "json",
            "PROFILESYNC_LOG_LEVEL": "INFO",
        }
    )
    return env


# Audit of the profile table, in a schema of its own. `inserts`: every profile row actually inserted, in a
# table without a key, so a profile created twice shows up even if it was deleted in between (user_profiles'
# primary key alone would hide that). `attempts`: every row a committed create_profiles proposed (BEFORE
# INSERT fires before ON CONFLICT decides), so redundant runs of a user's job show up: at-least-once delivery.
# Apply as the role that owns the profile functions (they run as that owner, SECURITY DEFINER).
AUDIT = """
CREATE SCHEMA faults_audit;
CREATE TABLE faults_audit.inserts (user_id uuid NOT NULL);
CREATE TABLE faults_audit.attempts (user_id uuid NOT NULL);
CREATE FUNCTION faults_audit.log_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO faults_audit.inserts (user_id) VALUES (NEW.id);
  RETURN NULL;
END
$$;
CREATE FUNCTION faults_audit.log_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO faults_audit.attempts (user_id) VALUES (NEW.id);
  RETURN NEW;
END
$$;
CREATE TRIGGER faults_audit_insert AFTER INSERT ON public.user_profiles
  FOR EACH ROW EXECUTE FUNCTION faults_audit.log_insert();
CREATE TRIGGER faults_audit_attempt BEFORE INSERT ON public.user_profiles
  FOR EACH ROW EXECUTE FUNCTION faults_audit.log_attempt();
"""

# Live users without a profile.
LOST = """
SELECT count(*) FROM auth.users u
WHERE u.deleted_at IS NULL AND NOT EXISTS (SELECT 1 FROM public.user_profiles p WHERE p.id = u.id)
"""
# Profile rows inserted more than once for a user (AUDIT).
DUPLICATED = "SELECT count(*) - count(DISTINCT user_id) FROM faults_audit.inserts"
# Creation attempts beyond one per user (AUDIT): redundant deliveries, harmless by design.
REDUNDANT = "SELECT count(*) - count(DISTINCT user_id) FROM faults_audit.attempts"
# Signup events not yet retired (apart from users failed on purpose).
OUTBOX = "SELECT count(*) FROM profile_sync.signup_events WHERE failed_at IS NULL"
# Profiles of soft-deleted users that still hold personal data (the scrub must have emptied them).
UNSCRUBBED = """
SELECT count(*) FROM public.user_profiles p JOIN auth.users u ON u.id = p.id
WHERE u.deleted_at IS NOT NULL
  AND (p.email IS NOT NULL OR p.full_name IS NOT NULL OR p.avatar_url IS NOT NULL)
"""
