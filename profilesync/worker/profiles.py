"""Profiles against PostgreSQL: one set-based call per batch, bisected when a batch fails for good or waits on
a lock another transaction holds."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import psycopg

from profilesync.db import is_lock_timeout, is_transient, raise_if_denied


@dataclass
class Outcome:
    created: int = 0
    updated: int = 0
    scrubbed: int = 0
    missing: int = 0
    failed: list[tuple[uuid.UUID, str]] = field(default_factory=list)
    locked: list[uuid.UUID] = field(default_factory=list)  # still waiting on another transaction's lock
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


# A batch that gave up on a lock is split in halves, each tried with a short lock wait (a probe), until the
# users whose rows another transaction holds are isolated: the others get their profiles at once.
PROBE_LOCK_TIMEOUT = 0.25  # seconds a probe waits for a lock (capped by the session's lock_timeout)
LOCK_PROBES = 16  # failed probes per batch at most: two locked users among 250 are isolated; a table lock
# (every probe fails) costs 16 short waits, then the users not yet probed are retried with the locked ones


def create_profiles(
    conn: psycopg.Connection[Any],
    user_ids: list[uuid.UUID],
    metadata_policy: str,
    *,
    timed: bool = False,
    lock_timeout: float = PROBE_LOCK_TIMEOUT,  # the session's: a probe never waits longer
) -> Outcome:
    """Bring the profiles of `user_ids` in step with auth.users: create missing ones, apply the metadata
    policy to existing ones, scrub soft-deleted users'. A user deleted from auth.users is missing, not failed.

    `timed` also returns each new profile's signup age (for the latency histogram), at a few index lookups
    per user.

    Transient errors propagate (the job is retried). A permanent error splits the batch in halves until the
    users that fail on their own are isolated, so every other user still gets a profile. A lock timeout splits
    it too, with probes that wait at most PROBE_LOCK_TIMEOUT (and `lock_timeout`): the users still waiting on
    a lock come back in `locked`, for a retry of their own.
    """
    outcome = Outcome()
    probe_ms = max(1, round(1000 * min(PROBE_LOCK_TIMEOUT, lock_timeout)))
    _Batch(conn, metadata_policy, _SYNC_TIMED if timed else _SYNC, outcome, probe_ms).create(user_ids)
    return outcome


@dataclass
class _Batch:
    conn: psycopg.Connection[Any]
    policy: str
    query: str
    outcome: Outcome
    probe_ms: int
    probes_left: int = LOCK_PROBES

    def create(self, user_ids: list[uuid.UUID], *, probe: bool = False) -> None:
        if not user_ids:
            return
        if probe and self.probes_left <= 0:  # the probes are spent: retried with the locked users
            self.outcome.locked.extend(user_ids)
            return
        params = {"ids": user_ids, "policy": self.policy}  # the statement is prepared once per connection
        try:
            if probe:  # its short lock wait is SET LOCAL: a transaction of its own
                with self.conn.transaction():
                    self.conn.execute(f"SET LOCAL lock_timeout = {self.probe_ms}")
                    row = self.conn.execute(self.query, params, prepare=True).fetchone()
            else:
                # One statement, atomic alone on the autocommit connection: one round trip, no BEGIN/COMMIT.
                row = self.conn.execute(self.query, params, prepare=True).fetchone()
        except psycopg.Error as exc:
            # A missing grant is the deployment's fault, not these users': no bisecting, no failed marks.
            raise_if_denied(exc, "the worker runs as profilesync_worker or the migrations' owner")
            if is_lock_timeout(exc) and not self.conn.broken:
                self._isolate_locked(user_ids, probe)
                return
            if is_transient(exc) or self.conn.broken:
                raise
            if len(user_ids) == 1:
                self.outcome.failed.append((user_ids[0], describe(exc)))
                return
            self._halves(user_ids, probe)
            return
        assert row is not None
        self.outcome.created += row[0]
        self.outcome.updated += row[1]
        self.outcome.scrubbed += row[2]
        self.outcome.missing += row[3]
        self.outcome.signup_ages.extend(row[4] or ())

    def _isolate_locked(self, user_ids: list[uuid.UUID], probe: bool) -> None:
        """`user_ids` gave up waiting for a lock together: probe their halves, or, for a single user or once
        the probes are spent, report them locked."""
        if probe:
            self.probes_left -= 1
        if len(user_ids) == 1 or self.probes_left <= 0:
            self.outcome.locked.extend(user_ids)
            return
        self._halves(user_ids, probe=True)

    def _halves(self, user_ids: list[uuid.UUID], probe: bool) -> None:
        middle = len(user_ids) // 2
        self.create(user_ids[:middle], probe=probe)
        self.create(user_ids[middle:], probe=probe)


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
