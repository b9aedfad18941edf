"""A soft delete racing profile creation ends with a profile that holds no personal data, on every
interleaving (sql/definitions/02_profiles.sql).

Each interleaving uses real connections: the insert path's transaction is held open once it has written the
profile (or is blocked), GoTrue's soft delete runs as supabase_auth_admin, and the worker's job for the soft
delete's event runs in between; both orders. Soft deletes come in two shapes: GoTrue's own, whose obfuscated
phone is a unique key of auth.users (a key update, which FOR KEY SHARE already blocked), and the same UPDATE
on an auth.users without that key (FOR NO KEY UPDATE: only FOR SHARE blocks it).
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from profilesync.chat import ChatService, UnknownUserError
from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.worker import profiles
from tests.harness import (
    act_as,
    auth_server,
    count,
    gotrue_signup,
    gotrue_soft_delete,
    gotrue_soft_delete_rest,
    gotrue_soft_delete_user,
    process_env,
    wait_for,
)

Conn = psycopg.Connection[Any]

HOLDING_DATA = """
SELECT count(*) FROM public.user_profiles p JOIN auth.users u ON u.id = p.id
WHERE u.deleted_at IS NOT NULL
  AND (p.email IS NOT NULL OR p.full_name IS NOT NULL OR p.avatar_url IS NOT NULL)
"""
EVENTS = "SELECT count(*) FROM profile_sync.signup_events"
WAITING = "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'"
BOUND = 30.0  # seconds any step may take on a loaded box


@pytest.fixture(params=["gotrue", "no key change"])
def soft_delete_shape(request: pytest.FixtureRequest, conn: Conn) -> str:
    if request.param == "no key change":
        conn.execute("ALTER TABLE auth.users DROP CONSTRAINT users_phone_key")
    return str(request.param)


def blocked(conn: Conn, pid: int) -> bool:
    return count(conn, WAITING, (pid,)) == 1


def run_the_workers_job(database_url: str) -> None:
    """What a worker does with the pending events: one create_profiles job over their users (with a short
    lock_timeout: a readiness trigger waiting on a held barrier gives up, as in production)."""
    with psycopg.connect(database_url, autocommit=True, options="-c lock_timeout=200") as worker:
        ids = [row[0] for row in worker.execute("SELECT DISTINCT user_id FROM profile_sync.signup_events")]
        outcome = profiles.create_profiles(worker, ids, "fill-null")
    assert not outcome.failed, outcome.failed


# -- the insert paths, each held where its transaction has written the profile -------------------------------


class HeldPath:
    """An insert path on its own connection and thread. `step` runs inside a transaction that stays open until
    `finish()`; `settled()` once the step returned, failed, or waits for a lock."""

    def __init__(self, database_url: str, step: Callable[[Conn, uuid.UUID], str]) -> None:
        self.conn = psycopg.connect(database_url, autocommit=True)
        self.pid = self.conn.info.backend_pid
        self.step = step
        self.reached = threading.Event()
        self.release = threading.Event()
        self.outcome = "not run"
        self.thread: threading.Thread | None = None

    def start(self, user_id: uuid.UUID) -> None:
        self.thread = threading.Thread(target=self._run, args=(user_id,), daemon=True)
        self.thread.start()

    def _run(self, user_id: uuid.UUID) -> None:
        try:
            with self.conn.transaction():
                self.outcome = self.step(self.conn, user_id)
                self.reached.set()
                self.release.wait(BOUND)
        except psycopg.Error as exc:
            self.outcome = exc.sqlstate or type(exc).__name__
        finally:
            self.reached.set()

    def settled(self, observer: Conn) -> bool:
        return self.reached.is_set() or blocked(observer, self.pid)

    def finish(self) -> str:
        self.release.set()
        assert self.thread is not None
        self.thread.join(BOUND)
        assert not self.thread.is_alive()
        self.conn.close()
        return self.outcome


def worker_batch(conn: Conn, user_id: uuid.UUID) -> str:
    outcome = profiles.create_profiles(conn, [user_id], "fill-null")
    return "created" if outcome.created else "gone"


def client_guard(role: str) -> Callable[[Conn, uuid.UUID], str]:
    def step(conn: Conn, user_id: uuid.UUID) -> str:
        act_as(conn, role, user_id if role == "authenticated" else None, "/chat_conversations")
        conn.execute(
            "INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, 'first')", (user_id,)
        )
        return "created"

    return step


def ensure_profile(conn: Conn, user_id: uuid.UUID) -> str:
    act_as(conn, "authenticated", user_id, "/rpc/ensure_profile")
    conn.execute("SELECT * FROM public.ensure_profile()").fetchone()
    return "created"


class ChatFallback:
    """ChatService's inline fallback (one autocommit statement), held inside that statement: the profile
    insert's readiness trigger waits to read profile_sync.profile_waiters, which this holds locked."""

    def __init__(self, database_url: str, settings: Settings) -> None:
        self.barrier = psycopg.connect(database_url)
        self.barrier.execute("LOCK TABLE profile_sync.profile_waiters IN ACCESS EXCLUSIVE MODE")
        # chat_wait_timeout 0: the fallback at once; a lock budget longer than any step of the test
        chat = settings.model_copy(
            update={"chat_wait_timeout": 0.0, "lock_timeout": BOUND, "statement_timeout": BOUND + 10}
        )
        self.pool: ConnectionPool[Any] = ConnectionPool(database_url, min_size=1, max_size=1, open=True)
        with self.pool.connection() as conn:
            self.pid = conn.info.backend_pid
        self.service = ChatService(self.pool, chat)
        self.outcome = "not run"
        self.thread: threading.Thread | None = None

    def start(self, user_id: uuid.UUID) -> None:
        self.thread = threading.Thread(target=self._run, args=(user_id,), daemon=True)
        self.thread.start()

    def _run(self, user_id: uuid.UUID) -> None:
        try:
            self.service.create_conversation(user_id, "first")
            self.outcome = "created"
        except UnknownUserError:
            self.outcome = "gone"

    def settled(self, observer: Conn) -> bool:
        return blocked(observer, self.pid)

    def finish(self) -> str:
        self.barrier.commit()
        assert self.thread is not None
        self.thread.join(BOUND)
        assert not self.thread.is_alive()
        self.service.close()
        self.pool.close()
        self.barrier.close()
        return self.outcome


