"""`profilesync worker`: RQ's worker on PROFILESYNC_QUEUE, JSON serializer, with the scheduler for retries.

A SimpleWorker runs jobs in-process, so the PostgreSQL connection persists across jobs (no fork, no reconnect
per job). Scale with more processes: `--processes N` runs RQ's worker pool of N of them; plain
`rq worker -w profilesync.worker.main.ProfileSyncWorker -S rq.serializers.JSONSerializer …` runs the same
class.

`ProfileSyncWorker` runs only the functions of its allow-list (whatever job class a command line asks for):
Redis content is data, never code. After every job it checks its PostgreSQL connection and replaces one left
busy.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from types import FrameType
from typing import Any

import redis
from redis.client import Pipeline
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.serializers import JSONSerializer
from rq.worker import BaseWorker, SimpleWorker
from rq.worker_pool import WorkerPool

from profilesync import metrics
from profilesync.backoff import Backoff
from profilesync.config import Settings
from profilesync.errors import ProfileSyncError
from profilesync.logs import get_logger
from profilesync.queueing import CREATE_PROFILES, LEGACY_CREATE_PROFILES, connect_redis, profiles_queue
from profilesync.worker import jobs, runtime
from profilesync.worker.bookkeeping import FewerRoundTrips

log = get_logger(__name__)

FIRST_RETRY = 0.5  # seconds before the first restart after RQ left its loop
DATABASE_PROBE_INTERVAL = 5.0  # seconds without a job's database contact before a heartbeat checks it
POOL_HEALTH_CACHE = 2.0  # seconds a pool's /healthz answer is reused (it reads the registrations in Redis)
# What a job may run, by the name it carries: looked up here, never imported from Redis content.
ALLOWED: dict[str, Callable[..., Any]] = {
    CREATE_PROFILES: jobs.create_profiles,
    LEGACY_CREATE_PROFILES: jobs.create_profiles,
}


class ForbiddenJobError(ProfileSyncError):
    """Refused to run a job that is not on the worker's allow-list"""


class AllowListedJob(Job):
    """A job whose function comes from ALLOWED by name. RQ's own Job imports whatever dotted path the job's
    hash names (`os.system`…), and its success/failure/stopped callbacks too: ours have none, so none run."""

    @property
    def func(self) -> Callable[..., Any]:
        name = self.func_name
        function = ALLOWED.get(name) if isinstance(name, str) and self.instance is None else None
        if function is None:
            self.retries_left = 0  # retrying cannot make it allowed
            shown = repr(name)[:100]
            log.error("refused a job that is not on the allow-list", job_id=self.id, function=shown)
            raise ForbiddenJobError(shown)
        return function

    @property
    def success_callback(self) -> None:
        return None

    @property
    def failure_callback(self) -> None:
        return None

    @property
    def stopped_callback(self) -> None:
        return None


# RQ's INFO lines per job (dequeued, "Job OK", "Successfully completed"): three records through the JSON
# renderer on every job's path, saying what the job's own "profiles created" line says. Its lifecycle lines
# (started, listening, stopping) stay INFO.
_RQ_PER_JOB = frozenset(
    {
        "Worker %s: %s: %s (%s)",
        "Worker %s: %s: %s",
        "Successfully completed %s job in %ss on worker %s",
        "Successfully completed job %s in %ss on worker %s",
    }
)


