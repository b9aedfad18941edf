"""Apply sql/NNNN_*.sql in order, once each, recorded in profile_sync.schema_migrations."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from profilesync.errors import MigrationError
from profilesync.logs import get_logger

SQL_DIR = Path(__file__).resolve().parent.parent / "sql"
AUTH_STUB = SQL_DIR / "dev" / "auth_stub.sql"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x70726F66  # advisory lock shared by concurrent migrators

log = get_logger(__name__)

_BOOTSTRAP = """
CREATE SCHEMA IF NOT EXISTS profile_sync;
CREATE TABLE IF NOT EXISTS profile_sync.schema_migrations (
  version text PRIMARY KEY,
  name text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str
    path: Path


def available(sql_dir: Path = SQL_DIR) -> list[Migration]:
    if not sql_dir.is_dir():
        raise MigrationError(
            f"SQL directory {sql_dir} not found (install profilesync from a source checkout)"
        )
    found = []
    for path in sorted(sql_dir.glob("*.sql")):
        match = _NAME.match(path.name)
        if match is None:
            raise MigrationError(f"{path.name} is not named NNNN_name.sql")
        found.append(Migration(match.group(1), path.stem, path))
    return found


def applied(conn: psycopg.Connection[Any]) -> set[str]:
    """Versions already applied; empty when the bookkeeping table does not exist yet."""
    exists = conn.execute("SELECT to_regclass('profile_sync.schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM profile_sync.schema_migrations")}


def pending(conn: psycopg.Connection[Any], sql_dir: Path = SQL_DIR) -> list[Migration]:
    done = applied(conn)
    return [m for m in available(sql_dir) if m.version not in done]


def migrate(
    conn: psycopg.Connection[Any], *, dev_auth_stub: bool = False, sql_dir: Path = SQL_DIR
) -> list[str]:
    """Apply pending migrations, each in its own transaction. Returns the names applied."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        if dev_auth_stub:
            conn.execute((sql_dir / "dev" / AUTH_STUB.name).read_text())
            log.info("auth stub applied")
        has_auth = conn.execute("SELECT to_regclass('auth.users') IS NOT NULL").fetchone()
        if not has_auth or not has_auth[0]:
            raise MigrationError(
                "auth.users does not exist: point DATABASE_URL at a Supabase database, "
                "or run `profilesync migrate --dev-auth-stub` on plain PostgreSQL"
            )
        conn.execute(_BOOTSTRAP)
        names = []
        for migration in pending(conn, sql_dir):
            try:
                with conn.transaction():
                    conn.execute(migration.path.read_text())
                    conn.execute(
                        "INSERT INTO profile_sync.schema_migrations (version, name) VALUES (%s, %s)",
                        (migration.version, migration.name),
                    )
            except psycopg.Error as exc:
                raise MigrationError(f"{migration.path.name}: {exc}") from exc
            log.info("migration applied", migration=migration.name)
            names.append(migration.name)
        return names
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))
