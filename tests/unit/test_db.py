from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from profilesync.db import is_interruption, is_lock_timeout, is_transient


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        errors.SerializationFailure(),
        errors.DeadlockDetected(),
        errors.AdminShutdown(),
        errors.TooManyConnections(),
        ConnectionResetError(),
    ],
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        errors.CheckViolation(),
        errors.InvalidTextRepresentation(),
        errors.UndefinedTable(),
        # sync_profiles locks the users it reads, so a user deleted meanwhile is missing, never 23503; a
        # foreign key that still fails is a real defect: bisected and failed once, not retried in a storm
        errors.ForeignKeyViolation(),
        ValueError("x"),
    ],
)
def test_permanent_errors_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        errors.AdminShutdown(),  # pg_terminate_backend, a failover
        errors.CannotConnectNow(),  # a server starting up or in recovery
        errors.SerializationFailure(),
        errors.DeadlockDetected(),
        ConnectionRefusedError(),
    ],
)
def test_interruptions_are_retried_at_once(exc: BaseException) -> None:
    assert is_interruption(exc)


@pytest.mark.parametrize(
    "exc", [errors.LockNotAvailable(), errors.QueryCanceled(), errors.CheckViolation(), ValueError("x")]
)
def test_slow_statements_and_permanent_errors_are_not_interruptions(exc: BaseException) -> None:
    # the same statement would wait on the same lock or run as long again: a delayed retry, not at once
    assert not is_interruption(exc)
    assert is_lock_timeout(exc) == isinstance(exc, errors.LockNotAvailable)
