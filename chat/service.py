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

from chat.errors import ProfileNotReadyError, UnknownUserError
from chat.model import Conversation, parse_user_id
from chat.readiness import ReadinessListener
from chat.waiters import WaiterRegistry, Wake
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
_CREATE_PROFILE = "SELECT created, missing FROM profile_sync.create_profiles(%s)"


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

    A user absent from auth.users, or soft-deleted, raises UnknownUserError; a user id that is not a UUID
    raises InvalidUserIdError (a ValueError). Lost connections surface as psycopg.OperationalError.

    Every statement runs in autocommit (set on the borrowed pool connection and restored), so the fast path
    is one round trip. Waiting holds no pool connection: callers block on an in-process Event, all woken by
    one LISTEN connection and thread per service. Use as a context manager, or call close().
    """

    def __init__(self, pool: ConnectionPool[Any], settings: Settings) -> None:
        self._pool = pool
        self._timeout = settings.chat_wait_timeout
        self._fallback = settings.chat_fallback
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
        if self._timeout > 0 and self._await_profile(uid, started + self._timeout):
            conversation = self._insert(uid, title)
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

    def _insert(self, user_id: uuid.UUID, title: str | None) -> Conversation | None:
        """The conversation, or None when the profile does not exist (yet)."""
        try:
            with self._connection() as conn:
                row = conn.execute(_INSERT, (user_id, title)).fetchone()
        except errors.ForeignKeyViolation:
            return None
        assert row is not None
        return Conversation(*row)

    def _await_profile(self, user_id: uuid.UUID, deadline: float) -> bool:
        """True once the profile exists, False at the deadline; UnknownUserError if there is no such user.

        Register in-process first, then in the database (which re-checks), then block: a profile that appears
        at any point is either seen by the re-check or announced by NOTIFY.
        """
        registered: list[int] = []
        session = None
        with self._registry.watch(user_id) as waiter:
            try:
                while True:
                    current = self._listener.current(deadline - time.monotonic())
                    if current is None:
                        return False
                    if current != session:  # first round, or the LISTEN connection was replaced
                        session = current
                        state, waiter_id = self._watch(user_id, session.backend_pid, deadline)
                        if state == "unknown":
                            raise UnknownUserError(str(user_id))
                        if state == "ready":
                            return True
                        if waiter_id is None:
                            return False  # the deadline passed while waiting for in-flight profile inserts
                        registered.append(waiter_id)
                    wake = waiter.wait(deadline - time.monotonic())
                    if wake is Wake.READY:
                        registered.clear()  # the notifying insert unregistered this user's waiters
                        return True
                    if wake is Wake.TIMEOUT:
                        return False
                    # Wake.RECHECK: a LISTEN session started; unless it is ours, register with it, re-check.
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
        with self._connection() as conn:
            conn.execute(_UNWATCH, (waiter_ids,))

    def _after_timeout(self, user_id: uuid.UUID, title: str | None) -> Conversation:
        if self._fallback == "create":
            self._create_profile(user_id)
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

    def _create_profile(self, user_id: uuid.UUID) -> None:
        try:
            with self._connection() as conn:
                row = conn.execute(_CREATE_PROFILE, ([user_id],)).fetchone()
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
