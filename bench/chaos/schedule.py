"""Which fault runs when: a pure function of the seed, printed before the soak starts.

Faults come from a shuffled deck (every kind once before any twice), one every `interval` seconds (drawn
uniformly). How long a fault lasts scales with the shortest interval (`low`): a lock 0.1 to 0.25 x low, a
flood or a flapping database 0.5 to 1.5 x low (10 to 30 s in the 20 to 40 s soak: RQ's retry delays 2, 5,
15 s run out after 22 s; a flood needs time, as a server accepts connections only as fast as it starts a
thread for each). Faults never overlap: a long one delays the next.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

KILL = "kill_process"
POSTGRES_RESTART = "postgres_restart"
REDIS_RESTART = "redis_restart"
TERMINATE = "terminate_backends"
LOCK = "lock_table"
SOFT_DELETE_RACE = "soft_delete_race"
FLOOD = "healthz_flood"
KINDS = (KILL, POSTGRES_RESTART, REDIS_RESTART, TERMINATE, LOCK, SOFT_DELETE_RACE, FLOOD)

LOCKED_TABLES = ("profile_sync.signup_events", "public.user_profiles")  # the outbox, the profile table
RACING_USERS = 60  # users soft-deleted right after their signup, per race
RACE_DELAY_MS = (5, 40)  # the soft delete commits this long after the signup
Param = str | int | float


@dataclass(frozen=True)
class Planned:
    at: float  # seconds from the start of the load
    kind: str
    params: dict[str, Param] = field(default_factory=dict)

    def describe(self) -> str:
        """`kind key=value …`, as printed and reported."""
        return " ".join([self.kind, *(f"{k}={v}" for k, v in self.params.items())])


def params(
    kind: str, rng: random.Random, processes: tuple[str, ...], low: float, flood: int
) -> dict[str, Param]:
    """What the fault acts on and for how long (scaled by the shortest interval `low`)."""
    if kind == KILL:
        return {"process": rng.choice(processes)}
    if kind == TERMINATE:  # once a second, like a failover that flaps
        return {"seconds": max(1, round(rng.uniform(0.5, 1.5) * low))}
    if kind == LOCK:
        return {"table": rng.choice(LOCKED_TABLES), "seconds": round(rng.uniform(0.1, 0.25) * low, 1)}
    if kind == SOFT_DELETE_RACE:
        return {"users": RACING_USERS, "seed": rng.randrange(2**31)}
    if kind == FLOOD:
        hold = round(rng.uniform(0.5, 1.5) * low, 1)
        return {"process": rng.choice(processes), "connections": flood, "seconds": hold}
    return {}


def plan(
    seed: int,
    duration: float,
    interval: tuple[float, float],
    processes: tuple[str, ...],
    flood: int,
    kinds: tuple[str, ...] = KINDS,
) -> list[Planned]:
    """The faults of a soak of `duration` seconds, the first one `interval` after the start."""
    low, high = interval
    if not 0 < low <= high:
        raise ValueError(f"interval must be 0 < low <= high, not {interval}")
    if not kinds or not processes:
        raise ValueError("need at least one fault kind and one process")
    rng = random.Random(seed)
    deck: list[str] = []
    planned = []
    at = rng.uniform(low, high)
    while at < duration:
        if not deck:
            deck = list(kinds)
            rng.shuffle(deck)
        kind = deck.pop()
        planned.append(Planned(round(at, 1), kind, params(kind, rng, processes, low, flood)))
        at += rng.uniform(low, high)
    return planned


@dataclass(frozen=True)
class Ran:
    """A fault as it happened: from `started` to `ended` (wall clock, s), what it did or why it could not."""

    planned: Planned
    started: float
    ended: float
    note: str
