"""Apply the packaged SQL migrations (sql/NNNN_*.sql) in order, once each, recorded in
profile_sync.schema_migrations; then the definitions rendered from the profile mapping
(profilesync.profilesql), each re-applied when its rendering changed, recorded by checksum in
profile_sync.definitions. All of it in one transaction, after a preflight of the mapping against the catalog.

The top-level sql/ directory of the source tree is installed as the package `profilesync.sql` (see
pyproject.toml), so a wheel carries the same files a reader finds in the repository; they are read with
importlib.resources, never from a path relative to this file.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import psycopg

from profilesync import catalog, profilesql
from profilesync.catalog import TableFacts
from profilesync.errors import ConfigError, MigrationError, SchemaMissingError
from profilesync.logs import get_logger
from profilesync.mapping import DEFAULT, ProfileMapping

SQL_PACKAGE = "profilesync.sql"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x70726F66  # advisory lock shared by concurrent migrators

log = get_logger(__name__)

# The bookkeeping tables, created before the first migration (and by every file of --emit-supabase): the
# migrations applied, and the checksum of each rendered definition applied.
BOOTSTRAP = """\
CREATE SCHEMA IF NOT EXISTS profile_sync;
CREATE TABLE IF NOT EXISTS profile_sync.schema_migrations (
  version text PRIMARY KEY,
  name text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS profile_sync.definitions (
  name text PRIMARY KEY,
  checksum text NOT NULL,
  applied_at timestamptz NOT NULL DEFAULT now()
);
"""
RECORD = "INSERT INTO profile_sync.schema_migrations (version, name) VALUES (%s, %s)"
_RECORD_DEFINITION = """
INSERT INTO profile_sync.definitions (name, checksum) VALUES (%s, %s)
ON CONFLICT (name) DO UPDATE SET checksum = excluded.checksum, applied_at = now()
"""


@dataclass(frozen=True)
class Migration:
    version: str
    name: str  # the file name without .sql, e.g. 0002_outbox
    resource: Traversable

    @property
    def filename(self) -> str:
        return self.resource.name

    def read(self) -> str:
        return self.resource.read_text(encoding="utf-8")


def _sql_files() -> Traversable:
    try:
        return resources.files(SQL_PACKAGE)
    except ModuleNotFoundError as exc:
        raise MigrationError(f"package data {SQL_PACKAGE} is missing: reinstall profilesync") from exc


def available() -> list[Migration]:
    found = []
    for entry in sorted(_sql_files().iterdir(), key=lambda e: e.name):
        if not entry.is_file() or not entry.name.endswith(".sql"):
            continue
        match = _NAME.match(entry.name)
        if match is None:
            raise MigrationError(f"{entry.name} is not named NNNN_name.sql")
        found.append(Migration(match.group(1), entry.name.removesuffix(".sql"), entry))
    if not found:
        raise MigrationError(f"no migrations in package data {SQL_PACKAGE}: reinstall profilesync")
    return found


def auth_stub() -> str:
    """The dev auth stub (sql/dev/auth_stub.sql): a Supabase-like auth schema for plain PostgreSQL."""
    return _sql_files().joinpath("dev", "auth_stub.sql").read_text(encoding="utf-8")


def applied(conn: psycopg.Connection[Any]) -> set[str]:
    """Versions already applied; empty when the bookkeeping table does not exist yet."""
    exists = conn.execute("SELECT to_regclass('profile_sync.schema_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return set()
    return {row[0] for row in conn.execute("SELECT version FROM profile_sync.schema_migrations")}


def pending(conn: psycopg.Connection[Any]) -> list[Migration]:
    done = applied(conn)
    return [m for m in available() if m.version not in done]


@dataclass(frozen=True)
class Definition:
    """SQL rendered from the profile mapping, re-applied whenever its rendering changes."""

    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def definitions(mapping: ProfileMapping, facts: TableFacts) -> list[Definition]:
    return [Definition("profile_mapping", profilesql.render(mapping, facts))]


def preflight(conn: psycopg.Connection[Any], mapping: ProfileMapping) -> TableFacts:
    """The profile table's facts, after checking that the mapping fits it; ConfigError (the first problem,
    naming its config key) otherwise. Reads the catalog only."""
    facts = catalog.read_table(conn, mapping)
    problems = catalog.check(mapping, facts)
    if problems:
        more = f" (and {len(problems) - 1} more: profilesync config check)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return facts or catalog.SEED_FACTS


def _recorded_checksums(conn: psycopg.Connection[Any]) -> dict[str, str]:
    exists = conn.execute("SELECT to_regclass('profile_sync.definitions') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return dict(conn.execute("SELECT name, checksum FROM profile_sync.definitions").fetchall())


def _has_auth(conn: psycopg.Connection[Any]) -> None:
    has_auth = conn.execute("SELECT to_regclass('auth.users') IS NOT NULL").fetchone()
    if not has_auth or not has_auth[0]:
        raise MigrationError(
            "auth.users does not exist: point DATABASE_URL at a Supabase database, "
            "or run `profilesync migrate --dev-auth-stub` on plain PostgreSQL"
        )


def migrate(
    conn: psycopg.Connection[Any], mapping: ProfileMapping = DEFAULT, *, dev_auth_stub: bool = False
) -> list[str]:
    """Apply pending migrations and the profile definitions rendered for `mapping`, all in one transaction:
    a failure leaves the database as it was. The mapping is checked against the catalog first (preflight).
    Returns the names of the migrations applied."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        with conn.transaction():
            if dev_auth_stub:
                conn.execute(auth_stub().encode())
            _has_auth(conn)
            preflight(conn, mapping)
            conn.execute(BOOTSTRAP.encode())
            names = []
            for migration in pending(conn):
                try:
                    with conn.transaction():
                        conn.execute(migration.read().encode())
                        conn.execute(RECORD, (migration.version, migration.name))
                except psycopg.Error as exc:
                    raise MigrationError(f"{migration.filename}: {exc}") from exc
                names.append(migration.name)
            # Rendered from the table as it is now (a fresh install has just created the seed's).
            facts = catalog.read_table(conn, mapping) or catalog.SEED_FACTS
            recorded = _recorded_checksums(conn)
            rendered = []
            for definition in definitions(mapping, facts):
                if recorded.get(definition.name) == definition.checksum:
                    continue
                try:
                    with conn.transaction():
                        conn.execute(definition.sql.encode())
                        conn.execute(_RECORD_DEFINITION, (definition.name, definition.checksum))
                except psycopg.Error as exc:
                    raise MigrationError(f"definition {definition.name}: {exc}") from exc
                rendered.append(definition.name)
        if dev_auth_stub:
            log.info("auth stub applied")
        for name in names:
            log.info("migration applied", migration=name)
        for name in rendered:
            log.info("definition applied", definition=name)
        return names
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def plan(conn: psycopg.Connection[Any], mapping: ProfileMapping = DEFAULT) -> str:
    """The SQL `migrate` would run now (pending migrations, then the rendered definitions), changing nothing.
    Definitions are rendered for the table as it is; on a fresh install, as migrate creates the seed's."""
    facts = preflight(conn, mapping)
    parts = [f"-- {m.filename}\n{m.read().rstrip()}\n" for m in pending(conn)]
    parts += [f"-- definition {d.name}\n{d.sql.rstrip()}\n" for d in definitions(mapping, facts)]
    return "\n".join(parts)


def require_schema(conn: psycopg.Connection[Any]) -> None:
    """Raise SchemaMissingError unless the outbox exists: a process started before `migrate` stops at once
    with that one line instead of failing every statement (a publisher would reconnect forever). Reads the
    catalog, which every role may; then touches the outbox, so a role without any privilege on it fails
    here too, with its own InsufficientPrivilege (every profilesync role may read some of its columns)."""
    row = conn.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c"
        " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
        " WHERE n.nspname = 'profile_sync' AND c.relname = 'signup_events')"
    ).fetchone()
    if not row or not row[0]:
        raise SchemaMissingError()
    conn.execute("SELECT 1 FROM profile_sync.signup_events LIMIT 0")
