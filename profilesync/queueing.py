"""The RQ side: one queue (PROFILESYNC_QUEUE, default `profiles`), JSON serializer, jobs by dotted path."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import redis
from rq import Queue, Retry
from rq.serializers import JSONSerializer

from profilesync.backoff import Backoff
from profilesync.config import DEFAULT_QUEUE, Settings

# The job function, by dotted path: the publisher never imports the worker; renaming it breaks queued jobs.
# Despite its name it brings profiles in step with auth.users: creates, updates (metadata policy) and scrubs
# (soft-deleted users); the name stays because every queued job carries it.
CREATE_PROFILES = "profilesync.worker.jobs.create_profiles"
# The same job under the path it had while the worker was a top-level package: jobs queued by an older release
# still run. Deprecated: accepted for one release, never enqueued.
LEGACY_CREATE_PROFILES = "worker.jobs.create_profiles"
# RQ's retries of a job that failed on a transient error (a lock or statement timeout, an outage longer than
# the worker's own retries): whole seconds (RQ's unit) doubling from RETRY_FIRST to RETRY_MAX, jittered per
# job so that the jobs of one outage do not come back in lockstep. The publisher redelivers what waits longer.
RETRY_FIRST = 1
RETRY_MAX = 5


def connect_redis(url: str, *, timeout: float = 30.0) -> redis.Redis:
    """A client whose every command ends within `timeout` seconds (connecting: within 5)."""
    return redis.Redis.from_url(
        url,
        socket_connect_timeout=min(5.0, timeout),
        socket_timeout=timeout,
        socket_keepalive=True,
        health_check_interval=30,
    )


def profiles_queue(connection: redis.Redis, name: str = DEFAULT_QUEUE) -> Queue:
    return Queue(name, connection=connection, serializer=JSONSerializer)


def job_retry(settings: Settings) -> Retry | None:
    if settings.job_retries == 0:
        return None
    backoff = Backoff(RETRY_FIRST, RETRY_MAX)
    intervals = [math.ceil(backoff.next_delay(0.0)) for _ in range(settings.job_retries)]
    return Retry(max=settings.job_retries, interval=intervals)


@dataclass(frozen=True)
class JobPlan:
    job_id: str
    user_ids: list[str]
    event_ids: list[int]


def enqueue_plans(queue: Queue, plans: list[JobPlan], settings: Settings) -> None:
    """Enqueue every plan in one Redis round trip; raises if Redis did not take them all."""
    retry = job_retry(settings)
    data: list[Any] = [
        Queue.prepare_data(
            CREATE_PROFILES,
            args=(plan.user_ids,),
            job_id=plan.job_id,
            timeout=settings.job_timeout,
            failure_ttl=settings.failure_ttl,
            result_ttl=settings.result_ttl,
            retry=retry,
            description=f"create_profiles({len(plan.user_ids)} users)",
        )
        for plan in plans
    ]
    with queue.connection.pipeline() as pipe:
        queue.enqueue_many(data, pipeline=pipe)
        pipe.execute()
