"""docs/configuration.md lists every setting under the name of its environment variable."""

from __future__ import annotations

import re
from pathlib import Path

from profilesync.config import Settings, env_name

PAGE = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_every_setting_has_a_row() -> None:
    rows = set(re.findall(r"^\| `([A-Z_]+)` \|", PAGE.read_text(), flags=re.MULTILINE))
    variables = {env_name(field) for field in Settings.model_fields}
    assert variables - rows == set(), "settings missing from docs/configuration.md"
    assert rows - variables == set(), "rows in docs/configuration.md for settings that do not exist"
