"""What each fault scenario measured, checked in SQL, and the table printed at the end of the run."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

from profilesync.devkit.faults import DUPLICATED, LOST, OUTBOX, REDUNDANT
from profilesync.queueing import profiles_queue
from tests.faults.cluster import Target
from tests.harness import wait_for


@dataclass(frozen=True)
class State:
    profiles: int
    lost: int
    duplicated: int
    redundant: int
    outbox: int

    @property
    def settled(self) -> bool:
        """Every live user has a profile and every signup event was retired."""
        return self.lost == 0 and self.outbox == 0


def state(target: Target) -> State:
    return State(
        profiles=target.count("SELECT count(*) FROM public.user_profiles"),
        lost=target.count(LOST),
        duplicated=target.count(DUPLICATED),
        redundant=target.count(REDUNDANT),
        outbox=target.count(OUTBOX),
    )


@dataclass(frozen=True)
class Row:
    scenario: str
    signups: int
    faults: str
    state: State
    recovery_s: float


ROWS: list[Row] = []

HEADER = (
    "scenario",
    "signups",
    "faults injected",
    "profiles",
    "lost",
    "duplicated",
    "redundant runs",
    "recovery s",
)


def table(rows: list[Row]) -> str:
    """A markdown table, one line per scenario."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join(["---", "---:", "---"] + ["---:"] * 5) + "|"]
    for r in rows:
        cells = (
            r.scenario,
            f"{r.signups:,}",
            r.faults,
            f"{r.state.profiles:,}",
            str(r.state.lost),
            str(r.state.duplicated),
            f"{r.state.redundant:,}",
            f"{r.recovery_s:.1f}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def settle(target: Target, since: float, bound: float) -> tuple[State, float]:
    """Wait (at most `bound` s) until every user has a profile and the outbox is empty; s since `since`."""
    settled = wait_for(lambda: state(target).settled, timeout=bound, interval=0.1)
    elapsed = time.monotonic() - since
    now = state(target)
    assert settled, f"not recovered within {bound}s: {now}\n{target.procs.logs()[-3000:]}"
    return now, elapsed


def quiet(target: Target) -> bool:
    """No job queued, running or waiting for a retry: every delivery, redundant or not, has run."""
    queue = profiles_queue(target.redis)
    registries = (queue.started_job_registry, queue.scheduled_job_registry)
    return queue.count == 0 and all(registry.count == 0 for registry in registries)


def finish(target: Target, row: Row) -> State:
    """Record the row, measured once every job ran; the children must all still be alive (no crash) and
    stop cleanly on SIGTERM. Returns the final state."""
    assert wait_for(lambda: quiet(target), timeout=30), "jobs still queued or running"
    final = state(target)
    assert final.settled, final
    assert target.procs.dead() == {}, target.procs.logs()[-3000:]
    codes = target.procs.stop()
    assert set(codes.values()) == {0}, (codes, target.procs.logs()[-3000:])
    assert final.lost == 0 and final.duplicated == 0, final
    ROWS.append(replace(row, state=final))
    return final
