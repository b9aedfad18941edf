"""ChatService on real PostgreSQL (+ Redis and real workers for the concurrent signup test)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg_pool import ConnectionPool
from structlog.testing import capture_logs

from profilesync.chat import (
    ChatService,
    Conversation,
    InvalidUserIdError,
    ProfileNotReadyError,
    UnknownUserError,
)
from profilesync.chat.readiness import CHANNEL
from profilesync.config import Settings
from profilesync.devkit.signups import make_signup
from profilesync.errors import ConfigError
from tests.harness import PROFILE_OF, count, reject_profile_of, running_publisher, signup, wait_for

Conn = psycopg.Connection[Any]
LISTEN_APP = "profilesync-chat-listen"
WAITERS = "SELECT count(*) FROM profile_sync.profile_waiters"
ACTIVITY = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND datname = current_database()"
)
# The LISTEN backend once its session is set up (its last statement done): it stays silent from then on.
LISTEN_READY = ACTIVITY + " AND state = 'idle' AND query LIKE '%%forget_dead_profile_waiters%%'"


class CountingConnection(psycopg.Connection[Any]):
    """Counts network exchanges: calls of wait() whose generator had to wait for the socket."""

    round_trips = 0  # class-wide: the sum over the pool's connections

    def wait(self, gen: Any, *args: Any, **kwargs: Any) -> Any:
        return super().wait(self._counted(gen), *args, **kwargs)

    @classmethod
    def _counted(cls, gen: Generator[Any, Any, Any]) -> Generator[Any, Any, Any]:
        try:
            item = gen.send(None)
        except StopIteration as done:
            return done.value  # no I/O (e.g. setting autocommit)
        cls.round_trips += 1
        while True:
            received = yield item
            try:
                item = gen.send(received)
            except StopIteration as done:
                return done.value


@contextmanager
def chat_service(
    settings: Settings, *, autocommit: bool = True, max_size: int = 4, **overrides: Any
) -> Iterator[tuple[ChatService, ConnectionPool[Any]]]:
    """A ChatService on a counting pool, yielded once its LISTEN connection is up; gone again on exit."""
    with (
        psycopg.connect(settings.database_url, autocommit=True) as admin,
        ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=max_size,
            kwargs={"autocommit": autocommit},
            connection_class=CountingConnection,
        ) as pool,
    ):
        assert wait_for(lambda: listener_gone(admin))  # a previous service's backend has exited
        with ChatService(pool, settings.model_copy(update=overrides)) as service:
            pool.wait()
            assert wait_for(lambda: listening(admin))
            yield service, pool
        assert wait_for(lambda: listener_gone(admin))


def listening(conn: Conn) -> bool:
    return count(conn, LISTEN_READY, (LISTEN_APP,)) == 1


def listener_gone(conn: Conn) -> bool:
    return count(conn, ACTIVITY, (LISTEN_APP,)) == 0


def create_profile(conn: Conn, user_id: uuid.UUID) -> None:
    conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", ([user_id],))


def has_profile(conn: Conn, user_id: uuid.UUID) -> bool:
    return count(conn, PROFILE_OF, (user_id,)) == 1


def in_thread(func: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run `func` in a thread; the list receives its result or exception."""
    outcome: list[Any] = []

    def target() -> None:
        try:
            outcome.append(func())
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    return thread, outcome


# -- fast path ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("autocommit", [True, False])
def test_fast_path_is_one_round_trip(conn: Conn, settings: Settings, autocommit: bool) -> None:
    user_id = signup(conn, "google")
    create_profile(conn, user_id)
    with chat_service(settings, autocommit=autocommit) as (service, pool):
        for attempt in range(8):  # past psycopg's prepare threshold too
            before = CountingConnection.round_trips
            conversation = service.create_conversation(str(user_id), f"chat {attempt}")
            assert CountingConnection.round_trips - before == 1
            assert isinstance(conversation, Conversation)
            assert (conversation.user_id, conversation.title) == (user_id, f"chat {attempt}")
        with pool.connection() as pooled:
            assert pooled.autocommit is autocommit  # the caller's pool configuration is restored
    assert count(conn, "SELECT count(*) FROM public.chat_conversations WHERE user_id = %s", (user_id,)) == 8


