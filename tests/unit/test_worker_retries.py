"""The worker's retries of a batch the database interrupted: at once, jittered, bounded by the job timeout."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from psycopg import errors

from profilesync.config import Settings
from profilesync.worker import jobs, profiles, runtime

SETTINGS = Settings(database_url="postgresql://x@h/db", job_timeout=5, statement_timeout=3, lock_timeout=2)


class Clock:
    """time.monotonic and time.sleep for the job: sleeping advances it, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    clock = Clock()
    monkeypatch.setattr(jobs.time, "monotonic", clock.monotonic)
    monkeypatch.setattr(jobs.time, "sleep", clock.sleep)
    monkeypatch.setattr(runtime, "connection", lambda: None)
    monkeypatch.setattr(runtime, "release", lambda: None)
    return clock


def failing(monkeypatch: pytest.MonkeyPatch, *errors_first: BaseException) -> list[int]:
    """create_profiles raises `errors_first` one per call, then succeeds; returns the call count (a list)."""
    calls = [0]

    def create(*_: Any, **__: Any) -> profiles.Outcome:
        calls[0] += 1
        if calls[0] <= len(errors_first):
            raise errors_first[calls[0] - 1]
        return profiles.Outcome(created=1)

    monkeypatch.setattr(profiles, "create_profiles", create)
    return calls


def test_a_terminated_connection_is_retried_within_the_job_after_short_jittered_delays(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = failing(monkeypatch, errors.AdminShutdown(), errors.CannotConnectNow(), errors.DeadlockDetected())
    outcome = jobs._sync([uuid.uuid4()], SETTINGS)
    assert outcome.created == 1 and calls[0] == 4
    ceilings = [jobs.RETRY_FIRST * 2**n for n in range(3)]
    for delay, ceiling in zip(clock.slept, ceilings, strict=True):
        assert ceiling / 2 <= delay <= ceiling


def test_a_lock_or_statement_timeout_is_left_to_rqs_delayed_retry(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    for slow in (errors.LockNotAvailable(), errors.QueryCanceled()):
        failing(monkeypatch, slow)
        with pytest.raises(type(slow)):
            jobs._sync([uuid.uuid4()], SETTINGS)
    assert clock.slept == []


def test_an_outage_longer_than_the_job_allows_is_handed_to_rq_before_its_timeout(
    clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = failing(monkeypatch, *[errors.AdminShutdown() for _ in range(1000)])
    started = clock.now
    with pytest.raises(errors.AdminShutdown):
        jobs._sync([uuid.uuid4()], SETTINGS)
    # a last attempt may still take a statement's bound: it ends before RQ's job timeout interrupts it
    assert clock.now - started <= SETTINGS.job_timeout - SETTINGS.statement_timeout
    assert max(clock.slept) <= jobs.RETRY_MAX and 1 < calls[0] < 1000
