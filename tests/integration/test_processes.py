"""The real `profilesync` processes: start, work, stop cleanly on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg

from profilesync.config import Settings
from tests.harness import count, signup, wait_for


def _env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "DATABASE_URL": settings.database_url,
        "REDIS_URL": settings.redis_url,
        "PROFILESYNC_SAFETY_INTERVAL": "0.5",
        "PROFILESYNC_LOG_FORMAT": "json",
    }


def _start(settings: Settings, log: Path, *args: str) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "profilesync.cli", *args], env=_env(settings), stdout=sink, stderr=sink
        )


def test_publisher_and_worker_processes_create_profiles_and_stop_on_sigterm(
    conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path
) -> None:
    publisher = _start(settings, tmp_path / "publisher.log", "publisher")
    worker = _start(settings, tmp_path / "worker.log", "worker")
    try:
        assert wait_for(lambda: count(conn, "SELECT count(*) FROM profile_sync.publishers WHERE idle") == 1)
        users = [signup(conn, kind) for kind in ("email", "phone", "anonymous", "google")]
        assert wait_for(
            lambda: count(conn, "SELECT count(*) FROM public.user_profiles WHERE id = ANY(%s)", (users,)) == 4
        )
    finally:
        for process in (publisher, worker):
            process.send_signal(signal.SIGTERM)
        codes = [process.wait(timeout=15) for process in (publisher, worker)]
    assert codes == [0, 0], [(tmp_path / f).read_text()[-2000:] for f in ("publisher.log", "worker.log")]
    assert count(conn, "SELECT count(*) FROM profile_sync.publishers") == 0
