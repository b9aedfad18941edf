"""Pure logic: turn claimed outbox rows into job plans; decide when the publisher lingers."""

from __future__ import annotations

import math
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

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
    """A NOTIFY payload is a user id; anything else is logged and ignored (drains read the table anyway)."""
    try:
        uuid.UUID(payload)
    except ValueError:
        return False
    return True


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


# The linger: after a drain, poll the outbox instead of going back to NOTIFY. It pays only when signups come
# faster than one job per signup can follow (each NOTIFY wake-up sends its signup alone through RQ, several ms
# of a worker per job): measured on 2 cores, 100 signups/s keep up without it (and have a shorter tail: no job
# held back for batching) while 250/s fall seconds behind. It starts at LINGER_FROM signups/s, or at any rate
# when the workers are behind (a job was still waiting in the queue when the drain added its own: slower
# workers, a loaded box), and stops below LINGER_UNTIL (the gap keeps a rate near the threshold from
# flapping) or after LINGER_QUIET s without any, once the queue is empty.
LINGER_FROM = 160.0
LINGER_UNTIL = 120.0
LINGER_QUIET = 0.05
RATE_HORIZON = 0.2  # seconds: the arrival rate's memory (at 100/s, ~20 signups: its noise stays below 25%)


@dataclass
class ArrivalRate:
    """Signups per second, from events counted as drains find them, forgotten exponentially over `horizon`
    seconds. Times are the caller's monotonic clock."""

    horizon: float = RATE_HORIZON
    level: float = 0.0  # events seen, each weighted by exp(-age / horizon)
    at: float = 0.0

    def observe(self, now: float, events: int) -> float:
        """Count `events` found at `now`; returns the rate."""
        self.level = self.level * math.exp(-max(0.0, now - self.at) / self.horizon) + events
        self.at = now
        return self.level / self.horizon

    def per_second(self, now: float) -> float:
        return self.level * math.exp(-max(0.0, now - self.at) / self.horizon) / self.horizon


def start_lingering(rate: float, workers_behind: bool = False) -> bool:
    """After a drain that found events: poll instead of going back to NOTIFY."""
    return workers_behind or rate >= LINGER_FROM


def keep_lingering(rate: float, quiet_for: float) -> bool:
    """While lingering, with nothing pending: go on polling, or go back to NOTIFY."""
    return rate >= LINGER_UNTIL and quiet_for < LINGER_QUIET
