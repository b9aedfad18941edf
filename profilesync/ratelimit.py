"""A log-line budget: the first event of a window passes, the rest are counted. Pure (time is passed in)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class RateLimit:
    """At most one pass per `interval` seconds; `take` says how many were suppressed since the last pass."""

    interval: float
    _next: float = float("-inf")
    _suppressed: int = 0

    def take(self, now: float) -> int | None:
        """None when this event is suppressed; else the number suppressed before it (log it, then 0 again)."""
        if now < self._next:
            self._suppressed += 1
            return None
        self._next = now + self.interval
        suppressed, self._suppressed = self._suppressed, 0
        return suppressed
