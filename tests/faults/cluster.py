"""The fault suite's own servers and processes: servers it may restart or flush, real `profilesync` children.

Never the machine's shared PostgreSQL / Redis: a FLUSHALL or restart there would break everyone else.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from profilesync.devkit.children import Children
from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis

# What the suite shares with the chaos soak (profilesync.devkit.faults), under the names its tests import.
from profilesync.devkit.faults import AUDIT as AUDIT
from profilesync.devkit.faults import JOB_TIMEOUT as JOB_TIMEOUT
from profilesync.devkit.faults import LOCK_TIMEOUT as LOCK_TIMEOUT
from profilesync.devkit.faults import REDELIVER_AFTER as REDELIVER_AFTER
from profilesync.devkit.faults import SAFETY_INTERVAL as SAFETY_INTERVAL
from profilesync.devkit.faults import STATEMENT_TIMEOUT as STATEMENT_TIMEOUT
from profilesync.devkit.faults import WORKER_KILL_BOUND as WORKER_KILL_BOUND
from profilesync.devkit.faults import child_env as child_env
from tests.harness import IDLE_PUBLISHERS, count, wait_for
from tests.servers import DatabaseFactory


@dataclass
class Servers:
    """One PostgreSQL cluster (durable: a restart keeps the data) and one Redis, owned by the session."""

    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    databases: DatabaseFactory


@contextmanager
def start_servers() -> Iterator[Servers]:
    with EmbeddedPostgres(durable=True) as postgres, EmbeddedRedis() as redis_server:
        factory = DatabaseFactory(postgres.url)
        try:
            yield Servers(postgres, redis_server, factory)
        finally:
            factory.close()


@dataclass
class Target:
    """One test's database (cloned from the migrated template, audited) on the suite's servers."""

    servers: Servers
    database_url: str
    redis_url: str
    redis: redis.Redis
    procs: Children
    _conn: psycopg.Connection[Any] | None = None

    @property
    def conn(self) -> psycopg.Connection[Any]:
        """The test's own connection, reopened after a PostgreSQL restart broke it."""
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._conn = psycopg.connect(self.database_url, autocommit=True)
        return self._conn

    def count(self, query: str, params: tuple[Any, ...] = ()) -> int:
        try:
            return count(self.conn, query, params)
        except psycopg.OperationalError:  # the connection died with a PostgreSQL restart: once more, anew
            return count(self.conn, query, params)

    def publisher_idle(self) -> bool:
        return self.count(IDLE_PUBLISHERS) >= 1

    def start_pipeline(self, workers: int) -> None:
        """A publisher and `workers` workers; returns once the publisher is idle (LISTENing)."""
        self.procs.start("publisher", "publisher")
        for n in range(1, workers + 1):
            self.procs.start(f"worker-{n}", "worker")
        assert wait_for(self.publisher_idle)

    def waiting_on_lock(self, application_name: str) -> int:
        """Backends of this application (profilesync-worker, -publisher, …) blocked on a lock."""
        return self.count(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock'",
            (application_name,),
        )

    def terminate_backends(self) -> int:
        """pg_terminate_backend of every profilesync process's backend in this database (a failover, an
        operator's kill); returns how many."""
        return self.count(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND application_name LIKE 'profilesync%%'"
        )

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
        self.redis.close()
