"""Pure logic: validate job arguments."""

from __future__ import annotations

import uuid


def parse_user_ids(values: object) -> tuple[list[uuid.UUID], list[str]]:
    """Split job arguments into valid, de-duplicated UUIDs and the rejected values (as short reprs)."""
    if not isinstance(values, list):
        return [], [repr(values)[:80]]
    valid: dict[uuid.UUID, None] = {}
    invalid: list[str] = []
    for value in values:
        try:
            if not isinstance(value, str):
                raise TypeError
            valid[uuid.UUID(value)] = None
        except (TypeError, ValueError):
            invalid.append(value if isinstance(value, str) and len(value) <= 80 else repr(value)[:80])
    return list(valid), invalid
