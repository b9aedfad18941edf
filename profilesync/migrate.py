"""Apply the packaged SQL migrations (sql/NNNN_*.sql) in order, once each, recorded in
profile_sync.schema_migrations; then the definitions (profilesync.definitions) rendered for the profile
mapping when they changed or drifted. All of it in one transaction (a failure leaves the database as it was),
after a preflight of the mapping against the catalog (profilesync.catalog).

The top-level sql/ directory of the source tree is installed as the package `profilesync.sql` (see
pyproject.toml), so a wheel carries the same files a reader finds in the repository; they are read with
importlib.resources, never from a path relative to this file.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources
from importlib.resources.abc import Traversable
from typing import Any

import psycopg

from profilesync import catalog, definitions
from profilesync.catalog import TableFacts
from profilesync.definitions import Context
from profilesync.errors import ConfigError, MigrationError, SchemaMissingError
from profilesync.logs import get_logger
from profilesync.mapping import DEFAULT, ProfileMapping

SQL_PACKAGE = "profilesync.sql"
_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")
_LOCK_KEY = 0x70726F66  # advisory lock shared by concurrent migrators

log = get_logger(__name__)

# The bookkeeping tables, created before the first migration (and by every file of --emit-supabase): the
# migrations applied, the checksum of each definition applied, and the state of every object of ours that the
# last apply left (profilesync.definitions.STATE), against which doctor reports drift.
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
CREATE TABLE IF NOT EXISTS profile_sync.definition_objects (
  object text PRIMARY KEY,
  state text NOT NULL
);
"""
RECORD = "INSERT INTO profile_sync.schema_migrations (version, name) VALUES (%s, %s)"


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
class Migrated:
    """What one `migrate` did: the migrations applied, and the definitions applied (all of them when any one
    changed or an object drifted; none when the database already matched them)."""

    migrations: list[str]
    definitions: list[str]


def preflight(conn: psycopg.Connection[Any], mapping: ProfileMapping) -> TableFacts:
    """The profile table's facts, after checking that the mapping fits it; ConfigError (the first problem,
    naming its config key) otherwise. Reads the catalog only. A fresh install: the seed's table as 0001
    creates it."""
    facts = catalog.read_table(conn, mapping)
    problems = catalog.check(mapping, facts)
    if problems:
        more = f" (and {len(problems) - 1} more: profilesync config check)" if len(problems) > 1 else ""
        raise ConfigError(problems[0] + more)
    return facts or catalog.SEED_FACTS


# Read by sql/0001_tables.sql: the seed's tables are created only for the seed's mapping.
SEED_TABLES = "SELECT pg_catalog.set_config('profile_sync.seed_tables', %s, true)"


def migrate(
    conn: psycopg.Connection[Any], mapping: ProfileMapping = DEFAULT, *, dev_auth_stub: bool = False
) -> Migrated:
    """Check `mapping` against the catalog, then apply pending migrations and the definitions rendered for
    it (when they changed or drifted), in one transaction: a failure leaves the database as it found it."""
    conn.autocommit = True
    conn.execute("SELECT pg_advisory_lock(%s)", (_LOCK_KEY,))
    try:
        with conn.transaction():
            if dev_auth_stub:
                conn.execute(auth_stub().encode())
            has_auth = conn.execute("SELECT to_regclass('auth.users') IS NOT NULL").fetchone()
            if not has_auth or not has_auth[0]:
                raise MigrationError(
                    "auth.users does not exist: point DATABASE_URL at a Supabase database, "
                    "or run `profilesync migrate --dev-auth-stub` on plain PostgreSQL"
                )
            preflight(conn, mapping)
            conn.execute(SEED_TABLES, ("on" if mapping.is_seed else "off",))
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
            # Rendered for the table as it is now (a fresh install has just created the seed's).
            context = Context.of(mapping, catalog.read_table(conn, mapping) or catalog.SEED_FACTS)
            applied = _apply_definitions(conn, context)
        if dev_auth_stub:
            log.info("auth stub applied")
        for name in names:
            log.info("migration applied", migration=name)
        if applied:
            log.info("definitions applied", definitions=applied)
        return Migrated(names, applied)
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_LOCK_KEY,))


def _apply_definitions(conn: psycopg.Connection[Any], context: Context) -> list[str]:
    rendered = definitions.render(context)
    outdated = definitions.outdated(conn, rendered)
    drifted = definitions.drift(conn)
    guards = definitions.guards(conn)
    unguarded = guards.unguarded if guards else []
    if not outdated and not drifted and not unguarded and not (guards and guards.stale):
        return []
    definitions.apply(conn, rendered)
    log.info("definitions to apply", changed=outdated, drifted=drifted, unguarded=unguarded)
    return [d.name for d in rendered]


def plan(conn: psycopg.Connection[Any], mapping: ProfileMapping = DEFAULT) -> str:
    """The SQL `migrate` would run now (pending migrations, then every definition rendered for `mapping`),
    changing nothing. A fresh install: the definitions are rendered for the seed's table as 0001 makes it."""
    context = Context.of(mapping, preflight(conn, mapping))
    parts = [f"-- {m.filename}\n{m.read().rstrip()}\n" for m in pending(conn)]
    return "\n".join([*parts, definitions.script(definitions.render(context))])


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
