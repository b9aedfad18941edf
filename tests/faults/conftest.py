"""Fault-injection fixtures: the suite's own servers (restarted, flushed at will), one database per test."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis

from profilesync.devkit.children import Children
from tests.faults.cluster import AUDIT, Servers, Target, child_env, start_servers
from tests.faults.figures import ROWS, table
from tests.servers import OWNER, as_role


@pytest.fixture(scope="session")
def fault_servers() -> Iterator[Servers]:
    """Started for this suite whatever TEST_DATABASE_URL / TEST_REDIS_URL say: never fault shared servers."""
    with start_servers() as servers:
        yield servers


@pytest.fixture
def target(fault_servers: Servers, tmp_path: Path) -> Iterator[Target]:
    if fault_servers.redis.process is None:  # an earlier test failed while Redis was down
        fault_servers.redis.start()
    database_url = fault_servers.databases.create()
    # as the migrations' owner: create_profiles runs as that owner (SECURITY DEFINER) and fires the audit
    with psycopg.connect(as_role(database_url, OWNER), autocommit=True) as conn:
        conn.execute(AUDIT)
    redis_conn = redis.Redis.from_url(fault_servers.redis.url)
    redis_conn.flushall()
    procs = Children(child_env(database_url, fault_servers.redis.url), tmp_path)
    target = Target(fault_servers, database_url, fault_servers.redis.url, redis_conn, procs)
    try:
        yield target
    finally:
        procs.stop()
        target.close()
        fault_servers.databases.drop(database_url)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if ROWS:
        terminalreporter.section("fault injection: figures")
        terminalreporter.write_line(table(ROWS))
