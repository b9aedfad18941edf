"""The readiness signal: one dedicated autocommit LISTEN connection per ChatService, serviced by one thread.

The thread dispatches each `profile_sync_ready` NOTIFY to the in-process waiters of that user. It reconnects
with backoff when the connection dies; once LISTENing again it asks every waiter to re-check, since
notifications sent while nobody listened are lost.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from chat.waiters import WaiterRegistry
from profilesync import db
from profilesync.config import Settings, is_transaction_pooler, redact
from profilesync.errors import ConfigError
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
        if is_transaction_pooler(settings.listen_url):
            raise ConfigError(
                f"cannot LISTEN through a transaction pooler ({redact(settings.listen_url)}); "
                "set LISTEN_DATABASE_URL to a direct or session-mode connection"
            )
        self._url = settings.listen_url
        self._max_delay = settings.reconnect_max_delay
        self._registry = registry
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._current: ListenSession | None = None
        self._sessions = 0
        self._thread = threading.Thread(target=self._run, name="profilesync-chat-listen", daemon=True)
        self._thread.start()

    def current(self, timeout: float) -> ListenSession | None:
        """The session once LISTEN is active; None if it is not within `timeout` seconds, or after close()."""
        with self._changed:
            self._changed.wait_for(
                lambda: self._current is not None or self._stop.is_set(), max(timeout, 0.0)
            )
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
        delay = 0.0
        try:
            while not self._stop.is_set():
                try:
                    self._session()
                except (psycopg.Error, OSError) as exc:
                    self._set_session(None)
                    delay = min(self._max_delay, max(_FIRST_RETRY, delay * 2))
                    log.warning("chat LISTEN connection lost; reconnecting", error=str(exc), retry_in=delay)
                    self._stop.wait(delay)
                else:
                    delay = 0.0
        finally:
            self._set_session(None)  # waiters stop registering against a connection that is gone

    def _session(self) -> None:
        with db.connect(self._url, autocommit=True, application_name="profilesync-chat-listen") as conn:
            conn.execute(f"LISTEN {CHANNEL}")
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
        try:
            user_id = uuid.UUID(payload)
        except ValueError:
            log.warning("ignoring malformed readiness NOTIFY", payload=payload[:100])
            return
        self._registry.notify(user_id)
