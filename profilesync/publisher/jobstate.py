"""Which of the outbox's jobs will still run: read from Redis as data, never trusted to be well-formed.

A job is live only if its hash is readable, its status says it will still run, and it is where that status
puts it: queued → in the queue list (or RQ's intermediate list, between dequeue and start); started → in the
started registry with an unexpired entry; deferred → in that registry. Anything else (a deleted queue list,
an evicted hash, a bogus status, a garbage field, a dead worker's expired entry) is lost and gets redelivered.
One pipelined round trip per pass: the queue lists and the started registry are read once (they are as long
as the backlog and the number of workers), the rest is O(jobs asked about).

A job waiting in the scheduled registry for one of RQ's retries is not live either: it runs only when some
worker's RQ scheduler moves it, at a time that worker's clock wrote. A scheduler that is stuck, or that a
worker with a skewed clock holds, would keep its users waiting; the publisher, whose redelivery runs on the
database's clock, puts such a job back in the queue itself (`requeue_scheduled`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis
from rq import Queue
from rq.exceptions import InvalidJobOperation
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job

from profilesync.logs import get_logger

log = get_logger(__name__)


def live_jobs(redis_conn: redis.Redis, queue: Queue, job_ids: Sequence[str]) -> set[str]:
    """The ids among `job_ids` whose job will still run without waiting for RQ's scheduler."""
    if not job_ids:
        return set()
    with redis_conn.pipeline(transaction=False) as pipe:
        pipe.lrange(queue.key, 0, -1)
        pipe.lrange(IntermediateQueue.get_intermediate_queue_key(queue.key), 0, -1)
        pipe.zrange(queue.started_job_registry.key, 0, -1, withscores=True)
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
            pipe.zscore(queue.deferred_job_registry.key, job_id)
        replies = pipe.execute()
    queued = {_text(member) for member in (*replies[0], *replies[1])}
    now = time.time()
    started = {  # members are "<job id>:<execution id>"; the score is when the entry expires
        _text(member).rpartition(":")[0] for member, expires in replies[2] if expires > now
    }
    live: set[str] = set()
    for n, job_id in enumerate(job_ids):
        status, deferred = replies[3 + 2 * n : 5 + 2 * n]
        where = {
            "queued": job_id in queued,
            "started": job_id in started,
            "deferred": deferred is not None,
        }
        if where.get(_text(status), False):
            live.add(job_id)
    return live


def requeue_scheduled(queue: Queue, job_ids: Sequence[str]) -> set[str]:
    """Move the jobs among `job_ids` that wait in the scheduled registry back into the queue now; returns
    their ids. Taking a job out of the registry is atomic (ZREM): a scheduler that moved it first wins, and
    the job then runs from the queue anyway. A job whose hash is unreadable or names another queue is not
    requeued: its events are redelivered in a new job."""
    registry = queue.scheduled_job_registry
    with queue.connection.pipeline(transaction=False) as pipe:
        for job_id in job_ids:
            pipe.zscore(registry.key, job_id)
        waiting = [job_id for job_id, score in zip(job_ids, pipe.execute(), strict=True) if score is not None]
    requeued: set[str] = set()
    for job_id in waiting:
        try:
            job = Job.fetch(job_id, connection=queue.connection, serializer=queue.serializer)
            if job.origin != queue.name:
                continue
            registry.requeue(job)
        except InvalidJobOperation:  # RQ's scheduler moved it meanwhile: it is queued
            requeued.add(job_id)
        except redis.RedisError:
            raise
        except Exception as exc:  # Redis content is data: a garbled job is redelivered as a new one
            log.warning("cannot requeue a scheduled job", job_id=job_id, error=str(exc)[:200])
        else:
            requeued.add(job_id)
    return requeued


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else ""
