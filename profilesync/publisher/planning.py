"""Pure logic: turn claimed outbox rows into job plans."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence

from profilesync.queueing import JobPlan


def plan_jobs(events: Iterable[tuple[int, object]], job_batch_size: int) -> list[JobPlan]:
    """Group events into jobs of at most `job_batch_size` distinct users, keeping first-seen order.

    Duplicate events for one user land in the same job, so each user is in exactly one job of a drain.
    """
    by_user: dict[str, list[int]] = {}
    for event_id, user_id in events:
        by_user.setdefault(str(user_id), []).append(event_id)
    users = list(by_user)
    plans = []
    for start in range(0, len(users), job_batch_size):
        chunk = users[start : start + job_batch_size]
        plans.append(
            JobPlan(
                job_id=f"profiles-{uuid.uuid4()}",
                user_ids=chunk,
                event_ids=[event_id for user in chunk for event_id in by_user[user]],
            )
        )
    return plans


def valid_payload(payload: str) -> bool:
    """The signup wake-up carries nothing (the channel is readable by any session, so no user id): an empty
    payload. Anything else is logged and ignored (drains read the table anyway)."""
    return payload == ""


def flatten(plans: Sequence[JobPlan]) -> tuple[list[int], list[str]]:
    """Parallel arrays (event id, job id) for one UPDATE … FROM unnest()."""
    event_ids: list[int] = []
    job_ids: list[str] = []
    for plan in plans:
        event_ids.extend(plan.event_ids)
        job_ids.extend([plan.job_id] * len(plan.event_ids))
    return event_ids, job_ids


def group_claimed(rows: Iterable[tuple[int, object, str]]) -> list[JobPlan]:
    """Job plans from claimed rows (event id, user id, job id), in order of each job's first row."""
    plans: dict[str, tuple[dict[str, None], list[int]]] = {}
    for event_id, user_id, job_id in rows:
        users, events = plans.setdefault(job_id, ({}, []))
        users[str(user_id)] = None
        events.append(event_id)
    return [JobPlan(job_id, list(users), events) for job_id, (users, events) in plans.items()]
