"""The readiness signal: one dedicated autocommit LISTEN connection per ChatService, serviced by one thread.

The thread dispatches each `profile_sync_ready` NOTIFY to the in-process waiter whose token it carries (an
empty payload: to every waiter). It reconnects with backoff when the connection dies (profilesync.listen);
once LISTENing again it asks every waiter to re-check, since notifications sent while nobody listened are
lost. Any role may NOTIFY: a wake-up is only a hint, which the waiter checks.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from profilesync import listen
from profilesync.backoff import Backoff
from profilesync.chat.waiters import WaiterRegistry
from profilesync.config import Settings
from profilesync.errors import InsufficientPrivilegeError
from profilesync.logs import get_logger

CHANNEL = "profile_sync_ready"
_SLICE = 0.25  # seconds per blocking notifies() call: bounds how long close() waits for the thread
_PROBE_INTERVAL = 30.0  # seconds of silence before a liveness probe of the LISTEN connection
_FIRST_RETRY = 0.1

log = get_logger(__name__)


@dataclass(frozen=True)
class ListenSession:
    """One LISTEN connection's lifetime: `number` grows with every reconnect."""

    number: int
    backend_pid: int


class ReadinessListener:
    def __init__(self, settings: Settings, registry: WaiterRegistry) -> None:
        self._url = listen.listen_url(settings)
        self._backoff = Backoff(_FIRST_RETRY, settings.reconnect_max_delay)
        self._malformed = listen.MalformedPayloads(CHANNEL)
        self._registry = registry
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._current: ListenSession | None = None
        self._fatal: InsufficientPrivilegeError | None = None
        self._sessions = 0
        self._thread = threading.Thread(target=self._run, name="profilesync-chat-listen", daemon=True)
        self._thread.start()

    def current(self, timeout: float) -> ListenSession | None:
        """The session once LISTEN is active; None if it is not within `timeout` seconds, or after close().

        Raises InsufficientPrivilegeError if the listener stopped for want of a privilege.
        """
        with self._changed:
            self._changed.wait_for(
                lambda: self._current is not None or self._stop.is_set() or self._fatal is not None,
                max(timeout, 0.0),
            )
            if self._fatal is not None:
                raise self._fatal
            return None if self._stop.is_set() else self._current

    def close(self) -> None:
        self._stop.set()
        with self._changed:
            self._changed.notify_all()
        self._thread.join(timeout=10)

    def _set_session(self, pid: int | None) -> None:
        with self._changed:
            if pid is None:
                self._current = None
            else:
                self._sessions += 1
                self._current = ListenSession(self._sessions, pid)
            self._changed.notify_all()

    def _run(self) -> None:
        try:
            listen.run_reconnecting(
                self._session,
                self._stop,
                what="chat LISTEN",
                backoff=self._backoff,
                on_lost=lambda _: self._set_session(None),
            )
        except InsufficientPrivilegeError as exc:  # configuration: every waiter raises it, none retries
            log.error("chat readiness listener stopped", error=str(exc))
            with self._changed:
                self._fatal = exc
        finally:
            self._set_session(None)  # waiters stop registering against a connection that is gone

    def _session(self) -> None:
        with listen.connect(self._url, CHANNEL, "profilesync-chat-listen") as conn:
            row = conn.execute("SELECT profile_sync.forget_dead_profile_waiters()").fetchone()
            pid = conn.info.backend_pid
            self._set_session(pid)
            rechecks = self._registry.recheck_all()
            log.info(
                "chat listening for profile readiness",
                channel=CHANNEL,
                backend_pid=pid,
                dead_waiters_forgotten=row[0] if row else 0,
                rechecks=rechecks,
            )
            self._serve(conn)

    def _serve(self, conn: psycopg.Connection[Any]) -> None:
        """Dispatch notifications until stopped; probe the connection after a long silence."""
        last_heard = time.monotonic()
        while not self._stop.is_set():
            heard = False
            for notify in conn.notifies(timeout=_SLICE):
                heard = True
                self._dispatch(notify.payload)
            if heard:
                last_heard = time.monotonic()
            elif time.monotonic() - last_heard >= _PROBE_INTERVAL:
                conn.execute("SELECT 1")
                last_heard = time.monotonic()

    def _dispatch(self, payload: str) -> None:
        if payload == "":
            self._registry.notify_all()
            return
        try:
            token = uuid.UUID(payload)
        except ValueError:
            self._malformed.seen(payload)
            return
        self._registry.notify(token)
