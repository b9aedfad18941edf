"""Test servers: TEST_DATABASE_URL / TEST_REDIS_URL when set, else embedded servers started for the run.

Each test gets its own database, cloned from a template built once (migrations + auth stub), and an empty
Redis database. TEST_REDIS_URL's database is flushed before every test: point it at a scratch database.

The template is owned and migrated by OWNER, a role that is not a superuser (LOGIN CREATEROLE, like hosted
Supabase's `postgres`), so every suite runs on objects a non-superuser created: a migration step that only a
superuser may take fails the whole run, not one dedicated test. The tests themselves connect as the admin
URL's user (the machine's `postgres`, or the embedded cluster's), as a platform operator would.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from profilesync.db import with_dbname
from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from profilesync.migrate import migrate

OWNER = "profilesync_suite_owner"


def as_role(url: str, role: str, password: str | None = None) -> str:
    """The URL with another user (the test servers trust local connections: a password is not checked)."""
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    auth = f"{role}:{password}" if password else role
    return urlunsplit(parts._replace(netloc=f"{auth}@{host}:{parts.port or 5432}"))


def ensure_owner(admin: psycopg.Connection[Any]) -> None:
    """Create OWNER unless it exists (roles are cluster-wide: another run may have made it, concurrently), and
    Supabase's platform roles as the platform has them before a project's first migration: `service_role`
    with BYPASSRLS, which only a superuser may grant, so the non-superuser OWNER could not create it."""
    admin.execute(
        f"""
        DO $$
        DECLARE
          r text;
        BEGIN
          FOREACH r IN ARRAY ARRAY['{OWNER}', 'anon', 'authenticated', 'service_role', 'supabase_auth_admin']
          LOOP
            BEGIN
              EXECUTE format('CREATE ROLE %I NOLOGIN', r);
            EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
            END;
          END LOOP;
          ALTER ROLE {OWNER} LOGIN NOSUPERUSER CREATEROLE;
          ALTER ROLE service_role BYPASSRLS;
        END $$
        """
    )


def create_owned_database(admin_url: str, name: str) -> str:
    """An empty database owned by OWNER (as a Supabase project's database is by `postgres`); its URL."""
    with psycopg.connect(admin_url, autocommit=True) as admin:
        ensure_owner(admin)
        admin.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(sql.Identifier(name), sql.Identifier(OWNER))
        )
    return with_dbname(admin_url, name)


@contextmanager
def postgres_admin_url() -> Iterator[str]:
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        yield url
        return
    with EmbeddedPostgres(durable=False) as server:
        yield server.url


@contextmanager
def redis_base_url() -> Iterator[str]:
    url = os.environ.get("TEST_REDIS_URL")
    if url:
        yield url
        return
    with EmbeddedRedis() as server:
        yield server.url


class DatabaseFactory:
    """Builds the template database once (owned and migrated by OWNER); clones it per test, owned by OWNER."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.template = f"profilesync_tpl_{uuid.uuid4().hex[:10]}"
        url = create_owned_database(admin_url, self.template)
        with psycopg.connect(as_role(url, OWNER), autocommit=True) as conn:
            migrate(conn, dev_auth_stub=True)

    def create(self) -> str:
        name = f"profilesync_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {} OWNER {}").format(
                    sql.Identifier(name), sql.Identifier(self.template), sql.Identifier(OWNER)
                )
            )
        return with_dbname(self.admin_url, name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        self.drop(with_dbname(self.admin_url, self.template))
