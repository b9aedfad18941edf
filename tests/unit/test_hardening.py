"""Pure parts of the hardening: reconnect backoff, the log-line budget, Redis job states, settings bounds."""

from __future__ import annotations

import random
from datetime import timedelta

import fakeredis
import pytest
from pydantic import ValidationError
from rq import Callback, Retry
from rq.job import Job
from rq.serializers import JSONSerializer

from profilesync.backoff import Backoff
from profilesync.config import Settings
from profilesync.publisher.jobstate import live_jobs, requeue_scheduled
from profilesync.queueing import CREATE_PROFILES, LEGACY_CREATE_PROFILES, profiles_queue
from profilesync.ratelimit import RateLimit
from profilesync.worker.jobs import create_profiles
from profilesync.worker.main import AllowListedJob, ForbiddenJobError, ProfileSyncWorker


def test_backoff_doubles_with_jitter_up_to_the_cap() -> None:
    backoff = Backoff(0.5, 10.0, rng=random.Random(1))
    delays = [backoff.next_delay(0.0) for _ in range(8)]
    for delay, ceiling in zip(delays, [0.5, 1, 2, 4, 8, 10, 10, 10], strict=True):
        assert ceiling / 2 <= delay <= ceiling
    assert len(set(delays)) == len(delays)  # jittered: two processes do not retry in lockstep


def test_backoff_starts_over_after_a_healthy_session_but_not_after_a_flap() -> None:
    backoff = Backoff(0.5, 30.0, healthy_after=5.0, rng=random.Random(2))
    for _ in range(6):
        backoff.next_delay(0.1)  # an outage: the ceiling reaches 16 s
    assert backoff.next_delay(4.9) >= 15  # a session of 4.9 s was a flap: keep backing off
    assert backoff.next_delay(5.0) <= 0.5  # a blip after a healthy run waits the first delay again


def test_rate_limit_passes_one_per_interval_and_counts_the_rest() -> None:
    limit = RateLimit(10.0)
    assert limit.take(100.0) == 0
    assert [limit.take(100.0 + i / 10_000) for i in range(1, 20_000)] == [None] * 19_999
    assert limit.take(110.0) == 19_999
    assert limit.take(110.5) is None
    assert limit.take(120.0) == 1


def test_settings_keep_statements_below_the_job_timeout() -> None:
    base = {"database_url": "postgresql://x@h/db"}
    assert Settings(**base).statement_timeout < Settings(**base).job_timeout
    with pytest.raises(ValidationError, match="STATEMENT_TIMEOUT"):
        Settings(**base, statement_timeout=60, job_timeout=60)
    with pytest.raises(ValidationError, match="LOCK_TIMEOUT"):
        Settings(**base, lock_timeout=20, statement_timeout=10)


def test_a_job_is_live_only_where_its_status_puts_it() -> None:
    redis_conn = fakeredis.FakeRedis()
    queue = profiles_queue(redis_conn)
    queued = queue.enqueue(CREATE_PROFILES, args=(["a"],))
    unlisted = queue.enqueue(CREATE_PROFILES, args=(["b"],))
    redis_conn.lrem(queue.key, 0, unlisted.id)  # DEL rq:queue:profiles, for one job
    bogus = queue.enqueue(CREATE_PROFILES, args=(["c"],))
    redis_conn.hset(bogus.key, "status", "no such status \xff")
    started = queue.enqueue(CREATE_PROFILES, args=(["d"],))
    redis_conn.hset(started.key, "status", "started")  # but in no started registry: its worker is gone
    finished = queue.enqueue(CREATE_PROFILES, args=(["e"],))
    redis_conn.hset(finished.key, "status", "finished")
    waiting = queue.enqueue_in(timedelta(seconds=5), CREATE_PROFILES, args=(["f"],))  # an RQ retry
    ids = [queued.id, unlisted.id, bogus.id, started.id, finished.id, waiting.id, "never-existed"]
    assert live_jobs(redis_conn, queue, ids) == {queued.id}  # a retry waits for RQ's scheduler: not live
    assert live_jobs(redis_conn, queue, []) == set()


def test_jobs_waiting_for_a_retry_are_requeued_by_the_publisher_not_rqs_scheduler() -> None:
    redis_conn = fakeredis.FakeRedis()
    queue = profiles_queue(redis_conn)
    # a retry some worker's clock put an hour away; a garbled one; one of another queue; one not scheduled
    waiting = queue.enqueue_in(timedelta(hours=1), CREATE_PROFILES, args=(["a"],))
    garbled = queue.enqueue_in(timedelta(seconds=5), CREATE_PROFILES, args=(["b"],))
    redis_conn.hset(garbled.key, "data", b"\xff not compressed JSON")
    redis_conn.hset(garbled.key, "created_at", "not a date")
    foreign = queue.enqueue_in(timedelta(seconds=5), CREATE_PROFILES, args=(["c"],))
    redis_conn.hset(foreign.key, "origin", "someone-elses-queue")
    queued = queue.enqueue(CREATE_PROFILES, args=(["d"],))
    ids = [waiting.id, garbled.id, foreign.id, queued.id, "never-existed"]

    assert requeue_scheduled(queue, ids) == {waiting.id}
    assert queue.job_ids == [queued.id, waiting.id]  # runs now, without a scheduler
    assert live_jobs(redis_conn, queue, ids) == {waiting.id, queued.id}
    registry = queue.scheduled_job_registry
    assert set(registry.get_job_ids()) == {garbled.id, foreign.id}  # left alone: redelivered as new jobs
    assert requeue_scheduled(queue, ids) == set()  # taken once


def test_the_worker_runs_only_allow_listed_functions_and_no_callbacks() -> None:
    redis_conn = fakeredis.FakeRedis()
    queue = profiles_queue(redis_conn)
    allowed = queue.enqueue(CREATE_PROFILES, args=([],), on_success=Callback("os.abort"))
    legacy = queue.enqueue(LEGACY_CREATE_PROFILES, args=([],))  # queued by the previous release
    for job in (allowed, legacy, queue.enqueue("os.system", args=("true",), retry=Retry(max=3))):
        job = AllowListedJob.fetch(job.id, connection=redis_conn, serializer=JSONSerializer)
        assert job.success_callback is None and job.failure_callback is None and job.stopped_callback is None
        if job.func_name in (CREATE_PROFILES, LEGACY_CREATE_PROFILES):
            assert job.func is create_profiles
        else:
            with pytest.raises(ForbiddenJobError, match=r"os\.system"):
                job.func  # noqa: B018
            assert job.retries_left == 0
    worker = ProfileSyncWorker([queue], connection=redis_conn, serializer=JSONSerializer, job_class=Job)
    assert worker.job_class is AllowListedJob  # whatever a command line asks for
