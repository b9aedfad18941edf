"""The worker's RQ bookkeeping (profilesync.worker.bookkeeping.FewerRoundTrips) on a real Redis: fewer round
trips per job, and what `rq info` reads still written."""

from __future__ import annotations

import signal
from datetime import timedelta

import redis
from redis.client import Pipeline
from rq import Queue, Worker
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from bench.counting import counting_redis
from profilesync.worker.bookkeeping import FewerRoundTrips
from profilesync.worker.main import ProfileSyncWorker, PromptExit

JOBS = 30


class Plain(PromptExit, SimpleWorker):
    """RQ's own bookkeeping (PromptExit only spares the burst's exit a 60 s wait: no Redis traffic)."""


class Bookkept(FewerRoundTrips, PromptExit, SimpleWorker):
    """ProfileSyncWorker's RQ bookkeeping without its allow-list, so that database-free jobs may run."""


def _trips_per_job(worker_class: type[SimpleWorker], redis_url: str) -> tuple[float, SimpleWorker]:
    client, trips = counting_redis(redis_url)
    queue = Queue("profiles", connection=client, serializer=JSONSerializer)
    for _ in range(JOBS):
        queue.enqueue("time.time")  # a job without a database: only RQ's own traffic is counted
    worker = worker_class([queue], connection=client, serializer=JSONSerializer)
    trips.count = 0
    worker.work(burst=True, logging_level="WARNING")
    return trips.count / JOBS, worker


def test_the_worker_spends_about_half_the_round_trips_per_job_of_rqs_own(redis_url: str) -> None:
    plain, _ = _trips_per_job(Plain, redis_url)
    ours, worker = _trips_per_job(Bookkept, redis_url)
    assert plain >= 18  # RQ 3's SimpleWorker: about 20
    assert ours <= 9, (ours, plain)
    client = redis.Redis.from_url(redis_url)
    info = client.hgetall(worker.key)
    assert info[b"successful_job_count"] == str(JOBS).encode()
    assert info[b"state"] == b"idle"
    assert b"last_heartbeat" in info


def test_a_jobs_outcome_carries_its_last_heartbeat_and_the_workers_idle_state(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = Queue("profiles", connection=client, serializer=JSONSerializer)
    ok = queue.enqueue("time.time")
    bad = queue.enqueue("builtins.int", args=("not a number",))
    worker = Bookkept([queue], connection=client, serializer=JSONSerializer)
    worker.work(burst=True, logging_level="WARNING")
    for job, status in ((ok, "finished"), (bad, "failed")):
        job.refresh()
        assert job.get_status() == status
        assert job.ended_at is not None and job.last_heartbeat is not None
        assert job.started_at is not None and job.started_at <= job.last_heartbeat
        assert abs((job.last_heartbeat - job.ended_at).total_seconds()) < 1
    assert bad.id in queue.failed_job_registry.get_job_ids()
    assert not queue.started_job_registry.get_job_ids()
    info = client.hgetall(worker.key)
    assert (info[b"state"], info[b"successful_job_count"], info[b"failed_job_count"]) == (b"idle", b"1", b"1")


class SignalledAtTheOutcome(Bookkept):
    """A SIGTERM that arrives once the job's outcome is queued in its pipeline, before that is sent."""

    def increment_total_working_time(self, job_execution_time: timedelta, pipeline: Pipeline) -> None:
        super().increment_total_working_time(job_execution_time, pipeline)
        self.request_stop(signal.SIGTERM, None)


def test_a_sigterm_while_the_outcome_is_written_lets_the_job_finish(redis_url: str) -> None:
    """The worker is busy until RQ sets it idle: stopped then, RQ raised StopRequested inside the outcome's
    write and the job ended as failed although its work was done."""
    client = redis.Redis.from_url(redis_url)
    queue = Queue("profiles", connection=client, serializer=JSONSerializer)
    job = queue.enqueue("time.time")
    later = queue.enqueue("time.time")
    worker = SignalledAtTheOutcome([queue], connection=client, serializer=JSONSerializer)
    worker.work(burst=True, logging_level="WARNING")
    job.refresh()
    assert job.get_status() == "finished"
    assert not queue.failed_job_registry.get_job_ids()
    assert later.id in queue.get_job_ids()  # the stop came before the next job
    assert client.hget(worker.key, "state") in (b"idle", None)


def test_a_jobs_preparation_never_shortens_the_worker_keys_expiry(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    queue = Queue("profiles", connection=client, serializer=JSONSerializer)
    worker = Bookkept([queue], connection=client, serializer=JSONSerializer)
    worker.register_birth()
    worker.heartbeat()  # between jobs: worker_ttl + 60
    with client.pipeline() as pipe:  # as RQ prepares a job: the job's heartbeat TTL, shorter
        worker.heartbeat(worker.worker_ttl // 2, pipeline=pipe)
        pipe.execute()
    assert client.ttl(worker.key) > worker.worker_ttl
    worker.register_death()


def test_a_running_worker_stays_visible_between_jobs(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    worker = ProfileSyncWorker(
        [Queue("profiles", connection=client, serializer=JSONSerializer)], connection=client
    )
    worker.register_birth()
    worker.heartbeat()
    worker.heartbeat()  # within the slack: skipped, the key keeps its TTL
    assert client.ttl(worker.key) > worker.worker_ttl
    assert [w.name for w in Worker.all(connection=client)] == [worker.name]
    worker.register_death()
