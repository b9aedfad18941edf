"""The real `profilesync` processes: start, work, stop cleanly on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import redis

from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.devkit.embedded import free_port
from tests.harness import IDLE_PUBLISHERS, PROFILES_OF, count, process_env, signup, wait_for
from tests.scrape import get


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


def test_an_idle_worker_stops_and_a_burst_exits_without_waiting_out_rqs_listener(
    settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    """RQ's command listener reads with a 60 s timeout; a stop that waits for that read made SIGTERM of an
    idle worker (and 1 in 6 `--burst` exits) take a minute. Each bound is a start on a loaded box, not 60."""
    env = process_env(settings)
    argv = [sys.executable, "-m", "profilesync", "worker"]
    for attempt in range(2):
        done = subprocess.run([*argv, "--burst"], env=env, cwd=tmp_path, capture_output=True, timeout=30)
        assert done.returncode == 0, done.stderr[-2000:]
        _stop_when_idle(argv, env, redis_conn, tmp_path / f"worker{attempt}.log")


def _stop_when_idle(argv: list[str], env: dict[str, str], redis_conn: redis.Redis, log: Path) -> None:
    with log.open("w") as out:
        idle = subprocess.Popen(argv, env=env, cwd=log.parent, stdout=out, stderr=subprocess.STDOUT)

    def waiting_for_jobs() -> bool:  # RQ's signal handlers are in place before its first dequeue
        return any(redis_conn.hget(key, "state") == b"idle" for key in redis_conn.smembers("rq:workers"))

    try:
        assert wait_for(waiting_for_jobs, timeout=30)
        idle.send_signal(signal.SIGTERM)
        assert idle.wait(timeout=30) == 0, log.read_text()[-2000:]
    finally:
        idle.kill()
        idle.wait()


def test_a_supervised_child_restarts_as_it_was_started_with_its_open_files_limit(
    settings: Settings, conn: psycopg.Connection[Any], tmp_path: Path
) -> None:
    """devkit.children for the chaos soak: `restart` kills a running child and starts the same command again
    (a supervisor); `open_files` is the children's soft limit, whatever the parent's."""
    children = Children(process_env(settings), tmp_path, open_files=256)
    port = free_port()
    children.start("publisher", "publisher", env={"PROFILESYNC_METRICS_PORT": str(port)})
    try:
        first = children.running["publisher"].pid
        limits = Path(f"/proc/{first}/limits").read_text()
        assert any(
            line.startswith("Max open files") and line.split()[3] == "256" for line in limits.splitlines()
        )
        assert children.restart("publisher") is None  # it was running: killed, not exited
        second = children.running["publisher"].pid
        assert second != first
        assert wait_for(lambda: count(conn, IDLE_PUBLISHERS) == 1)
        assert wait_for(lambda: get(port, "/healthz") == (200, "ok\n"))  # with its own environment again
    finally:
        codes = children.stop(timeout=15)
    assert codes == {"publisher": 0}, children.logs()[-4000:]
