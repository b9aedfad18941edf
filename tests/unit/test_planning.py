from __future__ import annotations

import uuid

from profilesync.publisher.planning import flatten, group_claimed, plan_jobs, valid_payload


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


def test_the_wake_up_payload_is_empty_and_anything_else_is_malformed() -> None:
    assert valid_payload("")
    for bad in (str(uuid.uuid4()), "garbage", "1; DROP TABLE x", "{}", " ", "x" * 8000):
        assert not valid_payload(bad)


def test_group_claimed_makes_one_plan_per_job_with_distinct_users_in_first_seen_order() -> None:
    rows = [(1, "a", "j-0"), (2, "b", "j-1"), (3, "a", "j-0"), (4, "c", "j-0")]
    plans = group_claimed(rows)
    assert [(p.job_id, p.user_ids, p.event_ids) for p in plans] == [
        ("j-0", ["a", "c"], [1, 3, 4]),
        ("j-1", ["b"], [2]),
    ]
