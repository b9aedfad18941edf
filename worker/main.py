"""`profilesync worker`: RQ's worker on the `profiles` queue, JSON serializer, with the scheduler for retries.

A SimpleWorker runs jobs in-process, so the PostgreSQL connection persists across jobs (no fork, no reconnect
per job). Run several processes to scale.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

import redis
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from profilesync.config import Settings
from profilesync.logs import get_logger
from profilesync.queueing import connect_redis, profiles_queue
from worker import runtime

log = get_logger(__name__)


class _Worker(SimpleWorker):
    """Remembers whether it was asked to stop: RQ also leaves its loop, quietly, when Redis goes away."""

    stop_signalled = False

    def request_stop(self, signum: int, frame: FrameType | None) -> None:
        self.stop_signalled = True
        super().request_stop(signum, frame)  # type: ignore[no-untyped-call]


def _make_worker(settings: Settings, name: str | None) -> _Worker:
    redis_conn = connect_redis(settings.redis_url)
    return _Worker(
        [profiles_queue(redis_conn)],
        connection=redis_conn,
        serializer=JSONSerializer,
        name=name,
        # A killed worker's job stays "started" until a maintenance pass finds its registry entry expired
        # (job timeout + 60 s) and retries it; the retry needs a scheduler, which a live worker only takes
        # over from a dead one during maintenance. RQ's 10-minute default would leave it stuck that long.
        # Maintenance only runs between dequeues, whose blocking wait is worker_ttl - 15 s: keep them equal.
        maintenance_interval=settings.worker_maintenance_interval,
        worker_ttl=settings.worker_maintenance_interval + 15,
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
    try:
        while True:
            worker = _make_worker(settings, name)
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
