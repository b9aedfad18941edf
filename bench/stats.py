"""Pure statistics for the benchmark: latency summaries, rates, ratios (percentiles from the devkit)."""

from __future__ import annotations

from collections.abc import Sequence

from profilesync.devkit.stats import percentile


def summary_ms(seconds: Sequence[float]) -> dict[str, float]:
    """p50 / p99 / max in milliseconds, rounded to 0.01 ms, and the sample count."""
    return {
        "n": len(seconds),
        "p50_ms": round(percentile(seconds, 50) * 1000, 2),
        "p99_ms": round(percentile(seconds, 99) * 1000, 2),
        "max_ms": round(max(seconds) * 1000, 2),
    }


def rate(count: int, seconds: float) -> float:
    """Events per second, rounded to 0.1."""
    if seconds <= 0:
        raise ValueError(f"rate over a non-positive duration: {seconds}")
    return round(count / seconds, 1)


def ratio(value: float, reference: float) -> float | None:
    """value / reference rounded to 0.01; None when the reference is zero (no meaningful ratio)."""
    if reference == 0:
        return None
    return round(value / reference, 2)
