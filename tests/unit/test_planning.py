from __future__ import annotations

import uuid

from profilesync.publisher.planning import (
    LINGER_FROM,
    LINGER_QUIET,
    LINGER_UNTIL,
    RATE_HORIZON,
    ArrivalRate,
    flatten,
    group_claimed,
    keep_lingering,
    plan_jobs,
    start_lingering,
    valid_payload,
)


def test_plan_jobs_chunks_distinct_users_and_keeps_every_event() -> None:
    users = [uuid.uuid4() for _ in range(5)]
    events = [(i, users[i % 5]) for i in range(15)]  # each user three times
    plans = plan_jobs(events, job_batch_size=2)
    assert [len(p.user_ids) for p in plans] == [2, 2, 1]
    assert [u for p in plans for u in p.user_ids] == [str(u) for u in users]
    assert sorted(e for p in plans for e in p.event_ids) == list(range(15))
    for plan in plans:  # a user's duplicate events travel with that user's job
        assert {str(events[e][1]) for e in plan.event_ids} == set(plan.user_ids)
    assert len({p.job_id for p in plans}) == 3


def test_plan_jobs_of_nothing_is_nothing() -> None:
    assert plan_jobs([], 10) == []


def test_flatten_pairs_each_event_with_its_job() -> None:
    plans = plan_jobs([(1, "a"), (2, "b"), (3, "a")], job_batch_size=1)
    event_ids, job_ids = flatten(plans)
    assert dict(zip(event_ids, job_ids, strict=True)) == {
        1: plans[0].job_id,
        3: plans[0].job_id,
        2: plans[1].job_id,
    }


def test_notify_payload_must_be_a_uuid() -> None:
    assert valid_payload(str(uuid.uuid4()))
    for bad in ("", "garbage", "1; DROP TABLE x", "{}", "x" * 8000):
        assert not valid_payload(bad)


def test_group_claimed_makes_one_plan_per_job_with_distinct_users_in_first_seen_order() -> None:
    rows = [(1, "a", "j-0"), (2, "b", "j-1"), (3, "a", "j-0"), (4, "c", "j-0")]
    plans = group_claimed(rows)
    assert [(p.job_id, p.user_ids, p.event_ids) for p in plans] == [
        ("j-0", ["a", "c"], [1, 3, 4]),
        ("j-1", ["b"], [2]),
    ]


def _steady_rate(per_second: float, seconds: float, poll: float = 0.001) -> tuple[ArrivalRate, float]:
    """An ArrivalRate fed `per_second` evenly spread signups for `seconds`, found by polls every `poll` s."""
    rate, now, due = ArrivalRate(), 0.0, 0.0
    while now < seconds:
        now += poll
        found = 0
        while due <= now:
            found, due = found + 1, due + 1 / per_second
        rate.observe(now, found)
    return rate, now


def test_the_arrival_rate_follows_a_steady_stream_and_forgets_a_stopped_one() -> None:
    for per_second in (100.0, 250.0, 2000.0):
        rate, now = _steady_rate(per_second, 3.0)
        assert abs(rate.per_second(now) - per_second) <= 0.1 * per_second, per_second
        assert rate.per_second(now + 10 * RATE_HORIZON) < 0.001 * per_second
    rate, now = _steady_rate(5.0, 3.0)  # fewer than one signup per horizon: rough, far below the linger
    assert 1.0 < rate.per_second(now) < 10.0


def test_the_linger_pays_at_250_signups_per_second_not_at_100() -> None:
    slow, slow_now = _steady_rate(100.0, 3.0)
    fast, fast_now = _steady_rate(250.0, 3.0)
    assert not start_lingering(slow.observe(slow_now, 1))
    assert start_lingering(fast.observe(fast_now, 1))
    assert keep_lingering(fast.per_second(fast_now), quiet_for=0.0)
    assert not keep_lingering(fast.per_second(fast_now), quiet_for=LINGER_QUIET)  # nothing for a while


def test_a_rate_between_the_thresholds_keeps_the_current_mode() -> None:
    between = (LINGER_FROM + LINGER_UNTIL) / 2
    assert not start_lingering(between)  # not lingering yet: stay NOTIFY-driven
    assert keep_lingering(between, quiet_for=0.0)  # lingering already: no flapping
    assert not keep_lingering(LINGER_UNTIL - 1, quiet_for=0.0)


def test_a_burst_found_by_one_drain_starts_the_linger() -> None:
    assert start_lingering(ArrivalRate().observe(1.0, 1000))
    assert not start_lingering(ArrivalRate().observe(1.0, 1))


def test_workers_behind_start_the_linger_at_any_rate() -> None:
    assert start_lingering(5.0, workers_behind=True)  # a job still waits: the next one may as well grow
    assert not start_lingering(5.0, workers_behind=False)
