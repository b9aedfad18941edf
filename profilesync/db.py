"""PostgreSQL connections. Callers own them; nothing here is global."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg

from profilesync.config import redact

# Detect a dead peer (NAT drop, failover) in about a minute instead of the kernel's two hours.
KEEPALIVES: dict[str, Any] = {
    "keepalives": 1,
    "keepalives_idle": 30,
    "keepalives_interval": 10,
    "keepalives_count": 3,
}

TRANSIENT_SQLSTATE_CLASSES = (
    "08",
    "40",
    "53",
    "57",
    "58",
)  # connection, rollback, resources, operator, system


def connect(
    url: str, *, autocommit: bool = False, application_name: str = "profilesync"
) -> psycopg.Connection[Any]:
    try:
        return psycopg.connect(
            url, autocommit=autocommit, application_name=application_name, connect_timeout=10, **KEEPALIVES
        )
    except psycopg.Error as exc:
        exc.add_note(redact(url))  # which database: `profilesync.explain` names it (and its variable)
        raise


def with_dbname(url: str, dbname: str) -> str:
    """The same PostgreSQL URL (user, host, options) for another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: lost connections, serialization failures, deadlocks, shutdowns."""
    if isinstance(exc, psycopg.OperationalError):
        return True
    if isinstance(exc, psycopg.Error):
        sqlstate = exc.sqlstate or ""
        return sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES)
    return isinstance(exc, OSError)
