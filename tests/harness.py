"""Helpers shared by the integration tests: realistic signups, and the pipeline run in-process."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb
from rq.serializers import JSONSerializer

from profilesync.config import Settings
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


def jwt_claims(role: str, user_id: uuid.UUID | None) -> dict[str, Any]:
    """The claims of a Supabase client's JWT: a user's access token, or the anon / service key (no sub)."""
    now = int(time.time())
    if user_id is None:
        return {"iss": "supabase", "ref": "localdev", "role": role, "iat": now, "exp": now + 3600}
    return {
        "aud": "authenticated",
        "exp": now + 3600,
        "iat": now,
        "iss": "http://127.0.0.1:54321/auth/v1",
        "sub": str(user_id),
        "email": "",
        "phone": "",
        "app_metadata": {"provider": "email", "providers": ["email"]},
        "user_metadata": {},
        "role": role,
        "aal": "aal1",
        "amr": [{"method": "password", "timestamp": now}],
        "session_id": str(uuid.uuid4()),
        "is_anonymous": False,
    }


def act_as(conn: psycopg.Connection[Any], role: str, user_id: uuid.UUID | None, path: str = "/") -> None:
    """In the open transaction, what PostgREST sets before a request's query: transaction-local settings of
    search_path, role and the JWT claims (auth.uid() reads `sub`; None: a token without one)."""
    conn.execute(
        """
        SELECT set_config('search_path', '"public", "extensions"', true),
               set_config('role', %s, true),
               set_config('request.jwt.claims', %s, true),
               set_config('request.method', 'POST', true),
               set_config('request.path', %s, true)
        """,
        (role, json.dumps(jwt_claims(role, user_id)), path),
    )


@contextmanager
def auth_server(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """A transaction as Supabase's auth server runs it: role supabase_auth_admin, search_path auth."""
    with conn.transaction():
        conn.execute("SET LOCAL ROLE supabase_auth_admin")
        conn.execute("SET LOCAL search_path = auth")
        yield


def gotrue_update(conn: psycopg.Connection[Any], user_id: uuid.UUID, **columns: Any) -> None:
    """One UPDATE as GoTrue's ORM writes it (UpdateOnly): the named columns and updated_at, nothing else."""
    assignments = sql.SQL(", ").join(
        sql.SQL("{} = {}").format(sql.Identifier(name), sql.Placeholder()) for name in columns
    )
    values = [Jsonb(v) if isinstance(v, dict) else v for v in columns.values()]
    conn.execute(
        sql.SQL('UPDATE "users" AS users SET {}, "updated_at" = now() WHERE users.id = %s').format(
            assignments
        ),
        [*values, user_id],
    )


def gotrue_signup(conn: psycopg.Connection[Any], kind: str = "email", **changes: Any) -> uuid.UUID:
    """One signup transaction as GoTrue runs it: INSERT with role '', UPDATE role, and (except for anonymous
    users) UPDATE raw_user_meta_data to the identity data merged with the app's data. `changes` replace fields
    of the simulated Signup (devkit.signups), as for `signup`."""
    simulated = make_signup(kind).replace(**changes)
    with auth_server(conn):
        conn.execute(
            """
            INSERT INTO "users" ("instance_id", "id", "aud", "role", "email", "phone", "encrypted_password",
                                 "raw_app_meta_data", "raw_user_meta_data", "is_sso_user", "is_anonymous",
                                 "created_at", "updated_at")
            VALUES ('00000000-0000-0000-0000-000000000000', %s, 'authenticated', '', %s, %s, '', %s, %s,
                    %s, %s, now(), now())
            """,
            (
                simulated.id,
                simulated.email,
                simulated.phone,
                Jsonb({} if simulated.is_anonymous else {"provider": kind, "providers": [kind]}),
                Jsonb(simulated.user_meta),
                simulated.is_sso_user,
                simulated.is_anonymous,
            ),
        )
        gotrue_update(conn, simulated.id, role="authenticated")
        if not simulated.is_anonymous:
            identity = {
                "sub": str(simulated.id),
                "email": simulated.email,
                "email_verified": False,
                "phone_verified": False,
            }
            gotrue_update(conn, simulated.id, raw_user_meta_data={**simulated.user_meta, **identity})
    return simulated.id


def obfuscated(user_id: uuid.UUID, value: str) -> str:
    """GoTrue's obfuscateValue: the unpadded base64url SHA-256 of the user id followed by the value."""
    digest = hashlib.sha256(f"{user_id}{value}".encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


def gotrue_soft_delete_user(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    """The first UPDATE of GoTrue's SoftDeleteUser, inside an auth_server transaction: email and phone
    obfuscated (the phone, unique in auth.users, cut to 15 characters), secrets cleared, deleted_at set."""
    row = conn.execute(
        "SELECT coalesce(email, ''), coalesce(phone, ''), coalesce(email_change, ''),"
        " coalesce(phone_change, '') FROM users WHERE id = %s",
        (user_id,),
    ).fetchone()
    email, phone, email_change, phone_change = row or ("", "", "", "")
    gotrue_update(
        conn,
        user_id,
        email=obfuscated(user_id, email),
        phone=obfuscated(user_id, phone)[:15],
        encrypted_password=None,
        email_change=obfuscated(user_id, email_change),
        phone_change=obfuscated(user_id, phone_change)[:15],
        confirmation_token="",
        recovery_token="",
        email_change_token_current="",
        email_change_token_new="",
        phone_change_token="",
        deleted_at="now",
    )


def gotrue_soft_delete_rest(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    """The rest of SoftDeleteUser's transaction: both metadata columns emptied."""
    gotrue_update(conn, user_id, raw_user_meta_data={})
    gotrue_update(conn, user_id, raw_app_meta_data={})


def gotrue_soft_delete(conn: psycopg.Connection[Any], user_id: uuid.UUID) -> None:
    """`auth.admin.deleteUser(id, true)`: GoTrue's SoftDeleteUser in one transaction."""
    with auth_server(conn):
        gotrue_soft_delete_user(conn, user_id)
        gotrue_soft_delete_rest(conn, user_id)


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
