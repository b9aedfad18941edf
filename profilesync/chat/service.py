"""ChatService: create a conversation for a user whose profile may still be on its way."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

from profilesync import db
from profilesync.chat.errors import ProfileNotReadyError, UnknownUserError
from profilesync.chat.model import Conversation, parse_user_id
from profilesync.chat.readiness import ReadinessListener
from profilesync.chat.waiters import WaiterRegistry, Wake
from profilesync.config import Settings
from profilesync.logs import get_logger

log = get_logger(__name__)

_INSERT = """
INSERT INTO public.chat_conversations (user_id, title) VALUES (%s, %s)
RETURNING id, user_id, title, created_at
"""
_WATCH = "SELECT state, waiter_id FROM profile_sync.watch_profile(%s, %s, %s)"
_UNWATCH = "SELECT profile_sync.unwatch_profiles(%s)"
_STATE = "SELECT profile_sync.profile_state(%s)"
# The inline fallback, with a bound on its lock waits set first in the same statement (the function's argument
# depends on it) and for that statement's transaction only: one round trip.
_CREATE_PROFILE = """
SELECT p.created, p.missing
FROM (SELECT pg_catalog.set_config('lock_timeout', %s, true) AS bound) b,
     LATERAL profile_sync.create_profiles(CASE WHEN b.bound IS NOT NULL THEN %s::uuid[] END) p
