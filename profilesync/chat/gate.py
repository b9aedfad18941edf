"""ProfileGate: run server code's own insert for a user whose profile may still be on its way."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType
from typing import Any, Generic, TypeVar

import psycopg
from psycopg import errors
from psycopg_pool import ConnectionPool

from profilesync import db, dropped
from profilesync.chat.errors import ProfileNotReadyError, UnknownUserError
from profilesync.chat.model import parse_user_id
from profilesync.chat.readiness import ReadinessListener
from profilesync.chat.waiters import Waiter, WaiterRegistry, Wake
from profilesync.config import Settings
from profilesync.logs import get_logger

log = get_logger(__name__)

T = TypeVar("T")

Insert = Callable[[psycopg.Connection[Any]], T]
"""The caller's own statement(s) for the user, on an autocommit connection. A ForeignKeyViolation (23503)
it raises means "the profile is not there yet": it is called again once the profile exists."""
# The wait, one round trip each: register (committed before the re-check: sql/definitions/04_readiness.sql),
# re-check once the profile inserts in flight have ended; at the end the caller's insert, then the removal of
# the registrations (left in place when the insert fails), or the profile's state that removes them.
_WATCH = "SELECT profile_sync.watch_profile(%s, %s, %s)"
_RECHECK = "SELECT profile_sync.recheck_profile(%s, %s)"
_STATE_UNWATCHING = "SELECT profile_sync.profile_state(%s), profile_sync.unwatch_profiles(%s::uuid[])"
_UNWATCH = "SELECT profile_sync.unwatch_profiles(%s::uuid[])"
_STATE = "SELECT profile_sync.profile_state(%s)"
# The inline fallback, with a bound on its lock waits set first in the same statement (the function's argument
# depends on it) and for that statement's transaction only: one round trip.
_CREATE_PROFILE = """
SELECT p.created, p.missing
FROM (SELECT pg_catalog.set_config('lock_timeout', %s, true) AS bound) b,
     LATERAL profile_sync.create_profiles(CASE WHEN b.bound IS NOT NULL THEN %s::uuid[] END) p
