"""Helpers shared by the integration tests: realistic signups, and the pipeline run in-process."""

from __future__ import annotations

import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from rq.serializers import JSONSerializer

from profilesync.config import Settings
from profilesync.devkit.postgrest import act_as as act_as
from profilesync.devkit.postgrest import jwt_claims as jwt_claims
from profilesync.devkit.signups import auth_server as auth_server
from profilesync.devkit.signups import gotrue_signup as devkit_gotrue_signup
from profilesync.devkit.signups import gotrue_soft_delete as gotrue_soft_delete
from profilesync.devkit.signups import gotrue_soft_delete_rest as gotrue_soft_delete_rest
from profilesync.devkit.signups import gotrue_soft_delete_user as gotrue_soft_delete_user
from profilesync.devkit.signups import gotrue_update as gotrue_update
from profilesync.devkit.signups import insert_signup, make_signup
from profilesync.publisher.service import Publisher
from profilesync.queueing import connect_redis, profiles_queue
from profilesync.worker import runtime
from profilesync.worker.main import ProfileSyncWorker

# Counts the tests read again and again: count(conn, QUERY, params).
PENDING = "SELECT count(*) FROM profile_sync.signup_events WHERE enqueued_at IS NULL"  # not yet RQ jobs
IDLE_PUBLISHERS = "SELECT count(*) FROM profile_sync.publishers WHERE idle"  # registered and LISTENing
UNQUEUED = "SELECT count(*) FROM profile_sync.signup_events WHERE job_id IS NULL"  # not yet in an RQ job
PROFILE_OF = "SELECT count(*) FROM public.user_profiles WHERE id = %s"  # params: (user id,)
PROFILES_OF = "SELECT count(*) FROM public.user_profiles WHERE id = ANY(%s)"  # params: (list of user ids,)


def signup(conn: psycopg.Connection[Any], kind: str = "email", **changes: Any) -> uuid.UUID:
    """Insert one auth.users row as Supabase's auth server would for this kind of signup (devkit.signups);
    `changes` replace fields of the simulated Signup (email, user_meta, ...)."""
    simulated = make_signup(kind).replace(**changes)
    insert_signup(conn, simulated)
    return simulated.id


def reject_profile_of(
    conn: psycopg.Connection[Any], user_id: uuid.UUID, constraint: str = "no_mallory"
) -> None:
    """The app's own constraint (CHECK, 23514) rejecting this user's profile whatever its values: it names no
    mapped column, so dropping the profile's values cannot satisfy it and the user fails for good."""
    conn.execute(
        sql.SQL("ALTER TABLE public.user_profiles ADD CONSTRAINT {} CHECK (id <> {}::uuid)").format(
            sql.Identifier(constraint), sql.Literal(str(user_id))
        )
    )


def gotrue_signup(conn: psycopg.Connection[Any], kind: str = "email", **changes: Any) -> uuid.UUID:
    """One signup transaction as GoTrue runs it (devkit.signups.gotrue_signup) for this kind of signup;
    `changes` replace fields of the simulated Signup, as for `signup`."""
    simulated = make_signup(kind).replace(**changes)
    devkit_gotrue_signup(conn, simulated)
    return simulated.id


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a real `profilesync` child process (devkit.children) on the test's servers."""
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "PROFILESYNC_SAFETY_INTERVAL": "0.5",
        "PROFILESYNC_LOG_FORMAT": "json",
        **extra,
    }


def bulk_signup(conn: psycopg.Connection[Any], count: int) -> None:
    """`count` email signups in one INSERT statement."""
    conn.execute(
        """
        INSERT INTO auth.users (id, email, raw_user_meta_data)
        SELECT gen_random_uuid(), 'bulk' || g || '@example.com', jsonb_build_object('name', 'Bulk ' || g)
        FROM generate_series(1, %s) g
        """,
        (count,),
    )


@contextmanager
def running_publisher(settings: Settings, **options: Any) -> Iterator[Publisher]:
    """A publisher in a thread of this process; `options` go to Publisher (on_wake)."""
    publisher = Publisher(settings, **options)
    thread = threading.Thread(target=publisher.run, name="publisher", daemon=True)
    thread.start()
    try:
        yield publisher
    finally:
        publisher.stop.set()
        thread.join(timeout=10)
        assert not thread.is_alive(), "publisher did not stop"


def publish_all(settings: Settings, conn: psycopg.Connection[Any]) -> None:
    """Run a publisher until every signup event is an RQ job."""
    with running_publisher(settings):
        assert wait_for(
            lambda: count(conn, "SELECT count(*) FROM profile_sync.signup_events WHERE job_id IS NULL") == 0
        )


def refuse_profiles(conn: psycopg.Connection[Any]) -> None:
    """Make every profile insert fail (a CHECK constraint, like a broken app schema) until allow_profiles."""
    conn.execute("ALTER TABLE public.user_profiles ADD CONSTRAINT no_profiles CHECK (false) NOT VALID")


def allow_profiles(conn: psycopg.Connection[Any]) -> None:
    conn.execute("ALTER TABLE public.user_profiles DROP CONSTRAINT no_profiles")


def drain_once(settings: Settings) -> int:
    """One publisher drain: pending events → RQ jobs."""
    with psycopg.connect(settings.database_url, autocommit=True) as work:
        return Publisher(settings).drain(work, connect_redis(settings.redis_url))


def run_worker_burst(settings: Settings) -> None:
    """Process every queued job in this process with the service's worker class, then return."""
    runtime.configure(settings)
    redis_conn = connect_redis(settings.redis_url)
    try:
        ProfileSyncWorker(
            [profiles_queue(redis_conn, settings.queue)], connection=redis_conn, serializer=JSONSerializer
        ).work(burst=True, with_scheduler=False)
    finally:
        runtime.close()
        redis_conn.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Bounded wait for an eventually-true condition (test code only)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


def count(conn: psycopg.Connection[Any], query: str, params: tuple[Any, ...] = ()) -> int:
    row = conn.execute(query, params).fetchone()  # type: ignore[arg-type]
    assert row is not None
    return int(row[0])
