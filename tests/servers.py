"""Test servers: TEST_DATABASE_URL / TEST_REDIS_URL when set, else embedded servers started for the run.

Each test gets its own database, cloned from a template built once (migrations + auth stub), and an empty
Redis database. TEST_REDIS_URL's database is flushed before every test: point it at a scratch database.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql

from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from profilesync.migrate import migrate


def with_dbname(url: str, dbname: str) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{dbname}"))


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
    """Builds the template database once; clones it per test."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.template = f"profilesync_tpl_{uuid.uuid4().hex[:10]}"
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        with psycopg.connect(with_dbname(admin_url, self.template), autocommit=True) as conn:
            migrate(conn, dev_auth_stub=True)

    def create(self) -> str:
        name = f"profilesync_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(self.template)
                )
            )
        return with_dbname(self.admin_url, name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def close(self) -> None:
        self.drop(with_dbname(self.admin_url, self.template))
