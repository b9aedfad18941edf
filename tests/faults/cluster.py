"""The fault suite's own servers and processes: servers it may restart or flush, real `profilesync` children.

Never the machine's shared PostgreSQL / Redis: a FLUSHALL or restart there would break everyone else.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import psycopg
import redis

from profilesync.devkit.children import Children
from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from profilesync.queueing import RETRY_MAX
from tests.harness import IDLE_PUBLISHERS, count, wait_for
from tests.servers import DatabaseFactory

# Short timers for the children so every recovery path runs within seconds (production defaults in config.py).
SAFETY_INTERVAL = 0.5
REDELIVER_AFTER = 3.0
RECONNECT_MAX_DELAY = 1.0
JOB_TIMEOUT = 5  # a SimpleWorker's started-registry entry expires JOB_TIMEOUT + 60 s after the job started
STATEMENT_TIMEOUT = 3  # below JOB_TIMEOUT, as in production
LOCK_TIMEOUT = 2
SWEEP_INTERVAL = 1.0
WORKER_MAINTENANCE_INTERVAL = 5
# Worst case for a killed worker's job: its registry entry expires, the next maintenance pass of a live worker
# retries it (taking over the dead worker's scheduler lock, which expires 61 s after its last heartbeat), the
# scheduler enqueues the retry, a worker runs it.
WORKER_KILL_BOUND = JOB_TIMEOUT + 60 + WORKER_MAINTENANCE_INTERVAL + RETRY_MAX + 15


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


# Audit of the profile table, in a test-only schema. `inserts`: every profile row actually inserted, in a
# table without a key, so a profile created twice shows up even if it was deleted in between (user_profiles'
# primary key alone would hide that). `attempts`: every row a committed create_profiles proposed (BEFORE
# INSERT fires before ON CONFLICT decides), so redundant runs of a user's job show up: at-least-once delivery.
AUDIT = """
CREATE SCHEMA faults_audit;
CREATE TABLE faults_audit.inserts (user_id uuid NOT NULL);
CREATE TABLE faults_audit.attempts (user_id uuid NOT NULL);
CREATE FUNCTION faults_audit.log_insert() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO faults_audit.inserts (user_id) VALUES (NEW.id);
  RETURN NULL;
END
$$;
CREATE FUNCTION faults_audit.log_attempt() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  INSERT INTO faults_audit.attempts (user_id) VALUES (NEW.id);
  RETURN NEW;
END
$$;
CREATE TRIGGER faults_audit_insert AFTER INSERT ON public.user_profiles
  FOR EACH ROW EXECUTE FUNCTION faults_audit.log_insert();
CREATE TRIGGER faults_audit_attempt BEFORE INSERT ON public.user_profiles
  FOR EACH ROW EXECUTE FUNCTION faults_audit.log_attempt();
"""


def child_env(database_url: str, redis_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LISTEN_DATABASE_URL"}
    env.update(
        {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "PROFILESYNC_SAFETY_INTERVAL": str(SAFETY_INTERVAL),
            "PROFILESYNC_REDELIVER_AFTER": str(REDELIVER_AFTER),
            "PROFILESYNC_RECONNECT_MAX_DELAY": str(RECONNECT_MAX_DELAY),
            "PROFILESYNC_JOB_TIMEOUT": str(JOB_TIMEOUT),
            "PROFILESYNC_STATEMENT_TIMEOUT": str(STATEMENT_TIMEOUT),
            "PROFILESYNC_LOCK_TIMEOUT": str(LOCK_TIMEOUT),
            "PROFILESYNC_SWEEP_INTERVAL": str(SWEEP_INTERVAL),
            "PROFILESYNC_WORKER_MAINTENANCE_INTERVAL": str(WORKER_MAINTENANCE_INTERVAL),
            "PROFILESYNC_LOG_FORMAT": "json",
            "PROFILESYNC_LOG_LEVEL": "INFO",
        }
    )
    return env


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
