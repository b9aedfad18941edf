"""Profiles against PostgreSQL: one set-based call per batch, bisected when a batch fails for good."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from profilesync.db import is_transient, raise_if_denied


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    scrubbed: int = 0
    missing: int = 0
    failed: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    signup_ages: list[float] = field(default_factory=list)  # seconds since signup of each profile created


# With timing: the same call, plus the signup ages of the users about to get a profile. One statement, so
# signup_ages reads the rows as they were before sync_profiles inserts profiles and deletes events.
_SYNC = (
    "SELECT created, updated, scrubbed, missing, NULL FROM profile_sync.sync_profiles(%(ids)s, %(policy)s)"
)
_SYNC_TIMED = """
SELECT r.created, r.updated, r.scrubbed, r.missing, a.ages
FROM profile_sync.signup_ages(%(ids)s) AS a(ages), profile_sync.sync_profiles(%(ids)s, %(policy)s) AS r
"""


def create_profiles(
    conn: psycopg.Connection[Any], user_ids: list[uuid.UUID], metadata_policy: str, *, timed: bool = False
) -> Outcome:
    """Bring the profiles of `user_ids` in step with auth.users: create missing ones, apply the metadata
    policy to existing ones, scrub soft-deleted users'. A user deleted from auth.users is missing, not failed.

    `timed` also returns each new profile's signup age (for the latency histogram), at a few index lookups
    per user.

    Transient errors propagate (the job is retried). A permanent error splits the batch in halves until the
    users that fail on their own are isolated, so every other user still gets a profile.
    """
    outcome = Outcome()
    _create(conn, user_ids, metadata_policy, outcome, _SYNC_TIMED if timed else _SYNC)
    return outcome


def _create(
    conn: psycopg.Connection[Any], user_ids: list[uuid.UUID], policy: str, outcome: Outcome, query: str
) -> None:
    if not user_ids:
        return
    try:
        with conn.transaction():
            # Prepared once per connection: every job runs the same statement.
            row = conn.execute(query, {"ids": user_ids, "policy": policy}, prepare=True).fetchone()
    except psycopg.Error as exc:
        # A missing grant is the deployment's fault, not these users': no bisecting, no failed marks.
        raise_if_denied(exc, "the worker runs as profilesync_worker or the migrations' owner")
        if is_transient(exc) or conn.broken:
            raise
        if len(user_ids) == 1:
            outcome.failed.append((user_ids[0], describe(exc)))
            return
        middle = len(user_ids) // 2
        _create(conn, user_ids[:middle], policy, outcome, query)
        _create(conn, user_ids[middle:], policy, outcome, query)
        return
    assert row is not None
    outcome.created += row[0]
    outcome.updated += row[1]
    outcome.scrubbed += row[2]
    outcome.missing += row[3]
    outcome.signup_ages.extend(row[4] or ())


def describe(exc: psycopg.Error) -> str:
    """The error's class and primary message, e.g. the violated constraint's name.

    Not str(exc): its DETAIL quotes the failing row (the user's email, name), which ends up in logs, in the
    failed RQ job and in signup_events.last_error.
    """
    primary = exc.diag.message_primary or str(exc).partition("\n")[0]
    return f"{type(exc).__name__}: {primary}"[:500]


def mark_failed(conn: psycopg.Connection[Any], user_id: uuid.UUID, error: str) -> None:
    """Record a permanent failure on the user's events so the publisher stops redelivering them."""
    with conn.transaction():
        conn.execute(
            "UPDATE profile_sync.signup_events SET failed_at = now(), last_error = %s WHERE user_id = %s",
            (error, user_id),
        )
