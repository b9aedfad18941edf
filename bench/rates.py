"""publisher: events/s, and worker: profiles/s, in this process so Redis round trips can be counted.

The publisher drains a pre-filled outbox once (its `drain`); then one SimpleWorker runs in burst mode over
the jobs it enqueued (job_batch_size users per job), and over one job per user for the naive comparison.
"""

from __future__ import annotations

import time
from typing import Any

import psycopg
from rq.serializers import JSONSerializer
from rq.worker import SimpleWorker

from bench.counting import counting_redis, redis_commands
from bench.servers import Servers
from bench.stats import rate
from profilesync import db
from profilesync.config import Settings
from profilesync.publisher.service import Publisher
from profilesync.queueing import JobPlan, enqueue_plans, profiles_queue
from profilesync.worker import runtime

_FILL = """
INSERT INTO auth.users (id, aud, role, email, raw_user_meta_data, created_at)
SELECT gen_random_uuid(), 'authenticated', 'authenticated', 'fill' || g || '@bench.example',
       '{"full_name": "Bench User"}', now()
FROM generate_series(1, %s) g
"""


def _fill(url: str, users: int) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(_FILL, (users,))
        conn.execute("VACUUM ANALYZE auth.users, profile_sync.signup_events")


def _profiles(url: str) -> int:
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute("SELECT count(*) FROM public.user_profiles").fetchone()
    return int(row[0]) if row else 0


def _work_burst(settings: Settings, users: int) -> dict[str, float]:
    redis_conn, trips = counting_redis(settings.redis_url)
    runtime.configure(settings)
    worker = SimpleWorker([profiles_queue(redis_conn)], connection=redis_conn, serializer=JSONSerializer)
    commands_before = redis_commands(settings.redis_url)
    started = time.perf_counter()
    try:
        worker.work(burst=True, logging_level="WARNING")
    finally:
        elapsed = time.perf_counter() - started
        runtime.close()
        redis_conn.close()
    commands = redis_commands(settings.redis_url) - commands_before - 1
    made = _profiles(settings.database_url)
    if made != users:
        raise RuntimeError(f"worker made {made} profiles for {users} users")
    return {
        "users": users,
        "seconds": round(elapsed, 3),
        "profiles_per_s": rate(users, elapsed),
        "redis_round_trips_per_profile": round(trips.count / users, 3),
        "redis_commands_per_profile": round(commands / users, 3),
    }


def measure(servers: Servers, users: int, naive_users: int) -> dict[str, Any]:
    url = servers.database("publisher_worker")
    settings = Settings(database_url=url, redis_url=servers.redis_db(), log_level="WARNING")
    _fill(url, users)
    redis_conn, trips = counting_redis(settings.redis_url)
    publisher = Publisher(settings)
    with db.connect(url, autocommit=True) as work:
        started = time.perf_counter()
        drained = publisher.drain(work, redis_conn)
        elapsed = time.perf_counter() - started
    redis_conn.close()
    drain_figures = {
        "events": drained,
        "seconds": round(elapsed, 3),
        "events_per_s": rate(drained, elapsed),
        "drain_batch_size": settings.drain_batch_size,
        "job_batch_size": settings.job_batch_size,
        "redis_round_trips": trips.count,
    }
    batched = _work_burst(settings, users)

    naive_url = servers.database("worker_naive")
    naive = Settings(database_url=naive_url, redis_url=servers.redis_db(), log_level="WARNING")
    _fill(naive_url, naive_users)
    with psycopg.connect(naive_url, autocommit=True) as conn:
        ids = [str(r[0]) for r in conn.execute("SELECT user_id FROM profile_sync.signup_events")]
    with counting_redis(naive.redis_url)[0] as client:
        plans = [JobPlan(f"naive-{i}", [user_id], []) for i, user_id in enumerate(ids)]
        for start in range(0, len(plans), 500):
            enqueue_plans(profiles_queue(client), plans[start : start + 500], naive)
    one_per_user = _work_burst(naive, naive_users)
    return {"publisher": drain_figures, "worker": {"batched": batched, "one_job_per_user": one_per_user}}
