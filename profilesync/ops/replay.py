"""`profilesync replay`: requeue failed jobs (all, or by id) of PROFILESYNC_QUEUE once the cause is fixed.

The same as `rq requeue --queue profiles -S json …`, plus a clear answer for ids that are not failed jobs.
Replays are safe: profile creation is idempotent, and a job that fails again returns to the failed registry.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from rq import Queue
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.registry import FailedJobRegistry

from profilesync.logs import get_logger

log = get_logger(__name__)


@dataclass
class ReplayResult:
    requeued: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)  # asked for, but not in the failed registry
    expired: list[str] = field(default_factory=list)  # in the registry, but the job's data is gone


def replay(queue: Queue, job_ids: Sequence[str] | None = None) -> ReplayResult:
    """Requeue the given failed jobs, or every failed job when `job_ids` is None."""
    registry = FailedJobRegistry(queue=queue)
    failed = set(registry.get_job_ids())
    wanted = sorted(failed) if job_ids is None else list(dict.fromkeys(job_ids))
    result = ReplayResult()
    for job_id in wanted:
        if job_id not in failed:
            result.unknown.append(job_id)
            continue
        try:
            registry.requeue(job_id)
        except NoSuchJobError:
            registry.remove(job_id)
            result.expired.append(job_id)
        except InvalidJobOperation:  # requeued or cleaned up concurrently
            result.unknown.append(job_id)
        else:
            result.requeued.append(job_id)
    log.info(
        "failed jobs replayed",
        requeued=len(result.requeued),
        unknown=len(result.unknown),
        expired=len(result.expired),
    )
    return result


# Back to pending: the publisher enqueues them again on its next drain (woken by one NOTIFY).
_RESET_FAILED_EVENTS = """
WITH reset AS (
  UPDATE profile_sync.signup_events
  SET failed_at = NULL, last_error = NULL, enqueued_at = NULL, job_id = NULL
  WHERE failed_at IS NOT NULL
  RETURNING user_id
)
SELECT count(*) FROM reset
"""


def reset_failed_events(conn: psycopg.Connection[Any]) -> int:
    """Make every failed signup event pending again, for failures whose RQ job is gone (expired, Redis lost).

    Prefer requeueing the failed jobs: a reset event whose cause is not fixed fails again as a new job.
    """
    with conn.transaction():
        row = conn.execute(_RESET_FAILED_EVENTS).fetchone()
        assert row is not None
        reset = int(row[0])
        if reset:
            conn.execute("SELECT pg_notify('profile_sync_signup', '')")  # the wake-up carries nothing
    log.info("failed signup events reset", events=reset)
    return reset


def format_result(result: ReplayResult) -> str:
    lines = [f"requeued {len(result.requeued)} failed job(s)"]
    if result.expired:
        lines.append(
            f"dropped {len(result.expired)} failed job(s) whose data expired: {', '.join(result.expired)}"
        )
    if result.unknown:
        lines.append(
            f"not failed jobs of the profiles queue (see rq info -u $REDIS_URL): {', '.join(result.unknown)}"
        )
    return "\n".join(lines)
