"""Fixtures of the integration tier: the operator commands' environment."""

from __future__ import annotations

import os

import pytest

from profilesync import logs
from profilesync.config import Settings


@pytest.fixture
def env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """The environment `profilesync` reads, for in-process cli.main() and subprocesses alike.

    In-process, main() must not configure logging: structlog's cache_logger_on_first_use would make module
    loggers ignore `capture_logs` in every later test of the session.
    """
    monkeypatch.setattr(logs, "configure", lambda *args, **kwargs: None)
    values = {
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "PROFILESYNC_LOG_FORMAT": "json",
    }
    monkeypatch.delenv("LISTEN_DATABASE_URL", raising=False)
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    return {**os.environ, **values}
