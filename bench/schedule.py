"""Pure load shapes: open-loop send times and how a burst is split between clients."""

from __future__ import annotations


def open_loop_offsets(rate: float, duration: float, senders: int, index: int) -> list[float]:
    """Send times (seconds from start) for sender `index` of `senders` sharing a fixed total `rate`.

    The global schedule is one signup every 1/rate seconds; sender i takes every senders-th slot starting at
    slot i, so together they keep the rate whatever each signup's latency (open loop: no waiting on replies).
    """
    if rate <= 0 or duration <= 0 or senders <= 0:
        raise ValueError("rate, duration and senders must be positive")
    if not 0 <= index < senders:
        raise ValueError(f"sender index {index} out of range for {senders} senders")
    total = int(rate * duration)
    return [slot / rate for slot in range(index, total, senders)]


def split(total: int, parts: int) -> list[int]:
    """`total` items over `parts` clients, as evenly as possible (earlier clients take the remainder)."""
    if parts <= 0 or total < 0:
        raise ValueError("parts must be positive and total non-negative")
    base, extra = divmod(total, parts)
    return [base + (1 if i < extra else 0) for i in range(parts)]