PATHS = ["worker batch", "client guard", "service_role guard", "ensure_profile", "chat fallback"]
GONE = {
    "worker batch": "gone",
    "client guard": "PT404",
    "service_role guard": "PT404",
    "ensure_profile": "PT404",
    "chat fallback": "gone",
}


def held_path(name: str, database_url: str, settings: Settings) -> HeldPath | ChatFallback:
    steps = {
        "worker batch": worker_batch,
        "client guard": client_guard("authenticated"),
        "service_role guard": client_guard("service_role"),
        "ensure_profile": ensure_profile,
    }
    if name == "chat fallback":
        return ChatFallback(database_url, settings)
    return HeldPath(database_url, steps[name])


@pytest.fixture
def user(conn: Conn) -> uuid.UUID:
    """A Google signup (email, name and avatar to copy) whose signup event the path under test handles."""
    user_id = gotrue_signup(conn, "google")
    conn.execute("DELETE FROM profile_sync.signup_events WHERE user_id = %s", (user_id,))
    return user_id


def ends_scrubbed(conn: Conn, database_url: str) -> None:
    for _ in range(5):
        if count(conn, EVENTS) == 0:
            break
        run_the_workers_job(database_url)
    assert count(conn, HOLDING_DATA) == 0, "a soft-deleted user's profile kept personal data"
    assert count(conn, EVENTS) == 0


