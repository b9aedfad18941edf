"""`profilesync worker`: RQ's worker on PROFILESYNC_QUEUE, JSON serializer, with the scheduler for retries.

A SimpleWorker runs jobs in-process, so the PostgreSQL connection persists across jobs (no fork, no reconnect
per job). Scale with more processes: `--processes N` runs RQ's worker pool of N of them; plain
`rq worker -w worker.main.ProfileSyncWorker -S rq.serializers.JSONSerializer …` runs the same class.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import psycopg
import redis
from redis.client import Pipeline
from rq import worker_registration
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker, SimpleWorker
from rq.worker_pool import WorkerPool

from profilesync import db, metrics
from profilesync.config import Settings
from profilesync.logs import get_logger
from profilesync.queueing import connect_redis, profiles_queue
from worker import runtime

log = get_logger(__name__)


class ProfileSyncWorker(SimpleWorker):
    """Remembers whether it was asked to stop: RQ also leaves its loop, quietly, when Redis goes away.

    Built by RQ's worker pool and by `rq worker -w` too, so its maintenance defaults come from the Settings.
    """

    stop_signalled = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = runtime.settings()
        # A killed worker's job stays "started" until a maintenance pass finds its registry entry expired
        # (job timeout + 60 s) and retries it; the retry needs a scheduler, which a live worker only takes
        # over from a dead one during maintenance. RQ's 10-minute default would leave it stuck that long.
        # Maintenance only runs between dequeues, whose blocking wait is worker_ttl - 15 s: keep them equal.
        kwargs.setdefault("maintenance_interval", settings.worker_maintenance_interval)
        kwargs.setdefault("worker_ttl", settings.worker_maintenance_interval + 15)
        super().__init__(*args, **kwargs)

    def handle_job_failure(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> None:
        metrics.JOBS_FAILED.inc()
        super().handle_job_failure(job, queue, *args, **kwargs)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signalled = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, which registers the worker again when Redis lost its key (a restart without
        persistence, a FLUSHALL): RQ alone only recreates the key's heartbeat field, so `rq info` and doctor
        count the worker dead while it works. One round trip instead of RQ's three."""
        if pipeline is not None:  # inside RQ's own job bookkeeping
            super().heartbeat(timeout, pipeline)
            return
        with self.connection.pipeline() as pipe:
            pipe.exists(self.key)
            super().heartbeat(timeout, pipe)
            existed = pipe.execute()[0]
        if not existed:
            with self.connection.pipeline() as pipe:
                pipe.hset(self.key, mapping=self.serialize())
                worker_registration.register(self, pipe)
                pipe.expire(self.key, timeout or self.worker_ttl + 60)
                pipe.execute()
            log.warning("worker registered again: Redis had lost its registration", worker=self.name)


def _make_worker(settings: Settings, name: str | None) -> ProfileSyncWorker:
    redis_conn = connect_redis(settings.redis_url)
    return ProfileSyncWorker(
        [profiles_queue(redis_conn, settings.queue)],
        connection=redis_conn,
        serializer=JSONSerializer,
        name=name,
    )


def run(settings: Settings, *, burst: bool = False, name: str | None = None) -> bool:
    """Work until SIGTERM/SIGINT (or, with `burst`, until the queue is empty).

    RQ ends its loop on an unexpected error such as Redis restarting under it; the worker then starts again
    with backoff instead of exiting, as the publisher reconnects.
    """
    runtime.configure(settings)
    level = settings.log_level.upper()
    stop = threading.Event()
    worked = False
    delay = 0.0
    current: list[ProfileSyncWorker] = []
    metrics.serve(settings, metrics.registry(WORKER_METRICS), _health(settings, lambda: current[-1:]))
    try:
        while True:
            worker = _make_worker(settings, name)
            current[:] = [worker]
            try:
                worked |= bool(worker.work(burst=burst, with_scheduler=True, logging_level=level))
            except redis.RedisError as exc:  # from RQ's own teardown while Redis is down
                log.warning("worker lost Redis", error=str(exc))
            finally:
                worker.connection.close()
            if burst or worker.stop_signalled:
                return worked
            for sig in (signal.SIGTERM, signal.SIGINT):  # until the next worker installs RQ's handlers
                signal.signal(sig, lambda *_: stop.set())
            delay = min(settings.reconnect_max_delay, max(0.5, delay * 2))
            log.warning("worker stopped unexpectedly; starting again", retry_in=delay)
            if stop.wait(delay):
                return worked
    finally:
        runtime.close()


WORKER_METRICS = [metrics.PROFILES_CREATED, metrics.JOBS_FAILED, metrics.SIGNUP_TO_PROFILE]


def run_pool(settings: Settings, processes: int, *, burst: bool = False) -> None:
    """RQ's worker pool: `processes` ProfileSyncWorkers, forked and respawned when one dies.

    SIGTERM/SIGINT stops them all (each finishes its job first). The pool's own process serves /healthz and,
    from every worker's share (prometheus_client's multiprocess mode), /metrics.
    """
    runtime.configure(settings)
    redis_conn = connect_redis(settings.redis_url)
    pool = WorkerPool(
        [settings.queue],
        connection=redis_conn,
        num_workers=processes,
        worker_class=ProfileSyncWorker,
        serializer=JSONSerializer,
    )

    def workers() -> list[BaseWorker]:
        names = set(pool.worker_dict)
        found = ProfileSyncWorker.all(connection=redis_conn, queue=profiles_queue(redis_conn, settings.queue))
        mine = [w for w in found if w.name in names]
        return mine if len(mine) == len(names) == processes else []

    metrics.serve(settings, metrics.pool_registry(), _health(settings, workers))
    try:
        pool.start(burst=burst, logging_level=settings.log_level.upper())
    finally:
        redis_conn.close()


def _health(settings: Settings, workers: Callable[[], Iterable[BaseWorker]]) -> metrics.HealthCheck:
    """/healthz of a worker process: the database and Redis answer, every worker's heartbeat is recent."""
    probe = connect_redis(settings.redis_url)

    def check() -> str | None:
        try:
            with db.connect(settings.database_url, application_name="profilesync-health") as conn:
                conn.execute("SELECT 1")
        except psycopg.Error as exc:
            return f"database: {metrics.one_line(exc)}"
        try:
            probe.ping()
        except redis.RedisError as exc:
            return f"redis: {metrics.one_line(exc)}"
        found = list(workers())
        if not found:
            return "worker not registered in Redis yet"
        for worker in found:
            if worker.last_heartbeat is None:
                return f"worker {worker.name} not registered in Redis yet"
            quiet = (datetime.now(UTC) - worker.last_heartbeat).total_seconds()
            if quiet > worker.worker_ttl + settings.job_timeout:
                return f"worker {worker.name}: no heartbeat for {quiet:.0f}s"
        return None

    return check
