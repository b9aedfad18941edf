"""A short chaos soak (bench.chaos): the real processes through every kind of fault, a few seconds apart."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from bench.chaos import report, schedule
from bench.chaos.run import ChaosOptions, run

pytestmark = pytest.mark.faults

# 75 s of signups, a fault every 4 to 8 s: each of the seven kinds at least once (the schedule deals them from
# a shuffled deck), with durations scaled to the interval (locks of 0.4 to 1 s, floods of 2 to 6 s).
SHORT = ChaosOptions(minutes=1.25, seed=5, rate=10.0, interval=(4.0, 8.0))


def test_a_short_chaos_soak_passes_its_audit(tmp_path: Path) -> None:
    out = io.StringIO()
    results = run(SHORT, out)
    path = report.write(results, tmp_path)
    text = path.read_text()
    print(text)
    assert {fault["fault"] for fault in results["faults"]} == set(schedule.KINDS), out.getvalue()
    assert results["figures"]["signups_committed"] > 0.9 * SHORT.rate * SHORT.minutes * 60
    assert report.passed(results), f"{text}\n{out.getvalue()}"
