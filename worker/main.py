"""`profilesync worker`: RQ's worker on the `profiles` queue, JSON serializer, with the scheduler for retries.

A SimpleWorker runs jobs in-process, so the PostgreSQL connection persists across jobs (no fork, no reconnect
per job). Run several processes to scale.
"""

from __future__ import annotations

from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from profilesync.config import Settings
from profilesync.queueing import connect_redis, profiles_queue
from worker import runtime


def run(settings: Settings, *, burst: bool = False, name: str | None = None) -> bool:
    runtime.configure(settings)
    redis_conn = connect_redis(settings.redis_url)
    worker = SimpleWorker(
        [profiles_queue(redis_conn)], connection=redis_conn, serializer=JSONSerializer, name=name
    )
    try:
        return bool(worker.work(burst=burst, with_scheduler=True, logging_level=settings.log_level.upper()))
    finally:
        runtime.close()
