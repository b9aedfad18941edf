from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

from profilesync.db import is_transient


@pytest.mark.parametrize(
    "exc",
    [
        psycopg.OperationalError("server closed the connection unexpectedly"),
        errors.SerializationFailure(),
        errors.DeadlockDetected(),
        errors.AdminShutdown(),
        errors.TooManyConnections(),
        errors.ForeignKeyViolation(),  # the user was deleted while we inserted: retry re-reads auth.users
        ConnectionResetError(),
    ],
)
def test_transient_errors_are_retried(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize(
    "exc",
    [errors.CheckViolation(), errors.InvalidTextRepresentation(), errors.UndefinedTable(), ValueError("x")],
)
def test_permanent_errors_are_not(exc: BaseException) -> None:
    assert not is_transient(exc)
