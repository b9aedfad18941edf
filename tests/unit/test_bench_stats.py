import pytest

from bench.schedule import open_loop_offsets, split
from bench.signups import GOTRUE_SIGNUP_NAMED_SCRIPT, GOTRUE_SIGNUP_SCRIPT
from bench.stats import rate, ratio, summary_ms
from bench.throughput import best


def test_summary_is_in_milliseconds() -> None:
    summary = summary_ms([0.001] * 99 + [0.1])
    assert summary == {"n": 100, "p50_ms": 1.0, "p99_ms": 1.99, "max_ms": 100.0}


def test_rate_and_ratio() -> None:
    assert rate(500, 2.0) == 250.0
    with pytest.raises(ValueError):
        rate(1, 0)
    assert ratio(75, 100) == 0.75
    assert ratio(1, 0) is None


def test_open_loop_senders_share_one_fixed_schedule() -> None:
    merged = sorted(t for i in range(3) for t in open_loop_offsets(250, 2, 3, i))
    assert len(merged) == 500
    assert merged == [slot / 250 for slot in range(500)]
    assert open_loop_offsets(250, 2, 3, 1)[:2] == [1 / 250, 4 / 250]


def test_open_loop_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError):
        open_loop_offsets(0, 1, 1, 0)
    with pytest.raises(ValueError):
        open_loop_offsets(10, 1, 2, 2)


def test_split_spreads_the_remainder() -> None:
    assert split(5000, 8) == [625] * 8
    assert split(10, 3) == [4, 3, 3]
    assert sum(split(7, 10)) == 7
    with pytest.raises(ValueError):
        split(1, 0)


def test_signup_cost_keeps_the_least_disturbed_round() -> None:
    rounds = [{"tps": 900.0, "backlog_at_end": 5}, {"tps": 1200.5, "backlog_at_end": 7}, {"tps": 1100.0}]
    assert best(rounds, "tps") == {"tps": 1200.5, "backlog_at_end": 7}


def test_the_named_signup_changes_what_the_profile_reads_and_only_that() -> None:
    assert "'{}', false" in GOTRUE_SIGNUP_NAMED_SCRIPT and "'picture'" in GOTRUE_SIGNUP_NAMED_SCRIPT
    assert GOTRUE_SIGNUP_NAMED_SCRIPT.count("\n") == GOTRUE_SIGNUP_SCRIPT.count("\n")
