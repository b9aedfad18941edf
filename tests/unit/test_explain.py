"""Operator mistakes → one line naming the variable to fix, never a secret; bugs keep their traceback."""

from __future__ import annotations

import psycopg
import pytest
import redis
from psycopg import errors as pg_errors

from profilesync.config import Settings
from profilesync.errors import ConfigError, SchemaMissingError
from profilesync.explain import explain

SETTINGS = Settings(
    database_url="postgresql://app:s3cret@db.example.com:5432/postgres",
    listen_database_url="host=direct.example.com port=5432 user=app password=s3cret",
    redis_url="redis://:s3cret@cache:6379/0",
)


def _noted(exc: psycopg.Error, url: str) -> psycopg.Error:
    exc.add_note(url)  # as db.connect does
    return exc


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (
            _noted(
                psycopg.OperationalError(
                    'connection failed: connection to server at "10.0.0.1", port 5432 failed: FATAL:  '
                    'password authentication failed for user "app"\nmore detail'
                ),
                "postgresql://app:***@db.example.com:5432/postgres",
            ),
            "cannot connect to the database at postgresql://app:***@db.example.com:5432/postgres "
            '(DATABASE_URL): connection to server at "10.0.0.1", port 5432 failed: FATAL:  password '
            'authentication failed for user "app"',
        ),
        (
            _noted(
                psycopg.OperationalError("connection failed: timeout"),
                "host=direct.example.com port=5432 user=app password=***",
            ),
            "cannot connect to the database at host=direct.example.com port=5432 user=app password=*** "
            "(LISTEN_DATABASE_URL): timeout",
        ),
        (
            pg_errors.UndefinedTable('relation "profile_sync.signup_events" does not exist'),
            "schema profile_sync missing: run profilesync migrate "
            "(DATABASE_URL is postgresql://app:***@db.example.com:5432/postgres)",
        ),
        (
            pg_errors.InvalidSchemaName('schema "profile_sync" does not exist'),
            "schema profile_sync missing: run profilesync migrate",
        ),
        (
            pg_errors.UndefinedTable('relation "auth.users" does not exist'),
            'relation "auth.users" does not exist at postgresql://app:***@db.example.com:5432/postgres '
            "(DATABASE_URL): is it your Supabase database?",
        ),
        (
            pg_errors.InsufficientPrivilege("permission denied for schema profile_sync"),
            'role "app" lacks a privilege (SQLSTATE 42501) at '
            "postgresql://app:***@db.example.com:5432/postgres (DATABASE_URL): permission denied for schema "
            "profile_sync",
        ),
        (
            redis.ConnectionError("Error 111 connecting to cache:6379. Connection refused."),
            "cannot connect to Redis at redis://:***@cache:6379/0 (REDIS_URL): Error 111 connecting",
        ),
        (
            redis.AuthenticationError("invalid username-password pair"),
            "cannot connect to Redis at redis://:***@cache:6379/0 (REDIS_URL): invalid username-password",
        ),
        (
            redis.ResponseError("OOM command not allowed"),
            "Redis failed at redis://:***@cache:6379/0 (REDIS_URL): OOM command not allowed",
        ),
        (
            SchemaMissingError(),
            "schema profile_sync missing: run profilesync migrate "
            "(DATABASE_URL is postgresql://app:***@db.example.com:5432/postgres)",
        ),
        (
            ConfigError("cannot LISTEN through a transaction pooler (postgresql://u:s3cret@h:6543/db)"),
            "Invalid configuration: cannot LISTEN through a transaction pooler (postgresql://u:***@h:6543/db)",
        ),
    ],
)
def test_operator_errors_are_one_line_naming_the_variable(exc: BaseException, expected: str) -> None:
    message = explain(exc, SETTINGS)
    assert message is not None and message.startswith(expected)
    assert "\n" not in message and "s3cret" not in message


@pytest.mark.parametrize("exc", [ValueError("a bug"), KeyError("x"), AssertionError()])
def test_bugs_are_not_explained(exc: BaseException) -> None:
    assert explain(exc, SETTINGS) is None
