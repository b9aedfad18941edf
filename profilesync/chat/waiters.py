"""In-process waiters: callers block on an Event each; the LISTEN thread wakes them by token.

A token is the opaque random value a waiter registers in the database (profile_sync.profile_waiters) and the
readiness NOTIFY carries back: the channel, readable by any session, never names the user. A waiter takes a
new token for every registration (one per LISTEN session it registers with).
"""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


class Wake(enum.Enum):
    READY = "ready"  # a NOTIFY said the profile may exist (a hint: any role may NOTIFY)
    RECHECK = "recheck"  # the LISTEN connection was (re)established: wake-ups may have been missed
    TIMEOUT = "timeout"


class Waiter:
    """One blocked caller. Each wake-up is consumed by the wait that returns it (READY before RECHECK)."""

    def __init__(self, registry: WaiterRegistry) -> None:
        self._registry = registry
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._ready = False
        self._recheck = False
        self.tokens: list[uuid.UUID] = []  # every token registered for this wait, oldest first

    def new_token(self) -> uuid.UUID:
        """A fresh token, already routed to this waiter (register it in the database after this)."""
        token = uuid.uuid4()
        self._registry.route(token, self)
        self.tokens.append(token)
        return token

    def wake(self, ready: bool) -> None:
        with self._lock:
            if ready:
                self._ready = True
            else:
                self._recheck = True
            self._event.set()

    def wait(self, timeout: float) -> Wake:
        """Block (no polling) until woken or `timeout` seconds have passed."""
        if not self._event.wait(max(timeout, 0.0)):
            return Wake.TIMEOUT
        with self._lock:
            if self._ready:
                self._ready = False
                wake = Wake.READY
            else:
                self._recheck = False
                wake = Wake.RECHECK
            if not self._recheck:  # a recheck still pending after a READY keeps the event set
                self._event.clear()
            return wake


class WaiterRegistry:
    """The waiters of one ChatService and their tokens. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: set[Waiter] = set()
        self._by_token: dict[uuid.UUID, Waiter] = {}

    @contextmanager
    def watch(self) -> Iterator[Waiter]:
        waiter = Waiter(self)
        with self._lock:
            self._waiters.add(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                self._waiters.discard(waiter)
                for token in waiter.tokens:
                    self._by_token.pop(token, None)

    def route(self, token: uuid.UUID, waiter: Waiter) -> None:
        with self._lock:
            self._by_token[token] = waiter

    def notify(self, token: uuid.UUID) -> bool:
        """Wake the waiter that registered this token; False when no current waiter did."""
        with self._lock:
            waiter = self._by_token.get(token)
        if waiter is not None:
            waiter.wake(ready=True)
        return waiter is not None

    def notify_all(self) -> int:
        """Wake every current waiter to check its profile (a profile insert that could not tell whom it
        concerns); returns how many."""
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.wake(ready=True)
        return len(waiters)

    def recheck_all(self) -> int:
        """Ask every current waiter to re-register and re-check (after a LISTEN (re)connect)."""
        with self._lock:
            waiters = list(self._waiters)
        for waiter in waiters:
            waiter.wake(ready=False)
        return len(waiters)

    def __len__(self) -> int:
        with self._lock:
            return len(self._waiters)