"""


class ProfileGate(Generic[T]):
    """Server code's own inserts for users whose profile a worker creates asynchronously after signup: a
    server (holding the database URL, not a PostgREST client) that writes a row referencing the profile table
    right after a signup runs its insert through `run(user_id, insert)`.

    `run` inserts first: when the profile exists that single call is the whole cost. When the insert hits
    the foreign key (SQLSTATE 23503), it registers a random token for the user and waits for the profile on
    the `profile_sync_ready` readiness signal (a NOTIFY carrying that token, from the profile table's insert
    trigger, whoever inserts the profile), at most `settings.chat_wait_timeout` seconds, then retries the
    insert. At the deadline it reads where the profile stands: one that exists by then gets its insert. If
    the profile is still missing:

    - `chat_fallback="create"`: creates the profile inline with `profile_sync.create_profiles` (idempotent,
      the worker's own mapping of auth metadata; the worker's job then finds it and does nothing), inserts;
      a value the table's constraints reject is dropped (counted, logged) as on the worker's path; a profile
      they reject anyway raises ProfileNotReadyError (psycopg error as __cause__);
    - `chat_fallback="error"`: raises ProfileNotReadyError (the caller may retry later). A timeout of 0
      skips the wait: the fallback applies at once.

    Bounded end to end: a wake-up is a hint (any role may NOTIFY; a false one goes back to waiting until the
    deadline), and the inline fallback waits at most `settings.lock_timeout` for other transactions' locks
    (then ProfileNotReadyError): a call returns within chat_wait_timeout + lock_timeout + a few round trips.

    A user absent from auth.users, or soft-deleted, raises UnknownUserError; a user id that is not a UUID
    raises InvalidUserIdError (a ValueError); a missing privilege raises InsufficientPrivilegeError. Lost
    connections surface as psycopg.OperationalError.

    Every statement runs in autocommit (set on the borrowed pool connection and restored), so the fast path
    is one round trip. Waiting holds no pool connection (except while the re-check after registering waits
    for profile inserts already in flight): callers block on an in-process Event, all woken by one LISTEN
    connection and thread per service. Use as a context manager, or call close().
    """

    def __init__(self, pool: ConnectionPool[Any], settings: Settings) -> None:
        self._pool = pool
        self._timeout = settings.chat_wait_timeout
        self._fallback = settings.chat_fallback
        self._fallback_budget = settings.lock_timeout
        self._registry = WaiterRegistry()
        self._listener = ReadinessListener(settings, self._registry)

    def __enter__(self) -> ProfileGate[T]:
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

    def run(self, user_id: uuid.UUID | str, insert: Insert[T]) -> T:
        """`insert`'s result, once the user's profile exists (see the class)."""
        uid = parse_user_id(user_id)
        done = self._insert(insert)
        if done is not None:
            return done[0]

        started = time.monotonic()
        state = None
        if self._timeout > 0:
            with self._registry.watch() as waiter:
                try:
                    done = self._wait_and_insert(waiter, uid, insert, started + self._timeout)
                    if done is None:  # the deadline: where does the profile stand now?
                        state = self._state(uid, unwatch=waiter.tokens)
                        waiter.tokens.clear()
                finally:
                    if waiter.tokens:  # registrations left behind: by the insert's success, or an error
                        self._unwatch(waiter.tokens)
            if done is not None:
                log.debug(
                    "insert done after waiting for the profile",
                    user_id=str(uid),
                    waited_ms=round((time.monotonic() - started) * 1000, 1),
                )
                return done[0]
        return self._after_timeout(uid, insert, state)

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

    def _insert(self, insert: Insert[T]) -> tuple[T] | None:
        """The insert's result, or None when the profile does not exist (yet)."""
        try:
            with self._connection() as conn:
                return (insert(conn),)
        except errors.ForeignKeyViolation:
            return None

    def _wait_and_insert(
        self, waiter: Waiter, user_id: uuid.UUID, insert: Insert[T], deadline: float
    ) -> tuple[T] | None:
        """The insert's result once the profile exists; None at the deadline; UnknownUserError: no such user.

        Register (a new token per LISTEN session), then re-check once the profile inserts in flight have
        ended, then block: a profile that appears at any point is either seen by the re-check or announced by
        NOTIFY. A wake-up is only a hint (any role may NOTIFY profile_sync_ready): the insert decides, and a
        false one goes back to waiting. The registrations (waiter.tokens) are left to the caller.
        """
        session = None
        while True:
            current = self._listener.current(deadline - time.monotonic())
            if current is None:
                return None
            ready = False
            if current != session:  # first round, or the LISTEN connection was replaced
                session = current
                state: str | None = self._watch(user_id, session.backend_pid, waiter)
                if state == "pending":
                    state = self._recheck(user_id, deadline)
                if state == "unknown":
                    raise UnknownUserError(str(user_id))
                if state is None:
                    return None  # the deadline passed while waiting for profile inserts in flight
                ready = state == "ready"
            if not ready:
                wake = waiter.wait(deadline - time.monotonic())
                if wake is Wake.TIMEOUT:
                    return None
                ready = wake is Wake.READY  # RECHECK: a LISTEN session started; re-register with it
            if ready:
                done = self._insert(insert)
                if done is not None:
                    return done

    def _watch(self, user_id: uuid.UUID, listener_pid: int, waiter: Waiter) -> str:
        token = waiter.new_token()  # routed before it is registered: no NOTIFY for it can come first
        with self._connection() as conn:
            row = conn.execute(_WATCH, (user_id, listener_pid, token)).fetchone()
        assert row is not None
        if row[0] != "pending":  # nothing registered under it
            waiter.tokens.remove(token)
        return str(row[0])

    def _recheck(self, user_id: uuid.UUID, deadline: float) -> str | None:
        """The profile's state once the inserts in flight have ended; None if that takes past the deadline."""
        lock_timeout_ms = max(1, int((deadline - time.monotonic()) * 1000))
        try:
            with self._connection() as conn:
                row = conn.execute(_RECHECK, (user_id, lock_timeout_ms)).fetchone()
        except errors.LockNotAvailable:
            return None
        assert row is not None
        return str(row[0])

    def _state(self, user_id: uuid.UUID, unwatch: list[uuid.UUID]) -> str:
        with self._connection() as conn:
            if unwatch:
                row = conn.execute(_STATE_UNWATCHING, (user_id, unwatch)).fetchone()
            else:
                row = conn.execute(_STATE, (user_id,)).fetchone()
        return str(row[0]) if row else "unknown"

    def _unwatch(self, tokens: list[uuid.UUID]) -> None:
        with self._connection() as conn:
            conn.execute(_UNWATCH, (tokens,))

    def _after_timeout(self, user_id: uuid.UUID, insert: Insert[T], state: str | None) -> T:
        """After the wait (`state`: the profile's state read at its end, None without a wait)."""
        if state is None and self._fallback == "error":
            state = self._state(user_id, unwatch=[])
        if state == "unknown":
            raise UnknownUserError(str(user_id))
        if state != "ready":
            if self._fallback == "error":
                log.warning("profile not ready", user_id=str(user_id), timeout=self._timeout)
                raise ProfileNotReadyError(f"user {user_id}, waited {self._timeout:g}s")
            self._create_profile(user_id, budget=self._fallback_budget)
        done = self._insert(insert)
        if done is None:  # the profile vanished again: the user was deleted meanwhile
            raise UnknownUserError(str(user_id))
        return done[0]

    def _create_profile(self, user_id: uuid.UUID, budget: float) -> None:
        """Create the profile inline, waiting at most `budget` seconds for other transactions' locks (a
        wedged worker holding the user's row must not hang the caller)."""
        ms = str(max(1, round(budget * 1000)))
        try:
            with self._connection() as conn:
                conn.add_notice_handler(dropped.report)  # values the table's constraints rejected
                try:
                    row = conn.execute(_CREATE_PROFILE, (ms, [user_id])).fetchone()
                finally:
                    conn.remove_notice_handler(dropped.report)
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
