"""One line for an operator's mistake (a wrong URL, a server down, no `migrate` yet) instead of a traceback.

`explain` maps the exceptions such mistakes raise to a message that names the environment variable to fix and
never a secret; anything else (a bug) is not explained, so its traceback stays visible.
"""

from __future__ import annotations

import psycopg
import redis
from psycopg import errors as pg_errors
from psycopg.conninfo import conninfo_to_dict

from profilesync.config import Settings, redact
from profilesync.errors import ProfileSyncError, SchemaMissingError

_UNDEFINED = (pg_errors.UndefinedTable, pg_errors.InvalidSchemaName, pg_errors.UndefinedFunction)


def explain(exc: BaseException, settings: Settings) -> str | None:
    """The one-line message for an operator error, or None for anything else."""
    message: str | None = None
    if isinstance(exc, SchemaMissingError):
        message = f"{exc} (DATABASE_URL is {redact(settings.database_url)})"
    elif isinstance(exc, ProfileSyncError):
        message = str(exc)
    elif isinstance(exc, psycopg.Error):
        message = _database(exc, settings)
    elif isinstance(exc, redis.RedisError):
        what = "cannot connect to Redis" if isinstance(exc, redis.ConnectionError) else "Redis failed"
        message = f"{what} at {redact(settings.redis_url)} (REDIS_URL): {first_line(exc)}"
    return None if message is None else redact(message)


def _database(exc: psycopg.Error, settings: Settings) -> str:
    url, variable = _which_database(exc, settings)
    if isinstance(exc, _UNDEFINED):
        if "profile_sync" in str(exc):
            return f"{SchemaMissingError()} ({variable} is {url})"
        return f"{first_line(exc)} at {url} ({variable}): is it your Supabase database?"
    if isinstance(exc, pg_errors.InsufficientPrivilege):
        return (
            f"role {_role(url)} lacks a privilege (SQLSTATE 42501) at {url} ({variable}): {first_line(exc)} "
            "(run profilesync migrate as the owner; database roles: docs/supabase.md)"
        )
    if isinstance(exc, psycopg.OperationalError):
        reason = first_line(exc).removeprefix("connection failed: ")
        return f"cannot connect to the database at {url} ({variable}): {reason}"
    return f"database error at {url} ({variable}): {first_line(exc)}"


def _which_database(exc: psycopg.Error, settings: Settings) -> tuple[str, str]:
    """The URL (redacted) an error came from, noted by `db.connect`, and the variable that set it."""
    database = redact(settings.database_url)
    noted = getattr(exc, "__notes__", None) or [database]
    listen = settings.listen_database_url
    if listen is not None and noted[-1] == redact(listen) and noted[-1] != database:
        return noted[-1], "LISTEN_DATABASE_URL"
    return database, "DATABASE_URL"


def _role(url: str) -> str:
    try:
        user = conninfo_to_dict(url).get("user")
    except psycopg.ProgrammingError:
        user = None
    return f'"{user}"' if user else "of the connection"


def first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].strip() if text else type(exc).__name__
