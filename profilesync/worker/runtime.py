"""Per-process state of a worker: its Settings and one persistent PostgreSQL connection."""

from __future__ import annotations

from typing import Any

import psycopg

from profilesync import db
from profilesync.config import Settings
from profilesync.logs import get_logger

log = get_logger(__name__)

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
