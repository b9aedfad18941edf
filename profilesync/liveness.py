"""What a process's own loops last heard from its servers: /healthz reads this, it never connects anywhere.

A loop calls `reached(server)` after talking to a server and `failed(server, error)` when that failed; the
verdict needs no I/O: the latest failure since the last contact, or a contact older than `max_age`.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Contact:
    reached_at: float | None = None
    failed_at: float | None = None
    error: str = ""


class Liveness:
    """Thread-safe: the loops write, the metrics server's thread reads."""

    def __init__(self, servers: tuple[str, ...], clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._contacts = {server: _Contact() for server in servers}

    def reached(self, server: str) -> None:
        with self._lock:
            self._contacts[server].reached_at = self._clock()

    def failed(self, server: str, error: str) -> None:
        with self._lock:
            contact = self._contacts[server]
            contact.failed_at, contact.error = self._clock(), error

    def quiet(self, server: str) -> float | None:
        """Seconds since `server` was last reached; None if never."""
        with self._lock:
            reached_at = self._contacts[server].reached_at
        return None if reached_at is None else self._clock() - reached_at

    def problem(self, max_age: float) -> str | None:
        """None when every server was reached within `max_age` seconds and has not failed since; else why
        not, as one line naming the server."""
        now = self._clock()
        with self._lock:
            for server, contact in self._contacts.items():
                if contact.failed_at is not None and (
                    contact.reached_at is None or contact.failed_at >= contact.reached_at
                ):
                    return f"{server}: {contact.error}"
                if contact.reached_at is None:
                    return f"{server}: not reached yet"
                if now - contact.reached_at > max_age:
                    return f"{server}: no contact for {now - contact.reached_at:.0f}s"
        return None