class PerJobLinesAtDebug(logging.Filter):
    """On RQ's worker logger: its per-job INFO lines become DEBUG lines (shown only at log level DEBUG)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno != logging.INFO or record.msg not in _RQ_PER_JOB:
            return True
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)


def _demote_per_job_lines() -> None:
    rq_log = logging.getLogger("rq.worker")
    if not any(isinstance(f, PerJobLinesAtDebug) for f in rq_log.filters):
        rq_log.addFilter(PerJobLinesAtDebug())


class PromptExit:
    """Mixed in before an RQ worker class: its command listener exits on the UNSUBSCRIBE reply instead of 60 s
    later."""

    pubsub_thread: Any

    def unsubscribe(self) -> None:
        """Let RQ's command listener exit on the UNSUBSCRIBE reply instead of 60 s later.

        The listener thread reads with a 60 s timeout; RQ sends UNSUBSCRIBE, then stops the thread (redis-py's
        `stop()` waits for it to exit). The reply usually wakes the read before the stop, the thread reads
        again, and every stop or `--burst` exit waited out that read. Its run flag cleared first (without
        `stop()`'s wait: nothing would wake the read yet), the reply's wake-up is the thread's last read.
        """
        if self.pubsub_thread is not None:
            self.pubsub_thread._running.clear()
        super().unsubscribe()  # type: ignore[misc]


class ProfileSyncWorker(FewerRoundTrips, PromptExit, SimpleWorker):
    """Remembers whether it was asked to stop: RQ also leaves its loop, quietly, when Redis goes away.

    Built by RQ's worker pool and by `rq worker -w` too, so its maintenance defaults come from the Settings,
    and so is the allow-list: its job class is AllowListedJob whatever the caller passes. RQ's per-job log
    lines are DEBUG; the job logs its one INFO line ("profiles created").
    """

    stop_signalled = False
    log_result_lifespan = False  # "result is kept for N seconds" after every job

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        settings = runtime.settings()
        # A killed worker's job stays "started" until a maintenance pass finds its registry entry expired
        # (job timeout + 60 s) and retries it; the retry needs a scheduler, which a live worker only takes
        # over from a dead one during maintenance. RQ's 10-minute default would leave it stuck that long.
        # Maintenance only runs between dequeues, whose blocking wait is worker_ttl - 15 s: keep them equal.
        kwargs.setdefault("maintenance_interval", settings.worker_maintenance_interval)
        kwargs.setdefault("worker_ttl", settings.worker_maintenance_interval + 15)
        kwargs["job_class"] = AllowListedJob
        super().__init__(*args, **kwargs)
        _demote_per_job_lines()

    def perform_job(self, job: Job, queue: Queue, execution: Execution) -> bool:
        try:
            return super().perform_job(job, queue, execution)
        finally:
            runtime.release()  # success, failure or RQ's timeout: never keep a busy connection

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        """RQ's heartbeat, run by its loop between jobs: records the contact with Redis and, when no job
        reached PostgreSQL lately, checks that too (runtime.LIVENESS, read by /healthz)."""
        try:
            super().heartbeat(timeout, pipeline)
        except redis.RedisError as exc:
            runtime.LIVENESS.failed(runtime.REDIS, metrics.one_line(exc))
            raise
        runtime.LIVENESS.reached(runtime.REDIS)
        if pipeline is None:
            runtime.probe_database(max_quiet=DATABASE_PROBE_INTERVAL)

    def handle_job_failure(self, job: Any, queue: Any, *args: Any, **kwargs: Any) -> None:
        metrics.JOBS_FAILED.inc()
        super().handle_job_failure(job, queue, *args, **kwargs)

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signalled = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


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
    backoff = Backoff(FIRST_RETRY, settings.reconnect_max_delay)
    current: list[ProfileSyncWorker] = []
    metrics.serve(settings, metrics.registry(WORKER_METRICS), _health(settings, current))
    try:
        while True:
            started = time.monotonic()
            worker: ProfileSyncWorker | None = None
            try:
                worker = _make_worker(settings, name)  # talks to Redis already (CLIENT SETNAME)
                current[:] = [worker]
                worked |= bool(worker.work(burst=burst, with_scheduler=True, logging_level=level))
            except redis.RedisError as exc:  # Redis down at start, or RQ's own teardown while it is down
                runtime.LIVENESS.failed(runtime.REDIS, metrics.one_line(exc))
                log.warning("worker lost Redis", error=str(exc))
            finally:
                if worker is not None:
                    worker.connection.close()
            if burst or (worker is not None and worker.stop_signalled):
                return worked
            for sig in (signal.SIGTERM, signal.SIGINT):  # until the next worker installs RQ's handlers
                signal.signal(sig, lambda *_: stop.set())
            delay = backoff.next_delay(time.monotonic() - started)
            log.warning("worker stopped unexpectedly; starting again", retry_in=round(delay, 3))
            if stop.wait(delay):
                return worked
    finally:
        runtime.close()


WORKER_METRICS = [
    metrics.PROFILES_CREATED,
    metrics.JOBS_FAILED,
    metrics.SIGNUP_TO_PROFILE,
    metrics.DROPPED_VALUES,
]


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

    metrics.serve(
        settings, metrics.pool_registry(), metrics.cached(_pool_health(settings, workers), POOL_HEALTH_CACHE)
    )
    try:
        pool.start(burst=burst, logging_level=settings.log_level.upper())
    finally:
        redis_conn.close()


def _health(settings: Settings, current: list[ProfileSyncWorker]) -> metrics.HealthCheck:
    """/healthz of a worker process, from its own state: when its loop last reached PostgreSQL and Redis
    (runtime.LIVENESS: jobs and heartbeats record it, a heartbeat checks the database when no job did)."""

    def check() -> str | None:
        if not current:
            return "worker not started yet"
        return runtime.LIVENESS.problem(max_age=current[-1].worker_ttl + settings.job_timeout)

    return check


def _pool_health(settings: Settings, workers: Callable[[], Iterable[BaseWorker]]) -> metrics.HealthCheck:
    """/healthz of a pool's own process: Redis answers and every worker's heartbeat is recent (each worker
    checks its own database contact between jobs; `profilesync doctor` checks the whole pipeline)."""
    probe = connect_redis(settings.redis_url)

    def check() -> str | None:
        try:
            probe.ping()
            found = list(workers())
        except redis.RedisError as exc:
            return f"redis: {metrics.one_line(exc)}"
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
