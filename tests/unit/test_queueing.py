from __future__ import annotations

import json
import uuid
import zlib

import fakeredis
from rq.job import Job
from rq.serializers import JSONSerializer

from profilesync.config import Settings
from profilesync.publisher.planning import plan_jobs
from profilesync.queueing import CREATE_PROFILES, enqueue_plans, profiles_queue


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
