"""The real `profilesync` processes: start, work, stop cleanly on SIGTERM."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg

from profilesync.config import Settings
from profilesync.devkit.children import Children
from tests.harness import IDLE_PUBLISHERS, PROFILES_OF, count, process_env, signup, wait_for


def test_publisher_and_worker_processes_create_profiles_and_stop_on_sigterm(
    conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path
) -> None:
    env = process_env(settings)
    children = Children(env, tmp_path)
    children.start("publisher", "publisher")
    children.start("worker", "worker")
    try:
        assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 1)
        users = [signup(conn, kind) for kind in ("email", "phone", "anonymous", "google")]
        assert wait_for(lambda: count(conn, PROFILES_OF, (users,)) == 4)
    finally:
        codes = children.stop(timeout=15)
    assert codes == {"publisher": 0, "worker": 0}, children.logs()[-4000:]
    assert count(conn, "SELECT count(*) FROM profile_sync.publishers") == 0
