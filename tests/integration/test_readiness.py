"""Profile readiness with the real publisher and worker processes: a client transaction that stays open holds
up neither the workers nor the chat waiters of other users, and a session that LISTENs learns no user id."""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from profilesync.chat import ChatService, Conversation
from profilesync.chat.readiness import CHANNEL as READY_CHANNEL
from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.publisher.service import CHANNEL as SIGNUP_CHANNEL
from tests.harness import (
    act_as,
    auth_server,
    count,
    gotrue_signup,
    gotrue_update,
    process_env,
    signup,
    wait_for,
)

Conn = psycopg.Connection[Any]
WAITERS = "SELECT count(*) FROM profile_sync.profile_waiters"
BLOCKED = """
SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
"""
IDLE_PUBLISHER = "SELECT count(*) FROM profile_sync.publishers WHERE idle"
# Well above what a worker batch takes on a loaded box, well below the lock wait a convoy would cost
# (the children's PROFILESYNC_LOCK_TIMEOUT) and the chat timeout.
PROMPT = 3.0
LOCK_TIMEOUT = 6
CHAT_TIMEOUT = 20.0


def has_profile(conn: Conn, user_id: uuid.UUID) -> bool:
    return count(conn, "SELECT count(*) FROM public.user_profiles WHERE id = %s", (user_id,)) == 1


def start_pipeline(settings: Settings, tmp_path: Path, conn: Conn) -> Children:
    env = process_env(
        settings,
        PROFILESYNC_LOCK_TIMEOUT=str(LOCK_TIMEOUT),
        PROFILESYNC_STATEMENT_TIMEOUT=str(2 * LOCK_TIMEOUT),
    )
    children = Children(env, tmp_path)
    children.start("publisher", "publisher")
    children.start("worker", "worker")
    assert wait_for(lambda: count(conn, IDLE_PUBLISHER) == 1), children.logs()[-3000:]
    return children


def timed(func: Any) -> tuple[float, Any]:
    started = time.monotonic()
    try:
        result = func()
    except Exception as exc:
        result = exc
    return time.monotonic() - started, result


def test_a_client_transaction_left_open_stalls_neither_workers_nor_other_users_waiters(
    conn: Conn, settings: Settings, tmp_path: Path
) -> None:
    """A service-role request (PostgREST's shape) inserts a conversation for a user whose profile is not there
    yet: the client guarantee creates that profile inline, and the transaction stays open. Meanwhile a chat
    caller waits for that very user, new users sign up, and chat callers wait for theirs."""
    held = signup(conn, "email")  # before the pipeline runs: its profile comes from the client's transaction
    chat = settings.model_copy(update={"chat_wait_timeout": CHAT_TIMEOUT, "chat_fallback": "error"})
    with (
        psycopg.connect(settings.database_url) as client,
        ConnectionPool(settings.database_url, min_size=4, max_size=24, kwargs={"autocommit": True}) as pool,
        ConnectionPool(settings.database_url, min_size=4, max_size=12, kwargs={"autocommit": True}) as auth,
        ChatService(pool, chat) as chats,
        ThreadPoolExecutor(max_workers=24) as executor,
    ):
        act_as(client, "service_role", None)
        client.execute("INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, 'held')", (held,))
        children = start_pipeline(settings, tmp_path, conn)
        try:
            held_caller = executor.submit(timed, lambda: chats.create_conversation(held, "waits for it"))
            assert wait_for(lambda: count(conn, BLOCKED) == 1)  # its re-check waits for the client

            # Workers: plain signups get their profiles promptly.
            plain = []
            for _ in range(5):
                with auth.connection() as auth_conn:
                    user_id = gotrue_signup(auth_conn, "email")
                took, arrived = timed(
                    lambda user_id=user_id: wait_for(lambda: has_profile(conn, user_id), 30)
                )
                assert arrived, children.logs()[-3000:]
                plain.append(took)
            assert max(plain) < PROMPT, plain  # no worker waits behind the client's transaction

            # Chat callers of other new users: woken by their profile, not by the timeout.
            def new_user_chats(i: int) -> tuple[float, Any]:
                with auth.connection() as auth_conn:
                    user_id = gotrue_signup(auth_conn, "google")
                return timed(lambda: chats.create_conversation(user_id, f"chat {i}"))

            callers = [
                f.result(timeout=CHAT_TIMEOUT + 10)
                for f in [executor.submit(new_user_chats, i) for i in range(20)]
            ]
            assert [r for _, r in callers if not isinstance(r, Conversation)] == []
            assert max(took for took, _ in callers) < PROMPT, sorted(took for took, _ in callers)
            assert not held_caller.done()  # its profile is still in the client's open transaction

            client.commit()
            committed = time.monotonic()
            held_took, held_result = held_caller.result(timeout=CHAT_TIMEOUT + 10)
            held_after_commit = time.monotonic() - committed
        finally:
            codes = children.stop(timeout=20)
    assert codes == {"publisher": 0, "worker": 0}, children.logs()[-3000:]
    assert isinstance(held_result, Conversation), held_result
    assert held_after_commit < PROMPT, (held_took, held_after_commit)  # at the commit, not the deadline
    assert count(conn, WAITERS) == 0
    assert count(conn, "SELECT count(*) FROM public.chat_conversations") == 1 + 1 + 20


