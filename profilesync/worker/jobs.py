"""RQ jobs. `profilesync.worker.jobs.create_profiles` is enqueued by dotted path: keep the name."""

from __future__ import annotations

import time
import uuid

from rq import Queue, get_current_job
from rq.serializers import JSONSerializer

from profilesync import db, metrics
from profilesync.backoff import Backoff
from profilesync.config import Settings
from profilesync.errors import ProfileSyncError
from profilesync.logs import get_logger
from profilesync.queueing import CREATE_PROFILES, job_retry
from profilesync.worker import profiles, runtime
from profilesync.worker.ids import parse_user_ids

log = get_logger(__name__)

# A batch interrupted by the database (a lost connection, a failover, a deadlock) is tried again within the
# job, on a new connection, after these jittered delays: back within seconds of the database answering, and
# never later than a statement's bound before RQ's job timeout (then RQ's own retries take over).
RETRY_FIRST = 0.2
RETRY_MAX = 2.0


class PermanentJobError(ProfileSyncError):
    """Profile creation failed permanently (replay the job once the cause is fixed)."""


class UsersLockedError(ProfileSyncError):
    """Every user of the job waits on a lock another transaction holds: retried after a short delay."""


def create_profiles(user_ids: list[str]) -> dict[str, int]:
    """Bring a batch of users' profiles in step with auth.users (created at signup, updated after a change,
    scrubbed after a soft delete). Idempotent: replays and duplicates change nothing."""
    ids, invalid = parse_user_ids(user_ids)
    if len(invalid) == 1 and not ids:
        _fail_permanently(f"not a user id (UUID): {invalid[0]}")
    for value in invalid:
        _split_off([value])  # one clear failed job per bad value; the rest of the batch goes on

    settings = runtime.settings()
    outcome = _sync(ids, settings)
    if ids and not invalid and len(outcome.locked) == len(ids):  # no progress: retry later, not at once
        raise UsersLockedError(f"{len(ids)} user(s) locked by another transaction")
    metrics.PROFILES_CREATED.inc(outcome.created)
    for age in outcome.signup_ages:
        metrics.SIGNUP_TO_PROFILE.observe(age)
    if outcome.failed and len(ids) == 1:
        user_id, error = outcome.failed[0]
        profiles.mark_failed(runtime.connection(), user_id, error)
        _fail_permanently(f"user {user_id}: {error}")
    for user_id, _ in outcome.failed:
        _split_off([str(user_id)])
    if outcome.locked:  # one job of their own, retried after a short delay: the rest of the batch is done
        _split_off([str(user_id) for user_id in outcome.locked], settings)

    result = {
        "created": outcome.created,
        "existing": len(ids) - outcome.created - outcome.missing - len(outcome.failed) - len(outcome.locked),
        "updated": outcome.updated,
        "scrubbed": outcome.scrubbed,
        "missing": outcome.missing,
        "failed": len(outcome.failed) + len(invalid),
        "locked": len(outcome.locked),
    }
    log.info("profiles created", **result)
    return result


def _sync(ids: list[uuid.UUID], settings: Settings) -> profiles.Outcome:
    """profiles.create_profiles, tried again on a new connection while the database interrupts it."""
    deadline = time.monotonic() + settings.job_timeout - settings.statement_timeout
    backoff = Backoff(RETRY_FIRST, RETRY_MAX)
    while True:
        try:
            outcome = profiles.create_profiles(
                runtime.connection(),
                ids,
                settings.metadata_policy,
                timed=settings.metrics_port is not None,
                lock_timeout=settings.lock_timeout,
            )
        except Exception as exc:
            delay = backoff.next_delay(0.0)
            if not db.is_interruption(exc) or time.monotonic() + delay >= deadline:
                raise
            log.warning(
                "database interrupted the batch; trying again",
                error=metrics.one_line(exc),
                retry_in=round(delay, 3),
            )
            runtime.release()  # a broken connection is replaced by the next runtime.connection()
            time.sleep(delay)
        else:
            runtime.LIVENESS.reached(runtime.DATABASE)
            return outcome


def _fail_permanently(message: str) -> None:
    """Fail the current job now, without RQ's retries: retrying cannot fix bad input."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
    log.error("job failed permanently", error=message)
    raise PermanentJobError(message)


def _split_off(user_ids: list[str], settings: Settings | None = None) -> None:
    """Users out of this job into one of their own (with `settings`, retried on RQ's schedule)."""
    job = get_current_job()
    if job is None:
        log.error("cannot split off users outside an RQ job", users=user_ids)
        return
    queue = Queue(job.origin, connection=job.connection, serializer=JSONSerializer)
    split = queue.enqueue(
        CREATE_PROFILES,
        args=(user_ids,),
        failure_ttl=job.failure_ttl,
        result_ttl=job.result_ttl,
        timeout=job.timeout,
        retry=None if settings is None else job_retry(settings),
        description=f"create_profiles({len(user_ids)} user{'s' if len(user_ids) > 1 else ''})",
    )
    log.warning("user split off a failing batch", job_id=split.id)
