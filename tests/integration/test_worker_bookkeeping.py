"""The worker's RQ bookkeeping (profilesync.worker.bookkeeping.FewerRoundTrips) on a real Redis: fewer round
trips per job, and what `rq info` reads still written."""

from __future__ import annotations

import redis
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
    assert ours <= 12, (ours, plain)
    client = redis.Redis.from_url(redis_url)
    info = client.hgetall(worker.key)
    assert info[b"successful_job_count"] == str(JOBS).encode()
    assert info[b"state"] == b"idle"
    assert b"last_heartbeat" in info


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