# -- waiting -----------------------------------------------------------------------------------------------


def test_a_waiting_caller_wakes_when_the_profile_appears(conn: Conn, settings: Settings) -> None:
    user_id = signup(conn, "email")
    with chat_service(settings, chat_wait_timeout=5.0, chat_fallback="error") as (service, _):
        thread, outcome = in_thread(lambda: service.create_conversation(user_id, "hello"))
        assert wait_for(lambda: count(conn, WAITERS) == 1)
        create_profile(conn, user_id)  # as the worker would; autocommit: committed on return
        committed = time.monotonic()
        thread.join(timeout=5)
        woke_after = time.monotonic() - committed
    assert isinstance(outcome[0], Conversation), outcome
    assert woke_after < 0.2, woke_after
    assert count(conn, WAITERS) == 0  # the notifying insert unregistered the waiter


def test_a_caller_arriving_before_listen_is_up_registers_once(conn: Conn, settings: Settings) -> None:
    user_id = signup(conn, "email")
    update = {"chat_wait_timeout": 5.0, "chat_fallback": "error"}
    with (
        ConnectionPool(
            settings.database_url,
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True},
            connection_class=CountingConnection,
        ) as pool,
    ):
        pool.wait()
        before = CountingConnection.round_trips
        with ChatService(pool, settings.model_copy(update=update)) as service:
            thread, outcome = in_thread(lambda: service.create_conversation(user_id))  # LISTEN connecting
            assert wait_for(lambda: count(conn, WAITERS) == 1)
            create_profile(conn, user_id)
            thread.join(timeout=5)
    assert isinstance(outcome[0], Conversation), outcome
    # insert (23503), watch_profile, recheck_profile, insert, unwatch (ProfileGate runs the caller's own
    # insert, then removes the registration): the first LISTEN session's recheck needs no re-registration
    assert CountingConnection.round_trips - before == 5


def test_a_profile_insert_in_flight_during_the_recheck_is_not_missed(conn: Conn, settings: Settings) -> None:
    """The insert's trigger looked for waiters (none yet), but it commits after the waiter registered."""
    user_id = signup(conn, "email")
    with (
        chat_service(settings, chat_wait_timeout=5.0, chat_fallback="error") as (service, _),
        psycopg.connect(settings.database_url) as worker,
    ):
        create_profile(worker, user_id)  # trigger fired, transaction still open
        thread, outcome = in_thread(lambda: service.create_conversation(user_id))
        blocked = (
            "SELECT count(*) FROM pg_locks WHERE NOT granted AND mode = 'ShareLock' AND locktype = 'advisory'"
        )
        assert wait_for(lambda: count(conn, blocked) == 1)  # the re-check waits for the in-flight insert
        worker.commit()
        committed = time.monotonic()
        thread.join(timeout=6)
        returned_after = time.monotonic() - committed
    assert isinstance(outcome[0], Conversation), outcome
    assert returned_after < 0.5, returned_after  # not rescued by the timeout path
    assert count(conn, WAITERS) == 0


def test_waiting_issues_no_queries_and_burns_no_cpu(conn: Conn, settings: Settings) -> None:
    """A short and a long wait cost the same round trips; the LISTEN backend stays silent; the CPU idles."""
    listener_activity = "SELECT query_start, pid FROM pg_stat_activity WHERE application_name = %s"
    costs = []
    for timeout in (0.3, 1.5):
        with chat_service(settings, chat_wait_timeout=timeout, chat_fallback="error") as (service, _):
            user_id = signup(conn, "phone")
            listener_before = conn.execute(listener_activity, (LISTEN_APP,)).fetchone()
            trips, cpu = CountingConnection.round_trips, time.process_time()
            with pytest.raises(ProfileNotReadyError):
                service.create_conversation(user_id)
            cpu = time.process_time() - cpu
            costs.append(CountingConnection.round_trips - trips)
            assert conn.execute(listener_activity, (LISTEN_APP,)).fetchone() == listener_before
            assert cpu < 0.5 * timeout, cpu  # a polling loop would burn most of the wait
    # insert (23503), watch_profile, recheck_profile, profile_state + unwatch: nothing scales with the wait
    assert costs == [4, 4]


