"""docs/operations.md's runbook has a row for every check doctor runs."""

from __future__ import annotations

import re
from pathlib import Path

from profilesync.ops.doctor import CHECKS

PAGE = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


def test_every_doctor_check_has_a_runbook_row() -> None:
    runbook = PAGE.read_text().split("## Doctor failures", 1)[1]
    rows = set(re.findall(r"^\| `([a-z_]+)`", runbook, flags=re.MULTILINE))
    assert set(CHECKS) - rows == set(), "doctor checks missing from docs/operations.md, Doctor failures"
    assert rows - set(CHECKS) == set(), "rows in docs/operations.md, Doctor failures, for checks doctor lacks"
