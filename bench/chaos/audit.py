"""The soak's verdict: what the database says every user got, read once at the end (`gather`), and the pure
checks and figures made of it (`checks`, `figures`).

Duplicated inserts are counted by the audit triggers of profilesync.devkit.faults (every row inserted into
the profile table, in a keyless table); a wait is a profile's `created_at` minus its user's (database clock,
the same host's as the bench's own), or until now for a user still without one.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import psycopg

from bench.chaos.load import Attempt
from bench.chaos.schedule import KILL, POSTGRES_RESTART, Ran
from bench.stats import summary_ms
from profilesync.devkit.faults import DUPLICATED, LOST, OUTBOX, REDUNDANT, UNSCRUBBED, WORKER_KILL_BOUND
from profilesync.devkit.stats import percentile

# A signup this long after a fault ended still counts as during it (the faulted servers settle).
GRACE = 3.0
# Every user is profiled within RECOVERY s of its signup, or of the end of the last fault that hit it (the
# database answering again, the lock released, the server back), whichever is later. A worker killed in the
# middle of a job is the exception RQ makes: that job runs again once its started-registry entry expires
# (profilesync.devkit.faults.WORKER_KILL_BOUND).
RECOVERY = 30.0

_WAITS = """
SELECT extract(epoch FROM u.created_at)::float8,
       extract(epoch FROM coalesce(p.created_at, now()) - u.created_at)::float8
