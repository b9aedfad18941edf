"""Per-process state of a worker: its Settings, one persistent PostgreSQL connection, and what its loop last
heard from PostgreSQL and Redis (LIVENESS, for /healthz)."""

from __future__ import annotations

from typing import Any

import psycopg

from profilesync import db, dropped
from profilesync.config import Settings
from profilesync.liveness import Liveness
from profilesync.logs import get_logger
from profilesync.metrics import one_line

log = get_logger(__name__)

DATABASE = "database"
REDIS = "redis"
LIVENESS = Liveness((DATABASE, REDIS))

_settings: Settings | None = None
_conn: psycopg.Connection[Any] | None = None


def configure(settings: Settings) -> None:
    """Called by `profilesync worker` before it starts; a plain `rq worker` falls back to the environment."""
    global _settings
    _settings = settings


def settings() -> Settings:
    global _settings
    if _settings is None:
        _settings = Settings()
    return _settings


def connection() -> psycopg.Connection[Any]:
    """The process's connection, reopened after it broke (a restart, a terminated backend)."""
    global _conn
    if _conn is None or _conn.closed or _conn.broken:
        _conn = db.connect(
            settings().database_url,
            autocommit=True,
            application_name="profilesync-worker",
            timeouts=db.Timeouts.of(settings()),
        )
        dropped.watch(_conn)
    return _conn


def release() -> None:
    """After a job: a connection that is not idle (RQ's timeout interrupted a statement, a transaction was
    left open) is cancelled and dropped, so its backend releases its locks and the next job gets a new one."""
    global _conn
    if _conn is not None and not db.ensure_idle(_conn):
        log.warning("worker connection was busy after a job; cancelled and replaced")
        _conn = None


def close() -> None:
    global _conn
    if _conn is not None:
        _conn.close()
        _conn = None


def probe_database(max_quiet: float) -> None:
    """Between jobs: SELECT 1 on the process's connection, unless something reached the database less than
    `max_quiet` seconds ago (jobs record their own contact). The outcome goes to LIVENESS; never raises."""
    quiet = LIVENESS.quiet(DATABASE)
    if quiet is not None and quiet < max_quiet:
        return
    try:
        connection().execute("SELECT 1")
    except psycopg.Error as exc:
        LIVENESS.failed(DATABASE, one_line(exc))
        release()
        return
    LIVENESS.reached(DATABASE)
