"""Where the benchmark runs: BENCH_DATABASE_URL / BENCH_REDIS_URL if set, else embedded servers.

The embedded PostgreSQL is durable (fsync and synchronous_commit on), so commit costs are realistic. Every
scenario gets its own database, cloned from a template migrated once, so triggers never interfere; every
scenario gets its own Redis database number.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg
import redis
from psycopg import sql

from bench.cpu import parse_proc_stat
from bench.signups import GOTRUE_INDEXES
from profilesync.db import with_dbname
from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis
from profilesync.migrate import migrate


def with_redis_db(url: str, db: int) -> str:
    return urlunsplit(urlsplit(url)._replace(path=f"/{db}"))


@dataclass
class Servers:
    """A PostgreSQL admin URL (may CREATE DATABASE), a Redis URL, and the databases made for this run."""

    admin_url: str
    redis_url: str
    embedded: bool
    template: str = field(default_factory=lambda: f"bench_tpl_{uuid.uuid4().hex[:8]}")
    created: list[str] = field(default_factory=list)
    next_redis_db: int = 0

    def build_template(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.template)))
        self.created.append(self.template)
        with psycopg.connect(with_dbname(self.admin_url, self.template), autocommit=True) as conn:
            migrate(conn, dev_auth_stub=True)
            conn.execute(GOTRUE_INDEXES.encode())

    def database(self, label: str, setup_sql: str = "") -> str:
        """A fresh migrated database for one scenario, with `setup_sql` (a baseline's triggers) applied."""
        name = f"bench_{label}_{uuid.uuid4().hex[:6]}"
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                    sql.Identifier(name), sql.Identifier(self.template)
                )
            )
        self.created.append(name)
        url = with_dbname(self.admin_url, name)
        if setup_sql:
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute(setup_sql.encode())
        return url

    def redis_db(self) -> str:
        """An empty Redis database of its own (numbers 1..15 in turn)."""
        self.next_redis_db = self.next_redis_db % 15 + 1
        url = with_redis_db(self.redis_url, self.next_redis_db)
        client = redis.Redis.from_url(url)
        try:
            client.flushdb()
        finally:
            client.close()
        return url

    def versions(self) -> dict[str, str]:
        """The servers' versions, for the record."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SHOW server_version").fetchone()
        client = redis.Redis.from_url(self.redis_url)
        try:
            info = client.info("server")
        finally:
            client.close()
        name = "valkey" if "valkey_version" in info else "redis"
        return {
            "postgres": str(row[0]) if row else "?",
            "redis": f"{name} {info.get('valkey_version', info['redis_version'])}",
        }

    def server_pids(self) -> list[int]:
        """The PostgreSQL postmaster and the Redis server (when local), whose CPU is the run's own."""
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            row = conn.execute("SELECT pg_backend_pid()").fetchone()
        pids = []
        if row:
            with contextlib.suppress(OSError):  # no /proc entry: a remote server
                pids.append(parse_proc_stat(Path(f"/proc/{row[0]}/stat").read_text())[0])  # the postmaster
        client = redis.Redis.from_url(self.redis_url)
        try:
            pids.append(int(client.info("server")["process_id"]))
        finally:
            client.close()
        return pids

    def drop_all(self) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            for name in reversed(self.created):
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        self.created.clear()


@contextmanager
def servers() -> Iterator[Servers]:
    with ExitStack() as stack:
        admin_url = os.environ.get("BENCH_DATABASE_URL")
        redis_url = os.environ.get("BENCH_REDIS_URL")
        if not admin_url:
            admin_url = stack.enter_context(EmbeddedPostgres(durable=True)).url
        if not redis_url:
            redis_url = stack.enter_context(EmbeddedRedis()).url
        found = Servers(admin_url, redis_url, embedded=not os.environ.get("BENCH_DATABASE_URL"))
        found.build_template()
        try:
            yield found
        finally:
            found.drop_all()
