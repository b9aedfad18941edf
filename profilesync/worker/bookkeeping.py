"""RQ's per-job bookkeeping in fewer Redis round trips, with the same keys and values.

A SimpleWorker spends about 20 round trips on a job (the bench's `worker` metric): its heartbeat is three
separate commands and runs three times per job (around the dequeue and after the job), and it writes its state
as "idle" twice. Mixed in before RQ's worker class, this sends each heartbeat as one pipeline, skips those
that would not move the worker key's expiry (one was sent less than a second ago with at least that TTL), and
skips writing a state the worker already has. A job's preparation never shortens the worker key's expiry (RQ
sets it to the job's heartbeat TTL, shorter than the worker's, so the next idle heartbeat had to raise it
again). The job's last heartbeat at its end and the worker's return to "idle" travel in the pipeline that
records the job's outcome instead of two round trips of their own. What `rq info`, rq-dashboard and `rq
requeue` read (the worker and job hashes, the registries, the queue) is written as before. A heartbeat's round
trip also checks that the worker is still registered, and registers it again when Redis lost it.
"""

from __future__ import annotations

import math
import time
from datetime import timedelta
from typing import Any

from redis.client import Pipeline
from rq import worker_registration
from rq.job import Job
from rq.queue import Queue
from rq.utils import now as rq_now
from rq.worker import WorkerStatus

from profilesync.logs import get_logger

log = get_logger(__name__)

# A heartbeat is skipped when the previous one, sent less than this many seconds ago, keeps the worker key
# alive at least as long as this one would, minus this margin.
HEARTBEAT_SLACK = 1.0


class FewerRoundTrips:
    """Mixin for an rq Worker class (first in the bases): pipelined, de-duplicated heartbeats and states."""

    _alive_until = 0.0  # monotonic time until which the last heartbeat keeps the worker key
    _ended: Job | None = None  # a job that ended, whose last heartbeat goes with its outcome
    _state_written: str | None = None  # a state the outcome's pipeline wrote before RQ sets it

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        ttl = timeout or self.worker_ttl + 60  # type: ignore[attr-defined]  # as RQ's own heartbeat
        now = time.monotonic()
        if pipeline is not None:
            ttl = max(ttl, math.ceil(self._alive_until - now))  # never shorter than the key already has
            super().heartbeat(ttl, pipeline=pipeline)  # type: ignore[misc]
        elif self._alive_until >= now + ttl - HEARTBEAT_SLACK:
            return
        else:
            with self.connection.pipeline(transaction=False) as pipe:  # type: ignore[attr-defined]
                pipe.exists(self.key)  # type: ignore[attr-defined]
                super().heartbeat(ttl, pipeline=pipe)  # type: ignore[misc]
                registered = pipe.execute()[0]
            if not registered:
                self._register_again(ttl)
        self._alive_until = now + ttl

    def _register_again(self, ttl: int) -> None:
        """Redis lost the worker's key (a restart without persistence, a FLUSHALL): RQ's heartbeat alone only
        recreates its heartbeat field, so `rq info` and doctor would count a working worker as dead."""
        with self.connection.pipeline() as pipe:  # type: ignore[attr-defined]
            pipe.hset(self.key, mapping=self.serialize())  # type: ignore[attr-defined]
            worker_registration.register(self, pipe)  # type: ignore[arg-type]
            pipe.expire(self.key, ttl)  # type: ignore[attr-defined]
            pipe.execute()
        log.warning("worker registered again: Redis had lost its registration", worker=self.name)  # type: ignore[attr-defined]

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> Any:
        written, self._state_written = self._state_written, None
        if pipeline is None and state in (getattr(self, "_state", None), written):
            self._state = state  # already in Redis: only the worker's own view moves on
            return None
        return super().set_state(state, pipeline)  # type: ignore[misc]

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        """As RQ's (the job's end and last heartbeat), the heartbeat written with the job's outcome."""
        job.ended_at = job.last_heartbeat = rq_now()
        self._ended = job

    def increment_total_working_time(self, job_execution_time: timedelta, pipeline: Pipeline) -> None:
        """In the pipeline of every outcome (success, failure, retry): also the ended job's last heartbeat and
        the worker's state, back to idle (RQ's SimpleWorker writes it right after, on its own)."""
        super().increment_total_working_time(job_execution_time, pipeline)  # type: ignore[misc]
        self._write_ended(pipeline)
        # Written for `rq info`, while the worker itself stays busy until RQ sets it idle: a SIGTERM before
        # that must wait for the job's outcome (RQ stops at once only an idle worker, raising StopRequested
        # wherever it is, the outcome's pipeline included: the job would end as failed).
        pipeline.hset(self.key, "state", WorkerStatus.IDLE)  # type: ignore[attr-defined]
        self._state_written = WorkerStatus.IDLE

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        try:
            performed: bool = super().perform_job(job, queue, *args, **kwargs)  # type: ignore[misc]
            return performed
        finally:
            if self._ended is not None:  # an outcome without the working time: the heartbeat on its own
                self._write_ended(self.connection)  # type: ignore[attr-defined]

    def _write_ended(self, connection: Any) -> None:
        ended, self._ended = self._ended, None
        if ended is not None and ended.last_heartbeat is not None:
            ended.heartbeat(ended.last_heartbeat, 0, pipeline=connection)
