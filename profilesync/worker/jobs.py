"""RQ jobs. `profilesync.worker.jobs.create_profiles` is enqueued by dotted path: keep the name."""

from __future__ import annotations

from rq import Queue, get_current_job
from rq.serializers import JSONSerializer

from profilesync import metrics
from profilesync.errors import ProfileSyncError
from profilesync.logs import get_logger
from profilesync.queueing import CREATE_PROFILES
from profilesync.worker import profiles, runtime
from profilesync.worker.ids import parse_user_ids

log = get_logger(__name__)


class PermanentJobError(ProfileSyncError):
    """Profile creation failed permanently (replay the job once the cause is fixed)."""


def create_profiles(user_ids: list[str]) -> dict[str, int]:
    """Bring a batch of users' profiles in step with auth.users (created at signup, updated after a change,
    scrubbed after a soft delete). Idempotent: replays and duplicates change nothing."""
    ids, invalid = parse_user_ids(user_ids)
    if len(invalid) == 1 and not ids:
        _fail_permanently(f"not a user id (UUID): {invalid[0]}")
    for value in invalid:
        _split_off([value])  # one clear failed job per bad value; the rest of the batch goes on

    conn = runtime.connection()
    settings = runtime.settings()
    outcome = profiles.create_profiles(
        conn, ids, settings.metadata_policy, timed=settings.metrics_port is not None
    )
    metrics.PROFILES_CREATED.inc(outcome.created)
    for age in outcome.signup_ages:
        metrics.SIGNUP_TO_PROFILE.observe(age)
    if outcome.failed and len(ids) == 1:
        user_id, error = outcome.failed[0]
        profiles.mark_failed(conn, user_id, error)
        _fail_permanently(f"user {user_id}: {error}")
    for user_id, _ in outcome.failed:
        _split_off([str(user_id)])

    result = {
        "created": outcome.created,
        "existing": len(ids) - outcome.created - outcome.missing - len(outcome.failed),
        "updated": outcome.updated,
        "scrubbed": outcome.scrubbed,
        "missing": outcome.missing,
        "failed": len(outcome.failed) + len(invalid),
    }
    log.info("profiles created", **result)
    return result


def _fail_permanently(message: str) -> None:
    """Fail the current job now, without RQ's retries: retrying cannot fix bad input."""
    job = get_current_job()
    if job is not None:
        job.retries_left = 0
    log.error("job failed permanently", error=message)
    raise PermanentJobError(message)


def _split_off(user_ids: list[str]) -> None:
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
        description="create_profiles(1 user)",
    )
    log.warning("user split off a failing batch", job_id=split.id)