@pytest.mark.parametrize("path", PATHS)
def test_insert_first_then_soft_delete(
    conn: Conn, database_url: str, settings: Settings, user: uuid.UUID, soft_delete_shape: str, path: str
) -> None:
    inserting = held_path(path, database_url, settings)
    inserting.start(user)
    assert wait_for(lambda: inserting.settled(conn), timeout=BOUND)

    # The soft delete either waits for the open insert (FOR SHARE) or commits now; then the worker's job for
    # its event runs while the insert is still open.
    with psycopg.connect(database_url, autocommit=True) as gotrue:
        deleting = threading.Thread(target=gotrue_soft_delete, args=(gotrue, user), daemon=True)
        deleting.start()
        pid = gotrue.info.backend_pid
        assert wait_for(lambda: not deleting.is_alive() or blocked(conn, pid), timeout=BOUND)
        run_the_workers_job(database_url)
        outcome = inserting.finish()
        deleting.join(BOUND)
        assert not deleting.is_alive()

    ends_scrubbed(conn, database_url)
    assert outcome == "created"  # the user was live when the path ran


@pytest.mark.parametrize("path", PATHS)
def test_soft_delete_first_then_insert(
    conn: Conn, database_url: str, settings: Settings, user: uuid.UUID, soft_delete_shape: str, path: str
) -> None:
    inserting = held_path(path, database_url, settings)
    with psycopg.connect(database_url, autocommit=True) as gotrue:
        with auth_server(gotrue):
            gotrue_soft_delete_user(gotrue, user)  # deleted_at set, not committed yet
            inserting.start(user)
            assert wait_for(lambda: inserting.settled(conn), timeout=BOUND)
            gotrue_soft_delete_rest(gotrue, user)
        run_the_workers_job(database_url)  # the soft delete's event, while the insert path is still open
    outcome = inserting.finish()

    ends_scrubbed(conn, database_url)
    assert outcome == GONE[path]  # it waited for the soft delete and then saw it


# -- many users soft-deleted a few milliseconds after signup, real publisher and workers ---------------------


@pytest.fixture
def pipeline(settings: Settings, tmp_path: Path) -> Iterator[None]:
    children = Children(process_env(settings), tmp_path)
    children.start("publisher", "publisher")
    children.start("worker", "worker")
    children.start("worker 2", "worker")  # a soft delete's job may run while another job is in flight
    try:
        yield
    finally:
        # Only the publisher's exit is asserted: an RQ worker sometimes stays in its shutdown after
        # "unsubscribing from channel" on this box, which is not what this test is about.
        codes = children.stop(timeout=15)
        assert codes["publisher"] == 0, children.log("publisher")[-4000:]


def ask_for_profile(client: Conn, user_id: uuid.UUID, delay: float, hold: float) -> None:
    """The app calling ensure_profile() on sign-in, in a request transaction that does more work after it
    (`hold` seconds); PT404 once the soft delete won."""
    time.sleep(delay)
    try:
        with client.transaction():
            ensure_profile(client, user_id)
            time.sleep(hold)
    except psycopg.Error as exc:
        assert exc.sqlstate == "PT404", exc


def test_users_soft_deleted_right_after_signup_end_scrubbed(
    conn: Conn, database_url: str, soft_delete_shape: str, pipeline: None
) -> None:
    rng = random.Random()

    def sign_up_then_delete(_: int) -> None:
        with (
            psycopg.connect(database_url, autocommit=True) as gotrue,
            psycopg.connect(database_url, autocommit=True) as client,
        ):
            user_id = gotrue_signup(gotrue, "google")
            app = threading.Thread(
                target=ask_for_profile, args=(client, user_id, rng.uniform(0, 0.005), rng.uniform(0, 0.1))
            )
            app.start()
            time.sleep(rng.uniform(0.002, 0.040))
            gotrue_soft_delete(gotrue, user_id)
            app.join(BOUND)

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(sign_up_then_delete, range(60)))
    assert wait_for(lambda: count(conn, EVENTS) == 0, timeout=60)
    assert count(conn, HOLDING_DATA) == 0
    assert count(conn, "SELECT count(*) FROM auth.users WHERE deleted_at IS NOT NULL") == 60