"""


class ChatService:
    """Conversations for users whose profile a worker creates asynchronously after signup.

    `create_conversation` inserts first: when the profile exists that single INSERT is the whole cost. When
    the insert hits the foreign key (SQLSTATE 23503), it waits for the profile on the `profile_sync_ready`
    readiness signal (a NOTIFY from the user_profiles insert trigger, whoever inserts the profile), at most
    `settings.chat_wait_timeout` seconds, then retries the insert. If the profile is still missing:

    - `chat_fallback="create"`: creates the profile inline with `profile_sync.create_profiles` (idempotent,
      the worker's own mapping of auth metadata; the worker's job then finds it and does nothing), inserts;
      a profile the table's own constraints reject raises ProfileNotReadyError (psycopg error as __cause__);
    - `chat_fallback="error"`: raises ProfileNotReadyError (the caller may retry later). A timeout of 0
      skips the wait: the fallback applies at once.

    Bounded end to end: a wake-up is a hint (any role may NOTIFY; a false one goes back to waiting until the
    deadline), and the inline fallback waits at most `settings.lock_timeout` for other transactions' locks
    (then ProfileNotReadyError): a call returns within chat_wait_timeout + lock_timeout + a few round trips.

    A user absent from auth.users, or soft-deleted, raises UnknownUserError; a user id that is not a UUID
    raises InvalidUserIdError (a ValueError); a missing privilege raises InsufficientPrivilegeError. Lost
    connections surface as psycopg.OperationalError.

    Every statement runs in autocommit (set on the borrowed pool connection and restored), so the fast path
    is one round trip. Waiting holds no pool connection: callers block on an in-process Event, all woken by
    one LISTEN connection and thread per service. Use as a context manager, or call close().
    """

    def __init__(self, pool: ConnectionPool[Any], settings: Settings) -> None:
        self._pool = pool
        self._timeout = settings.chat_wait_timeout
        self._fallback = settings.chat_fallback
        self._fallback_budget = settings.lock_timeout
        self._registry = WaiterRegistry()
        self._listener = ReadinessListener(settings, self._registry)

    def __enter__(self) -> ChatService:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the LISTEN thread and close its connection (the pool stays the caller's).

        Callers still waiting stop waiting and take the fallback at once.
        """
        self._listener.close()
        self._registry.recheck_all()

    def create_conversation(self, user_id: uuid.UUID | str, title: str | None = None) -> Conversation:
        uid = parse_user_id(user_id)
        conversation = self._insert(uid, title)
        if conversation is not None:
            return conversation

        started = time.monotonic()
        if self._timeout > 0:
            conversation = self._wait_and_insert(uid, title, started + self._timeout)
            if conversation is not None:
                log.debug(
                    "conversation created after waiting for the profile",
                    user_id=str(uid),
                    waited_ms=round((time.monotonic() - started) * 1000, 1),
                )
                return conversation
        return self._after_timeout(uid, title)

    # -- steps, one round trip each --------------------------------------------------------------------------

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection() as conn:
                if conn.autocommit:
                    yield conn
                    return
                conn.autocommit = True  # a statement per transaction: no BEGIN/COMMIT round trips
                try:
                    yield conn
                finally:
                    if not conn.closed and not conn.broken:
                        conn.autocommit = False
        except errors.InsufficientPrivilege as exc:
            db.raise_if_denied(exc, "the chat service runs as the migrations' owner or service_role")
            raise

    def _insert(self, user_id: uuid.UUID, title: str | None) -> Conversation | None:
        """The conversation, or None when the profile does not exist (yet)."""
        try:
            with self._connection() as conn:
                row = conn.execute(_INSERT, (user_id, title)).fetchone()
        except errors.ForeignKeyViolation:
            return None
        assert row is not None
        return Conversation(*row)

    def _wait_and_insert(self, user_id: uuid.UUID, title: str | None, deadline: float) -> Conversation | None:
        """The conversation once the profile exists; None at the deadline; UnknownUserError for no such user.

        Register in-process first, then in the database (which re-checks), then block: a profile that appears
        at any point is either seen by the re-check or announced by NOTIFY. A wake-up is only a hint (any role
        may NOTIFY profile_sync_ready): the insert decides, and a false one goes back to waiting. Whatever
        happens, registrations still in the database are removed before returning.
        """
        registered: list[int] = []
        session = None
        with self._registry.watch(user_id) as waiter:
            try:
                while True:
                    current = self._listener.current(deadline - time.monotonic())
                    if current is None:
                        return None
                    ready = False
                    if current != session:  # first round, or the LISTEN connection was replaced
                        session = current
                        state, waiter_id = self._watch(user_id, session.backend_pid, deadline)
                        if state == "unknown":
                            raise UnknownUserError(str(user_id))
                        if waiter_id is not None:
                            registered.append(waiter_id)
                        elif state != "ready":
                            return None  # the deadline passed while waiting for in-flight profile inserts
                        ready = state == "ready"
                    if not ready:
                        wake = waiter.wait(deadline - time.monotonic())
                        if wake is Wake.TIMEOUT:
                            return None
                        ready = wake is Wake.READY  # RECHECK: a LISTEN session started; re-register with it
                    if ready:
                        conversation = self._insert(user_id, title)
                        if conversation is not None:
                            registered.clear()  # the profile's insert unregistered this user's waiters
                            return conversation
            finally:
                if registered:
                    self._unwatch(registered)

    def _watch(self, user_id: uuid.UUID, listener_pid: int, deadline: float) -> tuple[str, int | None]:
        lock_timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            with self._connection() as conn:
                row = conn.execute(_WATCH, (user_id, listener_pid, lock_timeout_ms)).fetchone()
        except errors.LockNotAvailable:
            return "pending", None
        assert row is not None
        return row[0], row[1]

    def _unwatch(self, waiter_ids: list[int]) -> None:
        try:
            with self._connection() as conn:
                conn.execute(_UNWATCH, (waiter_ids,))
        except errors.LockNotAvailable:  # unwatch_profiles' own lock_timeout (0005): a profile insert holds
            log.warning("waiter rows left for their profile's insert to remove", waiters=len(waiter_ids))

    def _after_timeout(self, user_id: uuid.UUID, title: str | None) -> Conversation:
        if self._fallback == "create":
            self._create_profile(user_id, budget=self._fallback_budget)
        else:
            with self._connection() as conn:
                state_row = conn.execute(_STATE, (user_id,)).fetchone()
            state = state_row[0] if state_row else "unknown"
            if state == "unknown":
                raise UnknownUserError(str(user_id))
            if state == "pending":
                log.warning("profile not ready", user_id=str(user_id), timeout=self._timeout)
                raise ProfileNotReadyError(f"user {user_id}, waited {self._timeout:g}s")
        conversation = self._insert(user_id, title)
        if conversation is None:  # the profile vanished again: the user was deleted meanwhile
            raise UnknownUserError(str(user_id))
        return conversation

    def _create_profile(self, user_id: uuid.UUID, budget: float) -> None:
        """Create the profile inline, waiting at most `budget` seconds for other transactions' locks (a
        wedged worker holding the user's row must not hang the caller)."""
        ms = str(max(1, round(budget * 1000)))
        try:
            with self._connection() as conn:
                row = conn.execute(_CREATE_PROFILE, (ms, [user_id])).fetchone()
        except (errors.LockNotAvailable, errors.QueryCanceled) as exc:
            log.warning("inline profile creation timed out", user_id=str(user_id), budget_s=budget)
            raise ProfileNotReadyError(f"user {user_id}, inline creation blocked for {budget:g}s") from exc
        except errors.ForeignKeyViolation as exc:  # deleted from auth.users between the read and the insert
            raise UnknownUserError(str(user_id)) from exc
        except (errors.IntegrityError, errors.DataError) as exc:  # rejected by the table's own constraints
            log.error("inline profile creation failed", user_id=str(user_id), error=type(exc).__name__)
            raise ProfileNotReadyError(f"user {user_id}, inline creation failed: {exc.sqlstate}") from exc
        assert row is not None
        created, missing = row
        if missing:
            raise UnknownUserError(str(user_id))
        log.info("profile created inline after waiting", user_id=str(user_id), created=bool(created))
