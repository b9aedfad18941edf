from __future__ import annotations

import json
import uuid
import zlib

import fakeredis
from rq.job import Job
from rq.serializers import JSONSerializer

from profilesync.config import Settings
from profilesync.publisher.planning import plan_jobs
from profilesync.queueing import (
    CREATE_PROFILES,
    RETRY_FIRST,
    RETRY_MAX,
    enqueue_plans,
    job_retry,
    profiles_queue,
)


def test_jobs_are_enqueued_as_json_with_the_stable_function_path() -> None:
    connection = fakeredis.FakeRedis()
    queue = profiles_queue(connection)
    users = [str(uuid.uuid4()) for _ in range(3)]
    plans = plan_jobs(list(enumerate(users)), job_batch_size=2)
    enqueue_plans(queue, plans, Settings(job_retries=3))

    assert queue.name == "profiles"
    assert queue.count == 2
    raw = connection.hget(f"rq:job:{plans[0].job_id}", "data")
    assert raw is not None
    func, _instance, args, _kwargs = json.loads(zlib.decompress(raw))  # RQ compresses; JSON, not pickle
    assert func == CREATE_PROFILES == "profilesync.worker.jobs.create_profiles"
    assert args == [users[:2]]
    job = Job.fetch(plans[1].job_id, connection=connection, serializer=JSONSerializer)
    assert list(job.args) == [[users[2]]]
    assert job.retries_left == 3


def test_rq_retries_come_after_seconds_jittered_per_job() -> None:
    drawn = [job_retry(Settings(job_retries=5)) for _ in range(20)]
    for retry in drawn:
        assert retry is not None and retry.max == 5
        assert retry.intervals[0] == RETRY_FIRST
        assert all(RETRY_FIRST <= interval <= RETRY_MAX for interval in retry.intervals)
        assert all(isinstance(interval, int) for interval in retry.intervals)  # RQ's unit: whole seconds
    assert len({tuple(retry.intervals) for retry in drawn if retry is not None}) > 1  # not in lockstep
    assert job_retry(Settings(job_retries=0)) is None
