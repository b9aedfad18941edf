"""Duplicates, concurrency and hostile input, through the real processes: one profile each, nothing lost."""

from __future__ import annotations

import json
import time
from typing import Any

from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from profilesync.config import Settings
from profilesync.queueing import CREATE_PROFILES, JobPlan, enqueue_plans, profiles_queue
from tests.faults.cluster import Target
from tests.faults.figures import Row, finish, settle
from tests.harness import PENDING, PROFILES_OF, bulk_signup, signup, wait_for


def test_events_and_jobs_three_times_over_four_workers_give_one_profile_each(target: Target) -> None:
    users = 2000
    bulk_signup(target.conn, users)
    # Each signup's event twice more (a replayed trigger), and each user in three more jobs with different
    # batch boundaries (replays), so the four workers race on the same users.
    target.conn.execute(
        "INSERT INTO profile_sync.signup_events (user_id) SELECT id FROM auth.users, generate_series(1, 2)"
    )
    ids = [str(row[0]) for row in target.conn.execute("SELECT id FROM auth.users ORDER BY random()")]
    plans = [
        JobPlan(job_id=f"replay-{size}-{start}", user_ids=ids[start : start + size], event_ids=[])
        for size in (100, 150, 250)
        for start in range(0, users, size)
    ]
    queue = profiles_queue(target.redis)
    enqueue_plans(queue, plans, Settings(database_url=target.database_url, redis_url=target.redis_url))
    started_at = time.monotonic()
    target.procs.start("publisher", "publisher")
    for n in range(1, 5):
        target.procs.start(f"worker-{n}", "worker")
    state, recovery = settle(target, since=started_at, bound=60)
    assert state.profiles == users
    faults = "events x3, 3 replayed jobs per user, 4 workers"
    final = finish(
        target, Row("duplicate events and jobs, concurrent workers", users, faults, state, recovery)
    )
    # Three replays per user ran (plus the publisher's jobs: it merges duplicates only within one drain) and
    # changed nothing: at least two redundant runs per user, still one insert each.
    assert final.redundant >= 2 * users
    assert final.profiles == users


HOSTILE_META: list[Any] = [
    {"name": "x" * 1_000_000},  # a megabyte
    {"full_name": 123, "name": ["list"], "user_name": {"o": 1}, "avatar_url": 42, "picture": True},
    {"full_name": None, "name": False, "avatar_url": {"url": "https://x.test"}},
    {"name": "ctl\u0001\u0007\u001b[31mred\u007f\u0085 \t\r\n"},
    {"name": "😀🎉 emoji 👩‍👩‍👧 \U0010ffff"},
    {"name": "\u202eevil\u202c \u2066iso\u2069 مرحبا שלום \u200f"},
    {"avatar_url": "javascript:alert(1)", "picture": "https://ok.test/a.png\u0008"},  # jsonb refuses NUL
    ["metadata", "as", "an", "array"],
    "metadata as a string",
    12345,
]
BAD_JOB_ARGS: list[Any] = [
    ["not-a-uuid"],
    ["\u0000\u0001"],  # NUL: PostgreSQL cannot even store it, so it only arrives through Redis
    [42],
    [None],
    "not a list",
    [{"id": 1}],
    ["x" * 10_000],
]
UNSAFE_PROFILES = (
    "SELECT count(*) FROM public.user_profiles WHERE length(full_name) > 200 "
    "OR full_name ~ '[[:cntrl:]\u200e\u200f\u202a-\u202e\u2066-\u2069]' OR avatar_url !~ '^https?://'"
)
BAD_NOTIFY_PAYLOADS = [
    "not empty; DROP TABLE auth.users",
    "00000000-0000-0000-0000-000000000000",
    "{}",
    "y" * 7999,
]


def test_deleted_users_hostile_metadata_and_malformed_payloads_are_logged_not_fatal(target: Target) -> None:
    procs = target.procs
    procs.start("publisher", "publisher")
    assert wait_for(target.publisher_idle)
    good = [signup(target.conn, kind) for kind in ("email", "phone", "anonymous", "google", "github", "sso")]
    hostile = [signup(target.conn, "email", user_meta=meta) for meta in HOSTILE_META]
    doomed = [signup(target.conn) for _ in range(50)]
    assert wait_for(lambda: target.count(PENDING) == 0)  # their jobs are queued; no worker runs yet
    target.conn.execute("DELETE FROM auth.users WHERE id = ANY(%s)", (doomed,))

    assert wait_for(target.publisher_idle)
    for payload in BAD_NOTIFY_PAYLOADS:
        target.conn.execute("SELECT pg_notify('profile_sync_signup', %s)", (payload,))
    queue = profiles_queue(target.redis)
    for args in BAD_JOB_ARGS:
        queue.enqueue(CREATE_PROFILES, args=(args,))
    queue.enqueue(CREATE_PROFILES, args=(["bogus", str(good[0])],))  # one bad id beside a good one
    target.redis.lpush(queue.key, "no-such-job")  # a queue entry whose job is gone
    corrupt = queue.enqueue(CREATE_PROFILES, args=([str(good[1])],))
    target.redis.hset(corrupt.key, "data", b"\xff not json")  # a job whose payload cannot be decoded
    started_at = time.monotonic()
    procs.start("worker-1", "worker")

    state, recovery = settle(target, since=started_at, bound=30)
    failed = FailedJobRegistry(queue=queue, serializer=JSONSerializer)
    assert wait_for(lambda: failed.count == len(BAD_JOB_ARGS) + 2)  # each bad value once, the corrupt job
    assert state.profiles == len(good) + len(hostile)
    assert target.count(PROFILES_OF, (doomed,)) == 0
    assert target.count(UNSAFE_PROFILES) == 0
    publisher_log, worker_log = procs.log("publisher"), procs.log("worker-1")
    assert wait_for(
        lambda: procs.log("publisher").count("ignoring malformed NOTIFY payload") == 1
    )  # rate-limited
    assert worker_log.count("job failed permanently") == len(BAD_JOB_ARGS) + 1
    assert "not a user id (UUID)" in worker_log
    assert _missing(worker_log) == len(doomed)  # deleted users are done, not failed
    assert "Traceback" not in publisher_log
    assert "worker stopped unexpectedly" not in worker_log  # RQ handled every bad job inside its loop
    faults = "50 deleted, 10 hostile meta, 4 bad NOTIFY, 10 bad jobs"
    signups = len(good) + len(hostile) + len(doomed)
    finish(target, Row("deleted users, hostile metadata, bad payloads", signups, faults, state, recovery))


def _missing(worker_log: str) -> int:
    """Users the worker found deleted, summed over its "profiles created" log lines."""
    lines = (json.loads(line) for line in worker_log.splitlines() if line.startswith("{"))
    return sum(int(entry["missing"]) for entry in lines if entry["event"] == "profiles created")
