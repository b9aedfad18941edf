"""In-process waiters: callers block on an Event each; the LISTEN thread wakes them by user id."""

from __future__ import annotations

import enum
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager


class Wake(enum.Enum):
    READY = "ready"  # a NOTIFY said the profile exists (a hint: any role may NOTIFY)
    RECHECK = "recheck"  # the LISTEN connection was (re)established: wake-ups may have been missed
    TIMEOUT = "timeout"


class Waiter:
    """One blocked caller. Each wake-up is consumed by the wait that returns it (READY before RECHECK)."""

    def __init__(self, user_id: uuid.UUID) -> None:
        self.user_id = user_id
        self._lock = threading.Lock()
        self._event = threading.Event()
        self._ready = False
        self._recheck = False

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
    """The waiters of one ChatService, by user id. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._by_user: dict[uuid.UUID, set[Waiter]] = {}

    @contextmanager
    def watch(self, user_id: uuid.UUID) -> Iterator[Waiter]:
        waiter = Waiter(user_id)
        with self._lock:
            self._by_user.setdefault(user_id, set()).add(waiter)
        try:
            yield waiter
        finally:
            with self._lock:
                waiters = self._by_user[user_id]
                waiters.discard(waiter)
                if not waiters:
                    del self._by_user[user_id]

    def notify(self, user_id: uuid.UUID) -> int:
        """Wake the waiters of this user's profile; returns how many were woken."""
        with self._lock:
            waiters = list(self._by_user.get(user_id, ()))
        for waiter in waiters:
            waiter.wake(ready=True)
        return len(waiters)

    def recheck_all(self) -> int:
        """Ask every current waiter to re-register and re-check (after a LISTEN (re)connect)."""
        with self._lock:
            waiters = [w for group in self._by_user.values() for w in group]
        for waiter in waiters:
            waiter.wake(ready=False)
        return len(waiters)

    def __len__(self) -> int:
        with self._lock:
            return sum(len(group) for group in self._by_user.values())
