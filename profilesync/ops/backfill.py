"""`profilesync backfill`: give existing users without a profile one (and scrub soft-deleted users' profiles
that still hold personal data), and the verification report.

The backfill writes outbox rows (profile_sync.signup_events), set-based, in keyset-paginated chunks of
auth.users, and lets the running publisher and workers do the rest. That reuses the one durable path every
signup takes: nothing is lost if Redis or a process dies mid-way, the publisher batches `job_batch_size` users
per job, duplicates are harmless, and a chunk costs one INSERT … SELECT (tens of ms per 10,000 users).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from profilesync.catalog import SEED_TABLE, ProfileTable
from profilesync.logs import get_logger

log = get_logger(__name__)

SIGNUP_CHANNEL = (
    "profile_sync_signup"  # the publisher's wake-up channel (profilesync.publisher.service.CHANNEL)
)

# A user needs a backfill when it has no outbox row and its profile is out of step: a live user without a
# profile, or a soft-deleted user whose profile still holds personal data (the worker scrubs it). Failed rows
# are `profilesync replay`'s business: recording them again would only fail again.
# Composed for the profile table (profilesync.catalog.ProfileTable): {has_profile} is its EXISTS probe for the
# user, {personal} true when the profile row `p` holds a mapped value the soft-delete scrub clears.
# Two literal statements (not one with `OR $1 IS NULL`) so both can walk the primary key index.
_CHUNK = """
WITH batch AS (
  SELECT u.id, u.deleted_at FROM auth.users u
  {after}
  ORDER BY u.id
  LIMIT %(limit)s
), inserted AS (
  INSERT INTO profile_sync.signup_events (user_id)
  SELECT b.id FROM batch b
  WHERE {out_of_step}
  ORDER BY b.id
  RETURNING user_id
)
SELECT (SELECT b.id FROM batch b ORDER BY b.id DESC LIMIT 1),
       (SELECT count(*) FROM batch),
       (SELECT count(*) FROM inserted)
"""
_OUT_OF_STEP = """
  CASE WHEN b.deleted_at IS NULL
       THEN NOT {has_profile}
       ELSE EXISTS (SELECT 1 FROM {table} p WHERE p.{key} = b.id AND {personal})
  END
  AND NOT EXISTS (SELECT 1 FROM profile_sync.signup_events e WHERE e.user_id = b.id)"""
# The same two kinds of user, counted separately so the planner can use anti-joins over every user.
_CANDIDATES = """
SELECT (SELECT count(*) FROM auth.users b
        WHERE b.deleted_at IS NULL
          AND NOT {has_profile}
          AND NOT EXISTS (SELECT 1 FROM profile_sync.signup_events e WHERE e.user_id = b.id))
     + (SELECT count(*) FROM auth.users b JOIN {table} p ON p.{key} = b.id
        WHERE b.deleted_at IS NOT NULL
          AND {personal}
          AND NOT EXISTS (SELECT 1 FROM profile_sync.signup_events e WHERE e.user_id = b.id))
"""
_USERS = "SELECT count(*) FROM auth.users"
_PENDING_EVENTS = "SELECT count(*) FROM profile_sync.signup_events WHERE failed_at IS NULL"

_REPORT = """
SELECT
  (SELECT count(*) FROM auth.users u WHERE u.deleted_at IS NULL),
  (SELECT count(*) FROM {table}),
  (SELECT count(*) FROM auth.users u WHERE u.deleted_at IS NULL AND NOT {has_profile}),
  (SELECT count(*) FROM profile_sync.signup_events e WHERE e.failed_at IS NULL),
  (SELECT count(*) FROM profile_sync.signup_events e WHERE e.failed_at IS NOT NULL)
