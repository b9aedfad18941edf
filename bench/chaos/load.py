"""Signups at a steady rate, as GoTrue writes them, that carry on through the faults.

Open loop: each sender keeps its schedule whatever a signup takes (bench.schedule). A signup that fails
(PostgreSQL restarting) is recorded with its error and not retried, as the auth server answers the user
with an error; the sender reconnects for its next slot, with a bounded connect timeout.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.schedule import open_loop_offsets
from profilesync.devkit.signups import gotrue_signup, make_signup, mixed_kinds

CONNECT_TIMEOUT = 2
STATEMENT_TIMEOUT_MS = 10_000  # the auth server's own requests time out too: no signup waits forever


@dataclass(frozen=True)
class Attempt:
    """One signup: when it started (wall clock, s), how long it took (s), its error (None: committed)."""

    user_id: str
    kind: str
    started: float
    seconds: float
    error: str | None = None


class SteadySignups:
    """`rate` signups per second for `duration` seconds from `senders` threads, each on its own connection."""

    def __init__(self, url: str, rate: float, duration: float, senders: int, seed: int) -> None:
        self.url = url
        self.rate = rate
        self.duration = duration
        self.senders = senders
        self.kinds = mixed_kinds(int(rate * duration), random.Random(seed))
        self.stop = threading.Event()
        self.attempts: list[Attempt] = []
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self.start_at = 0.0

    def start(self) -> None:
        self.start_at = time.time() + 0.5
        for index in range(self.senders):
            thread = threading.Thread(target=self._send, args=(index,), name=f"signups-{index}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def running(self) -> bool:
        return any(thread.is_alive() for thread in self._threads)

    def join(self, timeout: float) -> bool:
        """Wait for the senders (at most `timeout` s in all); True when every one has finished."""
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not self.running()

    def _send(self, index: int) -> None:
        conn: psycopg.Connection[Any] | None = None
        try:
            for offset in open_loop_offsets(self.rate, self.duration, self.senders, index):
                if self.stop.wait(max(0.0, self.start_at + offset - time.time())):
                    return
                signup = make_signup(self.kinds[round(offset * self.rate)], uuid.uuid4())
                started = time.time()
                error = None
                try:
                    if conn is None or conn.closed or conn.broken:
                        conn = psycopg.connect(
                            self.url,
                            autocommit=True,
                            connect_timeout=CONNECT_TIMEOUT,
                            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
                        )
                    gotrue_signup(conn, signup)
                except psycopg.Error as exc:
                    error = type(exc).__name__
                attempt = Attempt(str(signup.id), signup.kind, started, time.time() - started, error)
                with self._lock:
                    self.attempts.append(attempt)
        finally:
            if conn is not None:
                conn.close()