FROM auth.users u LEFT JOIN public.user_profiles p ON p.id = u.id
WHERE u.deleted_at IS NULL
ORDER BY u.created_at
"""


@dataclass(frozen=True)
class Facts:
    users: int  # live users
    soft_deleted: int
    profiles: int
    lost: int  # live users without a profile
    duplicated: int
    redundant: int
    unscrubbed: int
    outbox: int
    waits: list[tuple[float, float]]  # (signup time, seconds to its profile or until now) per live user


def _count(conn: psycopg.Connection[Any], query: str) -> int:
    row = conn.execute(query.encode()).fetchone()
    return int(row[0]) if row else 0


def gather(conn: psycopg.Connection[Any]) -> Facts:
    return Facts(
        users=_count(conn, "SELECT count(*) FROM auth.users WHERE deleted_at IS NULL"),
        soft_deleted=_count(conn, "SELECT count(*) FROM auth.users WHERE deleted_at IS NOT NULL"),
        profiles=_count(conn, "SELECT count(*) FROM public.user_profiles"),
        lost=_count(conn, LOST),
        duplicated=_count(conn, DUPLICATED),
        redundant=_count(conn, REDUNDANT),
        unscrubbed=_count(conn, UNSCRUBBED),
        outbox=_count(conn, OUTBOX),
        waits=[(float(at), float(wait)) for at, wait in conn.execute(_WAITS)],
    )


@dataclass(frozen=True)
class Check:
    name: str
    measured: str
    expected: str
    ok: bool


def during(at: float, ran: Sequence[Ran], kinds: tuple[str, ...] | None = None) -> bool:
    """Whether wall-clock time `at` falls in a fault (of one of `kinds`) or within GRACE after it."""
    return any(r.started <= at <= r.ended + GRACE for r in ran if kinds is None or r.planned.kind in kinds)


def refused(attempts: Sequence[Attempt], ran: Sequence[Ran]) -> list[Attempt]:
    """Signups that failed while PostgreSQL was up: nothing of ours may ever make a signup fail."""
    return [a for a in attempts if a.error and not during(a.started, ran, (POSTGRES_RESTART,))]


def due(signed_up: float, ran: Sequence[Ran]) -> float:
    """When the user who signed up at `signed_up` must have its profile (wall clock): RECOVERY s after the
    signup, or after the end of each fault that began before then and had not ended at the signup."""
    deadline = signed_up + RECOVERY
    for r in ran:  # in time order, so a fault that began within an extended deadline extends it again
        if r.ended >= signed_up and r.started <= deadline:
            killed_worker = r.planned.kind == KILL and r.planned.params.get("process") != "publisher"
            deadline = max(deadline, r.ended + (WORKER_KILL_BOUND if killed_worker else RECOVERY))
    return deadline


def late(waits: Sequence[tuple[float, float]], ran: Sequence[Ran]) -> list[tuple[float, float]]:
    """The users (signup time, wait) profiled after they were due, or still waiting past it."""
    return [(at, wait) for at, wait in waits if at + wait > due(at, ran)]


def checks(
    facts: Facts, attempts: Sequence[Attempt], ran: Sequence[Ran], stop_codes: dict[str, int | None]
) -> list[Check]:
    longest = max((wait for _, wait in facts.waits), default=0.0)
    overdue = late(facts.waits, ran)
    unclean = {name: code for name, code in sorted(stop_codes.items()) if code != 0}
    bad_signups = refused(attempts, ran)
    kinds = Counter(a.error for a in bad_signups)
    refused_detail = ", ".join(f"{name} x{n}" for name, n in sorted(kinds.items()) if name)
    return [
        Check("live users without a profile", str(facts.lost), "0", facts.lost == 0),
        Check("profiles inserted twice", str(facts.duplicated), "0", facts.duplicated == 0),
        Check("soft-deleted profiles holding data", str(facts.unscrubbed), "0", facts.unscrubbed == 0),
        Check("signup events left in the outbox", str(facts.outbox), "0", facts.outbox == 0),
        Check(
            "signups refused while PostgreSQL was up",
            f"{len(bad_signups)} {refused_detail}".strip(),
            "0",
            not bad_signups,
        ),
        Check(
            f"users profiled later than {RECOVERY:.0f} s after the faults that hit them¹",
            f"{len(overdue)} (longest wait {longest:.1f} s)",
            "0",
            not overdue,
        ),
        Check(
            "processes not exiting 0 on SIGTERM (20 s)",
            ", ".join(f"{name} {'killed' if code is None else code}" for name, code in unclean.items())
            or "0",
            "0",
            not unclean,
        ),
    ]


def _latency(attempts: Sequence[Attempt]) -> dict[str, float]:
    seconds = [a.seconds for a in attempts if a.error is None]
    return summary_ms(seconds) if seconds else {"n": 0}


def worst_wait_after(ran: Sequence[Ran], waits: Sequence[tuple[float, float]]) -> list[float | None]:
    """For each fault, the longest wait of the users who signed up from its start to the next fault's."""
    out: list[float | None] = []
    for n, r in enumerate(ran):
        until = ran[n + 1].started if n + 1 < len(ran) else float("inf")
        window = [wait for at, wait in waits if r.started <= at < until]
        out.append(round(max(window), 2) if window else None)
    return out


def figures(facts: Facts, attempts: Sequence[Attempt], ran: Sequence[Ran]) -> dict[str, Any]:
    """What the run measured, beyond the checks."""
    committed = [a for a in attempts if a.error is None]
    waits = [wait for _, wait in facts.waits]
    faulted = [a for a in committed if during(a.started, ran)]
    calm = [a for a in committed if not during(a.started, ran)]
    errors = Counter(a.error for a in attempts if a.error)
    return {
        "signups_attempted": len(attempts),
        "signups_committed": len(committed),
        "signup_errors": dict(sorted(errors.items())),
        "users": facts.users,
        "soft_deleted": facts.soft_deleted,
        "profiles": facts.profiles,
        "redundant_runs": facts.redundant,
        "signup_latency_calm": _latency(calm),
        "signup_latency_during_faults": _latency(faulted),
        "wait_s": {
            "p50": round(percentile(waits, 50), 3) if waits else None,
            "p99": round(percentile(waits, 99), 3) if waits else None,
            "max": round(max(waits), 3) if waits else None,
        },
        "worst_wait_after_fault_s": worst_wait_after(ran, facts.waits),
    }
