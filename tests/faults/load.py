"""Signup load for the fault scenarios: a burst in its own thread that survives a PostgreSQL restart."""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg

from tests.harness import bulk_signup

CHUNK = 25  # signups per INSERT statement (one transaction each, like a busy auth server's commits)


class Burst(threading.Thread):
    """Insert `total` signups in chunks; `reached[n]` is set once `n` signups are committed.

    A chunk that fails because PostgreSQL went away is retried on a new connection (bounded): a chunk whose
    commit was lost with the connection may then exist twice, so count auth.users, not `committed`.
    """

    def __init__(
        self, database_url: str, total: int, marks: tuple[int, ...] = (), chunk: int = CHUNK
    ) -> None:
        super().__init__(name="signup-burst", daemon=True)
        self.database_url = database_url
        self.total = total
        self.chunk = chunk
        self.reached = {mark: threading.Event() for mark in marks}
        self.committed = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # reported by the test through .error
            self.error = exc
        finally:
            for event in self.reached.values():
                event.set()  # never leave the test waiting on a mark

    def _run(self) -> None:
        conn = psycopg.connect(self.database_url, autocommit=True)
        give_up = 0.0
        try:
            while self.committed < self.total:
                n = min(self.chunk, self.total - self.committed)
                try:
                    bulk_signup(conn, n)
                except psycopg.OperationalError:
                    give_up = give_up or time.monotonic() + 60
                    if time.monotonic() > give_up:
                        raise
                    conn.close()
                    conn = self._reconnect(give_up)
                    continue
                give_up = 0.0
                self.committed += n
                for mark, event in self.reached.items():
                    if self.committed >= mark:
                        event.set()
        finally:
            conn.close()

    def _reconnect(self, give_up: float) -> psycopg.Connection[Any]:
        while True:
            try:
                return psycopg.connect(self.database_url, autocommit=True, connect_timeout=2)
            except psycopg.OperationalError:
                if time.monotonic() > give_up:
                    raise
                time.sleep(0.1)  # the server is restarting: a short bounded retry loop, like any client

    def finish(self, timeout: float = 120) -> int:
        """Wait for the burst; return signups committed (raises what the burst raised)."""
        self.join(timeout)
        assert not self.is_alive(), "signup burst did not finish"
        if self.error is not None:
            raise self.error
        return self.committed