"""
_SAMPLE_MISSING = """
SELECT u.id FROM auth.users u
WHERE u.deleted_at IS NULL AND NOT {has_profile}
ORDER BY u.created_at, u.id
LIMIT %s
"""


def _compose(template: str, profile: ProfileTable, user_id: str, **parts: sql.Composable) -> sql.Composed:
    return sql.SQL(template).format(
        table=profile.name,
        key=sql.Identifier(profile.key),
        has_profile=profile.has_profile(sql.SQL(user_id)),
        personal=profile.holds_personal_data("p"),
        **parts,
    )


@dataclass(frozen=True)
class VerificationReport:
    """Where every live user stands."""

    users: int
    profiles: int
    users_without_profiles: int
    pending_events: int
    failed_events: int
    sample_without_profiles: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        """Every live user has its profile and nothing is left in the outbox."""
        return self.users_without_profiles == 0 and self.pending_events == 0 and self.failed_events == 0

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "complete": self.complete}


def verification_report(
    conn: psycopg.Connection[Any], sample: int = 10, profile: ProfileTable = SEED_TABLE
) -> VerificationReport:
    row = conn.execute(_compose(_REPORT, profile, "u.id")).fetchone()
    assert row is not None
    users, profiles, without, pending, failed = (int(value) for value in row)
    missing = _compose(_SAMPLE_MISSING, profile, "u.id")
    ids = [str(r[0]) for r in conn.execute(missing, (sample,))] if without and sample else []
    return VerificationReport(users, profiles, without, pending, failed, ids)


def format_report(report: VerificationReport) -> str:
    lines = [
        "verification report",
        f"  users (live)            {report.users:>10,}",
        f"  profiles                {report.profiles:>10,}",
        f"  users without profiles  {report.users_without_profiles:>10,}",
        f"  pending events          {report.pending_events:>10,}",
        f"  failed events           {report.failed_events:>10,}",
    ]
    if report.sample_without_profiles:
        shown = len(report.sample_without_profiles)
        lines.append(f"  first {shown} users without a profile:")
        lines.extend(f"    {user_id}" for user_id in report.sample_without_profiles)
    lines.append(f"  result: {'OK, every user has a profile' if report.complete else 'INCOMPLETE'}")
    return "\n".join(lines)


@dataclass(frozen=True)
class BackfillResult:
    scanned: int
    recorded: int
    chunks: int
    seconds: float


def count_candidates(conn: psycopg.Connection[Any], profile: ProfileTable = SEED_TABLE) -> int:
    """Users a backfill would record now (the dry run)."""
    row = conn.execute(_compose(_CANDIDATES, profile, "b.id")).fetchone()
    assert row is not None
    return int(row[0])


def count_users(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_USERS).fetchone()
    assert row is not None
    return int(row[0])


def record_missing(
    conn: psycopg.Connection[Any],
    *,
    chunk_size: int = 10_000,
    on_chunk: Callable[[int, int], None] | None = None,
    profile: ProfileTable = SEED_TABLE,
) -> BackfillResult:
    """Walk auth.users by id in chunks; record an outbox event for each user whose profile is out of step
    (missing, or a soft-deleted user's holding personal data).

    Each chunk is its own transaction (short locks, visible progress, a crash loses at most one chunk, which a
    re-run redoes) and wakes the publisher with one NOTIFY. `on_chunk(scanned, recorded)` reports totals.
    """
    out_of_step = _compose(_OUT_OF_STEP, profile, "b.id")
    first_chunk = _compose(_CHUNK, profile, "b.id", after=sql.SQL(""), out_of_step=out_of_step)
    next_chunk = _compose(
        _CHUNK, profile, "b.id", after=sql.SQL("WHERE u.id > %(after)s"), out_of_step=out_of_step
    )
    started = time.monotonic()
    after: uuid.UUID | None = None
    scanned = recorded = chunks = 0
    while True:
        with conn.transaction():
            if after is None:
                row = conn.execute(first_chunk, {"limit": chunk_size}).fetchone()
            else:
                row = conn.execute(next_chunk, {"after": after, "limit": chunk_size}).fetchone()
            assert row is not None
            last_id, in_chunk, inserted = row
            if inserted:
                conn.execute("SELECT pg_notify(%s, '')", (SIGNUP_CHANNEL,))  # the wake-up carries nothing
        if last_id is None:
            break
        after = last_id
        chunks += 1
        scanned += int(in_chunk)
        recorded += int(inserted)
        if on_chunk is not None:
            on_chunk(scanned, recorded)
        if in_chunk < chunk_size:
            break
    result = BackfillResult(scanned, recorded, chunks, time.monotonic() - started)
    log.info("backfill recorded", **asdict(result))
    return result


def pending_events(conn: psycopg.Connection[Any]) -> int:
    row = conn.execute(_PENDING_EVENTS).fetchone()
    assert row is not None
    return int(row[0])


def wait_until_drained(
    conn: psycopg.Connection[Any],
    *,
    timeout: float,
    interval: float = 0.5,
    on_progress: Callable[[int], None] | None = None,
) -> bool:
    """Poll (an operator command, not a hot path) until no event is pending; False on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        pending = pending_events(conn)
        if on_progress is not None:
            on_progress(pending)
        if pending == 0:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(interval)
