"""Scaling knobs: `worker --processes N` (RQ's worker pool), PROFILESYNC_QUEUE, and a plain `rq worker`."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import psycopg
import redis
from rq.worker import Worker

from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.devkit.embedded import free_port
from profilesync.queueing import CREATE_PROFILES, profiles_queue
from tests.harness import bulk_signup, count, process_env, signup, wait_for
from tests.scrape import get, sample
from tests.servers import DatabaseFactory

RQ = os.path.join(os.path.dirname(sys.executable), "rq")
PROFILES = "SELECT count(*) FROM public.user_profiles"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_plain_rq_worker_command_line_creates_a_profile(
    conn: psycopg.Connection[Any], settings: Settings, redis_conn: redis.Redis
) -> None:
    user = signup(conn)
    profiles_queue(redis_conn).enqueue(CREATE_PROFILES, args=([str(user)],))
    argv = [RQ, "worker", "-u", settings.redis_url, "-S", "rq.serializers.JSONSerializer"]
    argv += [
        "-w",
        "profilesync.worker.main.ProfileSyncWorker",
        "--with-scheduler",
        "--burst",
        "profiles",
    ]  # as in README
    done = subprocess.run(argv, env=process_env(settings), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert count(conn, PROFILES + " WHERE id = %s", (user,)) == 1, done.stderr[-3000:]
    assert count(conn, "SELECT count(*) FROM profile_sync.signup_events") == 0


def test_worker_processes_share_a_burst_and_all_stop_on_sigterm(
    conn: psycopg.Connection[Any], settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    port = free_port()
    children = Children(process_env(settings, PROFILESYNC_JOB_BATCH_SIZE="10"), tmp_path)
    children.start("publisher", "publisher")
    children.start("pool", "worker", "--processes", "2", env={"PROFILESYNC_METRICS_PORT": str(port)})
    try:
        queue = profiles_queue(redis_conn)
        assert wait_for(lambda: len(Worker.all(queue=queue)) == 2), children.logs()[-3000:]
        info = subprocess.run(
            [RQ, "info", "-u", settings.redis_url],
            env=process_env(settings),
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert re.search(r"^2 workers, ", info.stdout, re.MULTILINE), info.stdout
        pids = [w.pid for w in Worker.all(queue=queue)]
        assert wait_for(lambda: get(port, "/healthz") == (200, "ok\n")), get(port, "/healthz")

        bulk_signup(conn, 500)
        assert wait_for(lambda: count(conn, PROFILES) == 500, timeout=60), children.logs()[-3000:]
        workers = Worker.all(queue=queue)
        assert sorted(w.successful_job_count > 0 for w in workers) == [True, True]  # both took jobs
        assert wait_for(lambda: sample(port, "profilesync_profiles_created_total") == 500)
        assert sample(port, "profilesync_signup_to_profile_seconds_count") == 500
    finally:
        codes = children.stop(timeout=30)
    assert codes == {"publisher": 0, "pool": 0}, children.logs()[-4000:]
    assert Worker.all(queue=queue) == []
    assert not any(_pid_alive(pid) for pid in pids)


def test_projects_with_their_own_queue_share_one_redis_db_without_taking_each_others_jobs(
    database_factory: DatabaseFactory, settings: Settings, redis_conn: redis.Redis, tmp_path: Path
) -> None:
    other_url = database_factory.create()
    try:
        with (
            psycopg.connect(settings.database_url, autocommit=True) as a,
            psycopg.connect(other_url, autocommit=True) as b,
        ):
            alpha = Children(process_env(settings, PROFILESYNC_QUEUE="alpha"), tmp_path / "alpha")
            beta = Children(
                process_env(settings, PROFILESYNC_QUEUE="beta", DATABASE_URL=other_url), tmp_path / "beta"
            )
            for children in (alpha, beta):
                Path(children.logdir).mkdir()
            alpha.start("publisher", "publisher")
            beta.start("publisher", "publisher")
            beta.start("worker", "worker")
            try:
                alpha_user = signup(a)
                assert wait_for(lambda: profiles_queue(redis_conn, "alpha").count == 1)
                # beta's worker, idle on its own queue, works beta's job; alpha's stays queued for alpha
                beta_user = signup(b)
                assert wait_for(lambda: count(b, PROFILES + " WHERE id = %s", (beta_user,)) == 1)
                assert profiles_queue(redis_conn, "alpha").count == 1
                assert [w.queue_names() for w in Worker.all(connection=redis_conn)] == [["beta"]]

                alpha.start("worker", "worker")
                assert wait_for(lambda: count(a, PROFILES + " WHERE id = %s", (alpha_user,)) == 1)
                assert count(b, PROFILES) == 1 and count(a, PROFILES) == 1
                assert profiles_queue(redis_conn).count == 0  # nothing ever went to the default queue
            finally:
                codes = {
                    **alpha.stop(timeout=15),
                    **{f"beta-{k}": v for k, v in beta.stop(timeout=15).items()},
                }
            assert set(codes.values()) == {0}, alpha.logs()[-2000:] + beta.logs()[-2000:]
    finally:
        database_factory.drop(other_url)