# -- timeout paths -----------------------------------------------------------------------------------------

# The wait ends at the timeout; a few round trips follow (profilesync.chat.service's bound: timeout +
# lock_timeout + a few round trips): tens of milliseconds on a quiet box, more while other processes load a CI
# machine.
ROUND_TRIPS = 0.3


def test_timeout_with_error_fallback_raises_profile_not_ready(conn: Conn, settings: Settings) -> None:
    user_id = signup(conn, "email")
    with chat_service(settings, chat_wait_timeout=0.5, chat_fallback="error") as (service, _):
        started = time.monotonic()
        with pytest.raises(ProfileNotReadyError, match=str(user_id)):
            service.create_conversation(user_id)
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed <= 0.5 + ROUND_TRIPS, elapsed
    assert not has_profile(conn, user_id)
    assert count(conn, WAITERS) == 0


def test_timeout_with_create_fallback_creates_the_mapped_profile_inline(
    conn: Conn, settings: Settings
) -> None:
    user_id = signup(conn, "google")
    with chat_service(settings, chat_wait_timeout=0.5, chat_fallback="create") as (service, _):
        started = time.monotonic()
        conversation = service.create_conversation(user_id, "first")
        elapsed = time.monotonic() - started
    assert 0.5 <= elapsed <= 0.5 + ROUND_TRIPS, elapsed
    assert conversation.user_id == user_id
    row = conn.execute(
        "SELECT email, full_name, avatar_url FROM public.user_profiles WHERE id = %s", (user_id,)
    ).fetchone()
    google = make_signup("google", user_id)
    assert row == (google.email, google.user_meta["full_name"], google.user_meta["avatar_url"])
    # the signup's outbox event is retired, so the worker has nothing left to do
    assert count(conn, "SELECT count(*) FROM profile_sync.signup_events WHERE user_id = %s", (user_id,)) == 0
    assert count(conn, WAITERS) == 0


def test_zero_timeout_with_create_fallback_creates_inline_without_waiting(
    conn: Conn, settings: Settings
) -> None:
    user_id = signup(conn, "github")
    with chat_service(settings, chat_wait_timeout=0.0, chat_fallback="create") as (service, _):
        before = CountingConnection.round_trips
        service.create_conversation(user_id)
        assert CountingConnection.round_trips - before == 3  # insert, create_profiles, insert
    assert has_profile(conn, user_id)


# -- bad input ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fallback", ["create", "error"])
@pytest.mark.parametrize("timeout", [0.0, 1.0])
def test_unknown_and_deleted_users_raise_unknown_user(
    conn: Conn, settings: Settings, fallback: str, timeout: float
) -> None:
    soft_deleted = signup(conn, "email")
    conn.execute("UPDATE auth.users SET deleted_at = now() WHERE id = %s", (soft_deleted,))
    with chat_service(settings, chat_wait_timeout=timeout, chat_fallback=fallback) as (service, _):
        for user_id in (uuid.uuid4(), soft_deleted):
            started = time.monotonic()
            with pytest.raises(UnknownUserError, match=str(user_id)):
                service.create_conversation(user_id)
            assert time.monotonic() - started < 0.5  # known at once, not after the timeout
    assert count(conn, WAITERS) == 0
    assert count(conn, "SELECT count(*) FROM public.user_profiles") == 0


def test_a_profile_the_table_rejects_is_profile_not_ready_not_a_raw_error(
    conn: Conn, settings: Settings
) -> None:
    user_id = signup(conn, "google", user_meta={"full_name": "Mallory"})
    reject_profile_of(conn, user_id)
    with (
        chat_service(settings, chat_wait_timeout=0.0, chat_fallback="create") as (service, _),
        pytest.raises(ProfileNotReadyError, match="inline creation failed: 23514") as raised,
    ):
        service.create_conversation(user_id)
    assert isinstance(raised.value.__cause__, psycopg.errors.CheckViolation)


@pytest.mark.parametrize("value", ["not-a-uuid", "", 42, None])
def test_a_non_uuid_user_id_is_a_clear_value_error(settings: Settings, value: Any) -> None:
    with chat_service(settings) as (service, _), pytest.raises(InvalidUserIdError) as raised:
        service.create_conversation(value)
    assert isinstance(raised.value, ValueError)
    assert str(raised.value).startswith("Not a user id (expected a UUID)")


