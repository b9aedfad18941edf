"""What the faults act on: the soak's own servers, database and processes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import psycopg

from profilesync.devkit.children import Children
from profilesync.devkit.embedded import EmbeddedPostgres, EmbeddedRedis

CONNECT_TIMEOUT = 2
STATEMENT_TIMEOUT_MS = 10_000  # no fault's statement waits longer (a lock fault's own wait is shorter)

# Every profilesync backend of the soak's database, as a failover or an operator's pg_terminate_backend would.
TERMINATE = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = current_database() AND application_name LIKE 'profilesync%' AND pid <> pg_backend_pid()
"""


@dataclass
class Stage:
    """What the faults act on: the soak's own servers, database and processes."""

    postgres: EmbeddedPostgres
    redis: EmbeddedRedis
    database_url: str
    children: Children
    metrics_ports: dict[str, int]

    def connect(self) -> psycopg.Connection[Any]:
        return psycopg.connect(
            self.database_url,
            autocommit=True,
            connect_timeout=CONNECT_TIMEOUT,
            options=f"-c statement_timeout={STATEMENT_TIMEOUT_MS}",
        )
