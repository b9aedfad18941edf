"""`profilesync failed`: what failed and why, without knowing RQ's internals.

Failed jobs come from the queue's FailedJobRegistry (job id, its users, the exception's last line, when it
first and last failed); permanently failed signup events from the outbox (their job may have expired).
Redis content is data anyone with access to Redis may have written: a job RQ cannot parse, or whose arguments
are not a list of user ids, is listed as unreadable (one line) and the listing goes on; the table escapes
terminal control characters in every field (JSON escapes them itself).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

import psycopg
import redis
from rq import Queue
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result

from profilesync.explain import first_line
from profilesync.ops.printable import printable


@dataclass(frozen=True)
class FailedJob:
    job_id: str
    user_ids: list[str]
    reason: str
    first_failed_at: datetime | None
    last_failed_at: datetime | None
    failures: int
    unreadable: bool = False  # `reason` then says what could not be read


@dataclass(frozen=True)
class FailedEvent:
    event_id: int
    user_id: str
    job_id: str | None
    failed_at: datetime


_FAILED_EVENTS = """
SELECT id, user_id::text, job_id, failed_at FROM profile_sync.signup_events
WHERE failed_at IS NOT NULL
ORDER BY failed_at, id
LIMIT %s
"""


def failed_jobs(queue: Queue, limit: int) -> list[FailedJob]:
    """The queue's failed jobs, oldest first; a job that expired meanwhile is left out."""
    ids = FailedJobRegistry(queue=queue).get_job_ids(0, limit - 1)
    with queue.connection.pipeline() as pipeline:  # one round trip, as Job.fetch_many
        for job_id in ids:
            pipeline.hgetall(Job.key_for(job_id))
        hashes = pipeline.execute()
    return [_read(job_id, data, queue) for job_id, data in zip(ids, hashes, strict=True) if data]


def _read(job_id: str, data: dict[bytes, bytes], queue: Queue) -> FailedJob:
    try:
        job = Job(job_id, connection=queue.connection, serializer=queue.serializer)
        job.restore(data)
        return _describe(job)
    except redis.RedisError:
        raise  # Redis itself failing is not this job's problem
    except Exception as exc:  # whatever RQ fails to parse of a hash anyone could have written
        return FailedJob(
            job_id, [], f"unreadable job ({type(exc).__name__}: {first_line(exc)})", None, None, 0, True
        )


def _describe(job: Job) -> FailedJob:
    failures = [r for r in job.results() if r.type == Result.Type.FAILED]
    times = sorted(r.created_at for r in failures)
    latest = max(failures, key=lambda r: r.created_at, default=None)
    exc_string = (latest.exc_string if latest is not None else None) or job.exc_info or ""
    args = job.args
    if not (isinstance(args, list | tuple) and len(args) == 1 and isinstance(args[0], list)):
        raise ValueError(f"arguments are not one list of user ids: {str(args)[:80]}")
    return FailedJob(
        job_id=job.id,
        user_ids=[str(u) for u in args[0]],
        reason=primary_line(exc_string),
        first_failed_at=times[0] if times else job.ended_at,
        last_failed_at=times[-1] if times else job.ended_at,
        failures=len(failures),
    )


def primary_line(exc_string: str) -> str:
    """A traceback's last line ("module.Error: message"), without the exception's module path."""
    lines = [line.strip() for line in exc_string.strip().splitlines() if line.strip()]
    if not lines:
        return "unknown (no exception recorded)"
    name, sep, message = lines[-1].partition(": ")
    return f"{name.rsplit('.', 1)[-1]}{sep}{message}"


def failed_events(conn: psycopg.Connection[Any], limit: int) -> list[FailedEvent]:
    rows = conn.execute(_FAILED_EVENTS, (limit,)).fetchall()
    return [FailedEvent(int(r[0]), r[1], r[2], r[3]) for r in rows]


def _when(value: datetime | None) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def format_table(jobs: list[FailedJob], events: list[FailedEvent]) -> str:
    lines = [f"{len(jobs)} failed job(s)"]
    for job in jobs:
        if job.unreadable:
            lines.append(f"  {printable(job.job_id)}  {printable(job.reason)}")
            continue
        more = len(job.user_ids) - 3
        users = ", ".join(printable(u) for u in job.user_ids[:3]) + (f" (+{more})" if more > 0 else "")
        when = f"first {_when(job.first_failed_at)}  last {_when(job.last_failed_at)}"
        lines.append(f"  {printable(job.job_id)}  {when}  x{job.failures}  users {users}")
        lines.append(f"    {printable(job.reason)}")
    lines.append(f"{len(events)} failed signup event(s)")
    lines.extend(
        f"  event {e.event_id}  user {e.user_id}  failed {_when(e.failed_at)}  "
        f"job {printable(e.job_id or '-')}"
        for e in events
    )
    if jobs or events:
        lines.append("once the cause is fixed: profilesync replay JOB_ID… | --all (jobs), replay --events")
    return "\n".join(lines)


def format_json(jobs: list[FailedJob], events: list[FailedEvent]) -> str:
    return json.dumps(
        {"jobs": [asdict(j) for j in jobs], "events": [asdict(e) for e in events]}, indent=2, default=str
    )
