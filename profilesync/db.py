"""PostgreSQL connections. Callers own them; nothing here is global."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from profilesync.config import Settings, is_transaction_pooler, redact
from profilesync.errors import InsufficientPrivilegeError

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
)  # connection, rollback, resources, operator (incl. statement_timeout), system
LOCK_NOT_AVAILABLE = "55P03"  # lock_timeout: the lock's holder will commit or roll back; try again later
QUERY_CANCELED = "57014"  # statement_timeout (or a cancel request)
INSUFFICIENT_PRIVILEGE = "42501"


@dataclass(frozen=True)
class Timeouts:
    """Server-side bounds of every statement on a service connection, in seconds."""

    statement: float
    lock: float

    @classmethod
    def of(cls, settings: Settings) -> Timeouts:
        return cls(statement=settings.statement_timeout, lock=settings.lock_timeout)

    def options(self) -> str:
        """The libpq `options` startup parameter that sets them for the whole session."""
        ms = (max(1, round(self.statement * 1000)), max(1, round(self.lock * 1000)))
        return f"-c statement_timeout={ms[0]} -c lock_timeout={ms[1]}"


def connect(
    url: str,
    *,
    autocommit: bool = False,
    application_name: str = "profilesync",
    timeouts: Timeouts | None = None,
    connect_timeout: int = 10,
) -> psycopg.Connection[Any]:
    """A connection; with `timeouts`, bounded server-side from its first statement (no extra round trip).

    Behind a transaction pooler (port 6543, pgbouncer) the startup `options` are not passed: poolers reject
    or drop them, and a session SET would not follow the next transaction to its server connection. There,
    set the bounds on the role (`ALTER ROLE … SET statement_timeout`, README "Hardening").
    """
    extra: dict[str, Any] = {}
    if timeouts is not None and not is_transaction_pooler(url):
        given = conninfo_to_dict(url).get("options")
        extra["options"] = f"{given} {timeouts.options()}" if given else timeouts.options()
    try:
        return psycopg.connect(
            url,
            autocommit=autocommit,
            application_name=application_name,
            connect_timeout=connect_timeout,
            **KEEPALIVES,
            **extra,
        )
    except psycopg.Error as exc:
        exc.add_note(redact(url))  # which database: `profilesync.explain` names it (and its variable)
        raise


def with_dbname(url: str, dbname: str) -> str:
    """The same PostgreSQL URL (user, host, options) for another database."""
    return urlunsplit(urlsplit(url)._replace(path=f"/{dbname}"))


def is_transient(exc: BaseException) -> bool:
    """True for errors worth retrying: lost connections, serialization failures, deadlocks, shutdowns,
    statement and lock timeouts."""
    if isinstance(exc, psycopg.OperationalError):
        return True
    if isinstance(exc, psycopg.Error):
        sqlstate = exc.sqlstate or ""
        return sqlstate.startswith(TRANSIENT_SQLSTATE_CLASSES) or sqlstate == LOCK_NOT_AVAILABLE
    return isinstance(exc, OSError)


def is_lock_timeout(exc: BaseException) -> bool:
    """True when a statement gave up waiting for another transaction's lock (lock_timeout)."""
    return isinstance(exc, psycopg.Error) and exc.sqlstate == LOCK_NOT_AVAILABLE


def is_interruption(exc: BaseException) -> bool:
    """True for transient errors that say nothing about the statement: a lost or refused connection, a server
    shutting down or starting, a terminated backend, a serialization failure or deadlock. Worth retrying at
    once on a new connection; a statement or lock timeout is not (the same statement would wait again)."""
    slow = isinstance(exc, psycopg.Error) and exc.sqlstate in (QUERY_CANCELED, LOCK_NOT_AVAILABLE)
    return is_transient(exc) and not slow


def raise_if_denied(exc: BaseException, role_hint: str) -> None:
    """A missing privilege is a configuration error, not a lost connection: raise it as one clear line."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate == INSUFFICIENT_PRIVILEGE:
        primary = exc.diag.message_primary or str(exc).partition("\n")[0]
        raise InsufficientPrivilegeError(f"{primary} ({role_hint})") from exc


def ensure_idle(conn: psycopg.Connection[Any]) -> bool:
    """True if `conn` is idle, ready for the next statement. Otherwise (a statement still running after an
    interrupt, a transaction left open) cancel it server-side, close it and return False: the caller opens a
    new one. Never reuse such a connection: its backend may hold locks, and the next query would fail with
    "another command is already in progress"."""
    idle = psycopg.pq.TransactionStatus.IDLE
    if not conn.closed and not conn.broken and conn.info.transaction_status == idle:
        return True
    if not conn.closed:
        with contextlib.suppress(psycopg.Error):  # the close below ends the backend's transaction anyway
            conn.cancel_safe(timeout=2)
        conn.close()
    return False
