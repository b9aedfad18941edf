"""The baselines: their triggers (SQL applied to a scenario's database) and their consumers.

- plain: no trigger at all (the ceiling for signup throughput);
- supabase: Supabase's documented `handle_new_user` trigger, inserting the profile inside the signup;
  supabase_sync_updates adds a synchronous AFTER UPDATE profile update on every UPDATE of auth.users (what
  keeping profiles in sync without an outbox costs: for the auth server's update workloads);
- naive: a per-row pg_notify trigger, and a listener that enqueues one RQ job per user;
- ideal: our outbox trigger, and a publisher that inserts the profiles itself (batched SQL, no Redis);
- ours_nolinger (not a baseline, an ablation): our pipeline with a publisher that never lingers after a
  drain, so it is woken by NOTIFY for every signup: shows what the linger buys and costs.
- ablations of our worker, one change undone each: ours_jobtx (the job's statement wrapped in BEGIN/COMMIT),
  ours_rqlines (RQ's per-job INFO lines rendered as JSON, as before).
"""

from __future__ import annotations

import multiprocessing.synchronize
import os
import signal
import threading
from typing import Any

import psycopg
import redis
from rq import Queue

from profilesync import db
from profilesync.config import Settings
from profilesync.logs import configure
from profilesync.publisher.service import Publisher
from profilesync.queueing import CREATE_PROFILES, JobPlan, connect_redis, profiles_queue

NAIVE_CHANNEL = "bench_naive_signup"

_DROP_OURS = (
    "DROP TRIGGER profile_sync_on_auth_user_created ON auth.users;\n"
    "DROP TRIGGER profile_sync_on_auth_user_updated ON auth.users;\n"
)

PLAIN_SQL = _DROP_OURS

SUPABASE_SQL = """
DROP TRIGGER profile_sync_on_auth_user_created ON auth.users;
DROP TRIGGER profile_sync_on_auth_user_updated ON auth.users;
DROP TRIGGER profile_sync_on_user_profiles_inserted ON public.user_profiles;
CREATE FUNCTION public.handle_new_user() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  INSERT INTO public.user_profiles (id, email, full_name, avatar_url)
  VALUES (new.id, new.email, new.raw_user_meta_data ->> 'full_name', new.raw_user_meta_data ->> 'avatar_url');
  RETURN new;
END
$$;
CREATE TRIGGER on_auth_user_created AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_new_user();
"""
_SUPABASE_UPDATES = """
CREATE FUNCTION public.handle_user_updated() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  UPDATE public.user_profiles SET email = new.email, full_name = new.raw_user_meta_data ->> 'full_name',
    avatar_url = new.raw_user_meta_data ->> 'avatar_url' WHERE id = new.id;
  RETURN new;
END
$$;
CREATE TRIGGER on_auth_user_updated AFTER UPDATE ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.handle_user_updated();
"""
SUPABASE_SYNC_UPDATES_SQL = SUPABASE_SQL + _SUPABASE_UPDATES

NAIVE_SQL = (
    _DROP_OURS
    + f"""
CREATE FUNCTION public.bench_notify_signup() RETURNS trigger
LANGUAGE plpgsql SECURITY DEFINER SET search_path = ''
AS $$
BEGIN
  PERFORM pg_catalog.pg_notify('{NAIVE_CHANNEL}', new.id::text);
  RETURN new;
END
$$;
CREATE TRIGGER bench_notify_signup AFTER INSERT ON auth.users
  FOR EACH ROW EXECUTE FUNCTION public.bench_notify_signup();
"""
)

# Our trigger with its NOTIFY forced on (a publisher that is always idle) or off (one that is never idle).
OURS_IDLE_SQL = (
    "INSERT INTO profile_sync.publishers (backend_pid, idle) VALUES (0, true);\n"
    "SELECT profile_sync.announce_publisher(0, true);\n"
)
OURS_BUSY_SQL = (
    "INSERT INTO profile_sync.publishers (backend_pid, idle) VALUES (0, false);\n"
    "SELECT profile_sync.announce_publisher(0, false);\n"
)
# Our signup trigger without the update trigger: what following profile-relevant updates costs on top.
OURS_SIGNUP_ONLY_SQL = OURS_BUSY_SQL + "DROP TRIGGER profile_sync_on_auth_user_updated ON auth.users;\n"


class IdealPublisher(Publisher):
    """Our publisher's wake-up and idle protocol; it creates the profiles itself in the claim transaction."""

    def dispatch(self, work: psycopg.Connection[Any], queue: Queue, plans: list[JobPlan]) -> None:
        user_ids = [user_id for plan in plans for user_id in plan.user_ids]
        work.execute("SET LOCAL synchronous_commit = on")  # profiles are durable, as the worker's are
        work.execute("SELECT * FROM profile_sync.create_profiles(%s::uuid[])", (user_ids,))


class NoLingerPublisher(Publisher):
    """Our publisher, back to idle (NOTIFY per signup) straight after every drain."""

    def _linger(self, work: psycopg.Connection[Any], redis_conn: redis.Redis, until: float) -> None:
        return


def stop_on_sigterm() -> threading.Event:
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    return stop


def run_ideal(database_url: str, redis_url: str) -> None:
    """Process entry point: the ideal consumer until SIGTERM."""
    configure("WARNING")
    settings = Settings(database_url=database_url, redis_url=redis_url, log_level="WARNING")
    IdealPublisher(settings, stop_on_sigterm()).run()


def run_no_linger(database_url: str, redis_url: str) -> None:
    """Process entry point: our publisher without the linger, until SIGTERM."""
    configure("WARNING")
    settings = Settings(database_url=database_url, redis_url=redis_url, log_level="WARNING")
    NoLingerPublisher(settings, stop_on_sigterm()).run()


def run_naive(database_url: str, redis_url: str, ready: multiprocessing.synchronize.Event) -> None:
    """Process entry point: LISTEN, and enqueue one job per notified user, until SIGTERM."""
    configure("WARNING")
    stop = stop_on_sigterm()
    with (
        db.connect(database_url, autocommit=True, application_name="bench-naive") as listen,
        connect_redis(redis_url) as redis_conn,
    ):
        listen.execute(f"LISTEN {NAIVE_CHANNEL}")
        queue = profiles_queue(redis_conn)
        ready.set()
        while not stop.is_set():
            for notify in listen.notifies(timeout=0.2):
                queue.enqueue(CREATE_PROFILES, args=([notify.payload],))


def logs_to_devnull() -> None:
    """Logs rendered as in production (JSON at INFO), written nowhere: their cost counts, not their noise."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    configure("INFO", "json")


def run_worker_ablation(database_url: str, redis_url: str, ablation: str) -> None:
    """Process entry point: `profilesync worker` with one change undone (`jobtx`, `rqlines`) until SIGTERM."""
    from profilesync.worker import main, profiles

    logs_to_devnull()
    if ablation == "jobtx":
        sync = profiles.create_profiles

        def in_transaction(conn: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> Any:
            with conn.transaction():
                return sync(conn, *args, **kwargs)

        profiles.create_profiles = in_transaction  # jobs.py calls it through the module
    elif ablation == "rqlines":
        main.ProfileSyncWorker.log_result_lifespan = True
        main._demote_per_job_lines = lambda: None
    else:
        raise ValueError(f"unknown worker ablation: {ablation}")
    main.run(Settings(database_url=database_url, redis_url=redis_url, log_level="INFO"))