# -- the readiness signal ----------------------------------------------------------------------------------


def test_the_trigger_notifies_only_waited_on_users_once_per_batch(conn: Conn, settings: Settings) -> None:
    users = [signup(conn, "email") for _ in range(4)]
    with psycopg.connect(settings.database_url, autocommit=True) as listen:
        listen.execute(f"LISTEN {CHANNEL}")
        create_profile(conn, users[0])  # nobody waits: no NOTIFY (no commit-time notify lock either)
        assert list(listen.notifies(timeout=0.2)) == []

        pid = listen.info.backend_pid
        tokens = [uuid.uuid4() for _ in users[:3]]
        states = [
            conn.execute("SELECT profile_sync.watch_profile(%s, %s, %s)", (u, pid, t)).fetchone()
            for u, t in zip(users[:3], tokens, strict=True)
        ]
        assert [s[0] if s else None for s in states] == ["ready", "pending", "pending"]
        with conn.transaction():  # one batch of 3 profiles: one trigger call
            conn.execute("SET LOCAL track_functions = 'pl'")
            conn.execute("SELECT * FROM profile_sync.create_profiles(%s)", (users[1:],))
            trigger = "'profile_sync.on_user_profiles_inserted'::regproc"
            assert count(conn, f"SELECT pg_stat_get_xact_function_calls({trigger})") == 1
        payloads = sorted(n.payload for n in listen.notifies(timeout=0.5))
    assert payloads == sorted(str(t) for t in tokens[1:])  # the waiters' tokens, never a user id
    assert count(conn, WAITERS) == 2  # each waiter removes its own registration


def test_the_readiness_functions_are_security_definer_with_empty_search_path(conn: Conn) -> None:
    rows = conn.execute(
        """
        SELECT p.proname, p.prosecdef, p.proconfig
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'profile_sync'
          AND p.proname IN ('on_user_profiles_inserted', 'watch_profile', 'recheck_profile', 'profile_state',
                            'unwatch_profiles', 'forget_dead_profile_waiters')
        """
    ).fetchall()
    assert len(rows) == 6
    assert all(secdef and config[0] == 'search_path=""' for _, secdef, config in rows), rows


def test_a_profile_insert_never_fails_because_of_the_readiness_trigger(conn: Conn) -> None:
    user_id = signup(conn, "email")
    conn.execute("ALTER TABLE profile_sync.profile_waiters RENAME TO profile_waiters_gone")
    create_profile(conn, user_id)
    assert has_profile(conn, user_id)


# -- the LISTEN connection ---------------------------------------------------------------------------------


def test_waiters_recheck_after_the_listen_connection_is_replaced(conn: Conn, settings: Settings) -> None:
    user_id = signup(conn, "email")
    with (
        capture_logs() as logs,
        chat_service(settings, chat_wait_timeout=5.0, chat_fallback="error") as (service, _),
    ):
        thread, outcome = in_thread(lambda: service.create_conversation(user_id))
        assert wait_for(lambda: count(conn, WAITERS) == 1)
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (LISTEN_APP,),
        )
        create_profile(conn, user_id)  # most likely while nobody listens: its NOTIFY is lost
        started = time.monotonic()
        thread.join(timeout=6)
        elapsed = time.monotonic() - started
    assert isinstance(outcome[0], Conversation), outcome
    assert elapsed < 1.0, elapsed
    events = [entry["event"] for entry in logs]
    assert "chat LISTEN connection lost; reconnecting" in events
    assert events.count("chat listening for profile readiness") == 2
    assert count(conn, WAITERS) == 0


def test_registrations_of_dead_listeners_are_forgotten_on_connect(conn: Conn, settings: Settings) -> None:
    user_id = signup(conn, "email")
    conn.execute(
        "INSERT INTO profile_sync.profile_waiters (user_id, listener_pid, token)"
        " VALUES (%s, 2147483647, gen_random_uuid())",
        (user_id,),
    )
    with chat_service(settings):
        assert wait_for(lambda: count(conn, WAITERS) == 0)