def test_a_listening_session_without_privileges_learns_no_user_id(
    conn: Conn, settings: Settings, tmp_path: Path
) -> None:
    """Signups, a metadata change, profile creation and a chat caller's wait, watched by a session that
    LISTENs on both channels as `anon` (LISTEN needs no privilege)."""
    children = Children(process_env(settings), tmp_path)
    children.start("publisher", "publisher")
    chat = settings.model_copy(update={"chat_wait_timeout": CHAT_TIMEOUT, "chat_fallback": "error"})
    with (
        psycopg.connect(settings.database_url, autocommit=True) as stranger,
        ConnectionPool(settings.database_url, min_size=1, max_size=4, kwargs={"autocommit": True}) as pool,
        ChatService(pool, chat) as chats,
    ):
        stranger.execute("SET ROLE anon")
        stranger.execute(f"LISTEN {SIGNUP_CHANNEL}")
        stranger.execute(f"LISTEN {READY_CHANNEL}")
        try:
            assert wait_for(lambda: count(conn, IDLE_PUBLISHER) == 1), children.logs()[-3000:]
            users = [gotrue_signup(conn, kind) for kind in ("email", "google", "anonymous")]
            with auth_server(conn):
                gotrue_update(conn, users[0], raw_user_meta_data={"full_name": "Renamed"})
            outcome: list[Any] = []
            caller = threading.Thread(
                target=lambda: outcome.append(timed(lambda: chats.create_conversation(users[1])))
            )
            caller.start()
            assert wait_for(lambda: count(conn, WAITERS) == 1)  # no worker yet: the caller waits
            children.start("worker", "worker")
            caller.join(CHAT_TIMEOUT + 10)
            assert wait_for(lambda: count(conn, "SELECT count(*) FROM public.user_profiles") == len(users))
            heard = list(stranger.notifies(timeout=2.0))  # everything sent so far has arrived by now
        finally:
            children.stop(timeout=20)
    assert isinstance(outcome[0][1], Conversation), outcome
    assert {n.channel for n in heard} == {SIGNUP_CHANNEL, READY_CHANNEL}  # the test heard both channels
    payloads = [n.payload.lower() for n in heard]
    for user_id in users:
        forms = {str(user_id), user_id.hex}
        assert not [p for p in payloads if any(form in p for form in forms)], (user_id, payloads)
    assert {n.payload for n in heard if n.channel == SIGNUP_CHANNEL} == {""}
