"""Reconnect delays: exponential, jittered, and forgotten after a healthy period. Pure (time is passed in)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

HEALTHY_AFTER = 5.0  # seconds a session must last to count as a recovery, not a flap


@dataclass
class Backoff:
    """Delay before the next attempt: `first`, doubling up to `maximum`, each drawn from [d/2, d] so that
    processes that lost the same server do not come back in lockstep.

    A session that lasted `healthy_after` seconds starts the sequence over: a short blip after a long healthy
    run waits `first`, not the ceiling an outage hours ago reached.
    """

    first: float
    maximum: float
    healthy_after: float = HEALTHY_AFTER
    rng: random.Random = field(default_factory=random.Random)
    attempts: int = 0

    def next_delay(self, session_lasted: float) -> float:
        """The delay after a session (or connection attempt) that failed after `session_lasted` seconds."""
        if session_lasted >= self.healthy_after:
            self.attempts = 0
        ceiling = min(self.maximum, self.first * 2.0**self.attempts)
        self.attempts = min(self.attempts + 1, 62)
        return self.rng.uniform(ceiling / 2, ceiling)