def test_close_releases_waiting_callers_to_the_fallback(conn: Conn, settings: Settings) -> None:
    user_id = signup(conn, "email")
    with chat_service(settings, chat_wait_timeout=30.0, chat_fallback="create") as (service, _):
        thread, outcome = in_thread(lambda: service.create_conversation(user_id))
        assert wait_for(lambda: count(conn, WAITERS) == 1)
        started = time.monotonic()
        service.close()
        thread.join(timeout=5)
        elapsed = time.monotonic() - started
    assert isinstance(outcome[0], Conversation), outcome
    assert elapsed < 1.0, elapsed  # not the 30 s timeout
    assert has_profile(conn, user_id)
    assert count(conn, WAITERS) == 0


def test_a_transaction_pooler_url_is_refused(settings: Settings) -> None:
    pooled = settings.model_copy(update={"database_url": "postgresql://u@db.example.com:6543/postgres"})
    with (
        ConnectionPool(settings.database_url, min_size=0, max_size=1) as pool,
        pytest.raises(ConfigError, match="transaction pooler"),
    ):
        ChatService(pool, pooled)


# -- under load, with the real pipeline --------------------------------------------------------------------


def _start_worker(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    env["PROFILESYNC_LOG_FORMAT"] = "json"
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "profilesync.cli", "worker"], env=env, stdout=sink, stderr=sink
        )


@pytest.mark.parametrize("hold_profiles", [False, True], ids=["race", "all-wait"])
def test_200_new_users_chat_right_after_signup_while_workers_run(
    conn: Conn, settings: Settings, tmp_path: Path, hold_profiles: bool
) -> None:
    """Fallback "error": each conversation must come through the readiness signal, none by inline creation.

    "race": the workers usually win against the chat insert, so only some users wait. "all-wait": the test
    holds a SHARE lock on user_profiles (the workers' inserts queue behind it, the chat's foreign-key checks
    don't) until all 200 users wait, so the whole burst takes the 23503 → wait → wake path.
    """
    n = 200
    workers = [_start_worker(settings, tmp_path / f"worker{i}.log") for i in range(2)]
    try:
        with (
            running_publisher(settings),
            chat_service(settings, max_size=20, chat_wait_timeout=20.0, chat_fallback="error") as (
                service,
                _,
            ),
            ConnectionPool(
                settings.database_url, min_size=20, max_size=20, kwargs={"autocommit": True}
            ) as auth,
            psycopg.connect(settings.database_url) as holder,
        ):
            warmup = signup(conn, "email")  # the workers are up and the pipeline flows
            assert wait_for(lambda: has_profile(conn, warmup), timeout=30)
            if hold_profiles:
                holder.execute("LOCK TABLE public.user_profiles IN SHARE MODE")
            start = threading.Barrier(n)

            def new_user_chats(i: int) -> Conversation:
                start.wait()
                with auth.connection() as auth_conn:
                    user_id = signup(auth_conn, "email")
                return service.create_conversation(user_id, f"chat {i}")

            with capture_logs() as logs, ThreadPoolExecutor(max_workers=n) as executor:
                futures = [executor.submit(new_user_chats, i) for i in range(n)]
                if hold_profiles:
                    assert wait_for(lambda: count(conn, WAITERS) == n, timeout=30)
                    assert not any(f.done() for f in futures)
                    holder.commit()
                released = time.monotonic()
                results = [f.exception(timeout=20) or f.result() for f in futures]
                all_done_after = time.monotonic() - released
    finally:
        for worker in workers:
            worker.send_signal(signal.SIGTERM)
        for worker in workers:
            worker.wait(timeout=15)
    errors = [r for r in results if not isinstance(r, Conversation)]
    assert errors == []
    assert len({r.user_id for r in results if isinstance(r, Conversation)}) == n
    assert count(conn, "SELECT count(*) FROM public.chat_conversations") == n
    assert count(conn, WAITERS) == 0
    assert not [e for e in logs if e["event"] == "profile created inline after waiting"]
    if hold_profiles:
        waited = [e for e in logs if e["event"] == "insert done after waiting for the profile"]
        assert len(waited) == n
        assert all_done_after < 5.0, all_done_after
