from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
import redis

from profilesync.config import Settings
from profilesync.devkit import discovery
from tests.servers import DatabaseFactory, postgres_admin_url, redis_base_url

TIER_DIRECTORIES = {"faults": pytest.mark.faults, "packaging": pytest.mark.packaging}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test of tests/faults and tests/packaging with its tier (pyproject.toml's markers), and
    find the servers the selected tests will start before the first test runs: when one is missing, the
    session ends with one line saying what to install (exit code 2), not an error per test."""
    for item in items:
        tier = TIER_DIRECTORIES.get(item.path.parent.name)
        if tier is not None:
            item.add_marker(tier)
    fixtures = {name for item in items for name in getattr(item, "fixturenames", ())}
    try:
        discovery.check(
            Settings(),
            postgres="fault_servers" in fixtures
            or ("pg_admin_url" in fixtures and not os.environ.get("TEST_DATABASE_URL")),
            redis="fault_servers" in fixtures
            or ("redis_server_url" in fixtures and not os.environ.get("TEST_REDIS_URL")),
        )
    except discovery.ServerNotFoundError as exc:
        pytest.exit(f"profilesync: {exc}", returncode=2)


@pytest.fixture(scope="session")
def pg_admin_url() -> Iterator[str]:
    with postgres_admin_url() as url:
        yield url


@pytest.fixture(scope="session")
def database_factory(pg_admin_url: str) -> Iterator[DatabaseFactory]:
    factory = DatabaseFactory(pg_admin_url)
    yield factory
    factory.close()


@pytest.fixture(scope="session")
def redis_server_url() -> Iterator[str]:
    with redis_base_url() as url:
        yield url


@pytest.fixture
def database_url(database_factory: DatabaseFactory) -> Iterator[str]:
    url = database_factory.create()
    yield url
    database_factory.drop(url)


@pytest.fixture
def redis_url(redis_server_url: str) -> Iterator[str]:
    client = redis.Redis.from_url(redis_server_url)
    client.flushdb()
    yield redis_server_url
    client.flushdb()
    client.close()


@pytest.fixture
def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        listen_database_url=None,
        safety_interval=0.5,
        redeliver_after=2.0,
        reconnect_max_delay=1.0,
        chat_wait_timeout=2.0,
        log_format="console",
    )


@pytest.fixture
def conn(database_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(database_url, autocommit=True) as connection:
        yield connection


@pytest.fixture
def redis_conn(redis_url: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()
