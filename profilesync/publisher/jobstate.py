"""Which of the outbox's jobs will still run: read from Redis as data, never trusted to be well-formed.

A job is live only if its hash is readable, its status says it will still run, and it is where that status
puts it: queued → in the queue list (or RQ's intermediate list, between dequeue and start); started → in the
started registry with an unexpired entry; scheduled / deferred → in that registry. Anything else (a deleted
queue list, an evicted hash, a bogus status, a garbage field, a dead worker's expired entry) is lost and gets
redelivered. One pipelined round trip per pass: the queue lists and the started registry are read once
(they are as long as the backlog and the number of workers), the rest is O(jobs asked about).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import redis
from rq import Queue
from rq.intermediate_queue import IntermediateQueue
from rq.job import Job


def live_jobs(redis_conn: redis.Redis, queue: Queue, job_ids: Sequence[str]) -> set[str]:
    """The ids among `job_ids` whose job will still run."""
    if not job_ids:
        return set()
    with redis_conn.pipeline(transaction=False) as pipe:
        pipe.lrange(queue.key, 0, -1)
        pipe.lrange(IntermediateQueue.get_intermediate_queue_key(queue.key), 0, -1)
        pipe.zrange(queue.started_job_registry.key, 0, -1, withscores=True)
        for job_id in job_ids:
            pipe.hget(Job.key_for(job_id), "status")
            pipe.zscore(queue.scheduled_job_registry.key, job_id)
            pipe.zscore(queue.deferred_job_registry.key, job_id)
        replies = pipe.execute()
    queued = {_text(member) for member in (*replies[0], *replies[1])}
    now = time.time()
    started = {  # members are "<job id>:<execution id>"; the score is when the entry expires
        _text(member).rpartition(":")[0] for member, expires in replies[2] if expires > now
    }
    live: set[str] = set()
    for n, job_id in enumerate(job_ids):
        status, scheduled, deferred = replies[3 + 3 * n : 6 + 3 * n]
        where = {
            "queued": job_id in queued,
            "started": job_id in started,
            "scheduled": scheduled is not None,
            "deferred": deferred is not None,
        }
        if where.get(_text(status), False):
            live.add(job_id)
    return live


def _text(value: object) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value if isinstance(value, str) else ""
