from __future__ import annotations

import uuid

from profilesync.worker.ids import parse_user_ids


def test_valid_ids_are_parsed_and_deduplicated_in_order() -> None:
    a, b = uuid.uuid4(), uuid.uuid4()
    valid, invalid = parse_user_ids([str(a), str(b), str(a).upper()])
    assert valid == [a, b]
    assert invalid == []


def test_invalid_values_are_reported_not_raised() -> None:
    a = uuid.uuid4()
    valid, invalid = parse_user_ids([str(a), "not-a-uuid", 42, None, "x" * 500])
    assert valid == [a]
    assert invalid[:3] == ["not-a-uuid", "42", "None"]
    assert len(invalid[3]) <= 80


def test_a_non_list_argument_is_one_invalid_value() -> None:
    assert parse_user_ids("abc") == ([], ["'abc'"])
