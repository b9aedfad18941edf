"""The stage breakdown of our pipeline (`latency`, scenario `ours`): where the time from a signup's commit to
its profile goes.

The publisher and the worker run as the production classes with timestamps added at the step boundaries
(wall clock, same machine as the signup senders) and their Redis requests counted; each writes its trace to a
JSON file when it stops. Per signup:

  commit → wake        the signup's INSERT returned → the publisher woke (NOTIFY, or the linger poll) for the
                       drain that claimed it
  wake → claimed       the claim-and-mark statement returned
  claimed → in Redis   its job is in the queue
  in Redis → committed the claim transaction committed (the worker may already run the job meanwhile)
  in Redis → dequeued  a worker popped the job and read its hash
  dequeued → started   RQ's bookkeeping before the job runs
  started → profile    the job function ran: the profile is committed
  bookkeeping after    RQ's bookkeeping after the job (not on this signup's path; it delays the next job)
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any

import psycopg
import redis
from rq import Queue
from rq.job import Job

from bench.counting import Counter, count_process_round_trips
from profilesync.config import Settings
from profilesync.devkit.stats import percentile
from profilesync.publisher.service import Publisher
from profilesync.queueing import JobPlan
from profilesync.worker import runtime
from profilesync.worker.main import _make_worker

STAGES = (
    ("commit_to_wake", "commit", "wake"),
    ("wake_to_claimed", "wake", "claimed"),
    ("claimed_to_in_redis", "claimed", "in_redis"),
    ("in_redis_to_committed", "in_redis", "committed"),
    ("in_redis_to_dequeued", "in_redis", "dequeued"),
    ("dequeued_to_started", "dequeued", "started"),
    ("started_to_profile", "started", "done"),
    ("bookkeeping_after", "done", "finished"),
    ("commit_to_profile", "commit", "done"),
)


class TracedPublisher(Publisher):
    """Our publisher, recording per job when it woke, claimed, had the job in Redis and committed."""

    def __init__(self, settings: Settings, stop: threading.Event, trips: Counter) -> None:
        super().__init__(settings, stop, on_wake=self._record_wake)
        self.trips = trips
        self.records: list[dict[str, Any]] = []
        self._pending: list[dict[str, Any]] = []
        self._woke: float | None = None
        self._wake = 0.0

    def _record_wake(self) -> None:
        self._woke = time.time()

    def drain(self, work: psycopg.Connection[Any], redis_conn: redis.Redis, *, full: bool = False) -> int:
        self._wake = self._woke or time.time()
        self._woke = None
        found = super().drain(work, redis_conn, full=full)
        committed = time.time()
        for record in self._pending:
            record.setdefault("committed", committed)
            record["publisher_trips"] = self.trips.count
        self.records += self._pending
        self._pending = []
        return found

    def dispatch(self, work: psycopg.Connection[Any], queue: Queue, plans: list[JobPlan]) -> None:
        claimed = time.time()
        super().dispatch(work, queue, plans)
        in_redis = time.time()
        times = {"wake": self._wake, "claimed": claimed, "in_redis": in_redis}
        self._pending += [{"job_id": p.job_id, "users": p.user_ids, **times} for p in plans]


class TracedWorkerMixin:
    """Mixed in before our worker class: per job, when it was dequeued, started, done and finished."""

    trips: Counter
    records: list[dict[str, Any]]
    _current: dict[str, Any]

    def dequeue_job_and_maintain_ttl(self, timeout: int | None, max_idle_time: int | None = None) -> Any:
        result = super().dequeue_job_and_maintain_ttl(timeout, max_idle_time)  # type: ignore[misc]
        if result is not None:
            self._current = {"job_id": result[0].id, "dequeued": time.time()}
        return result

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)  # type: ignore[misc]
        self._current["started"] = time.time()

    def handle_job_success(self, job: Job, queue: Queue, started_job_registry: Any, execution: Any) -> None:
        self._current["done"] = time.time()
        super().handle_job_success(job, queue, started_job_registry, execution)  # type: ignore[misc]
        self._current["finished"] = time.time()
        self._current["worker_trips"] = self.trips.count
        self.records.append(self._current)


def _settings(database_url: str, redis_url: str) -> Settings:
    from bench.baselines import logs_to_devnull

    logs_to_devnull()  # as the `profilesync` commands log (and the ablations of this pipeline)
    return Settings(database_url=database_url, redis_url=redis_url, log_level="INFO")


def run_traced_publisher(database_url: str, redis_url: str, trace: str) -> None:
    """Process entry point: our publisher until SIGTERM, then its trace into `trace`."""
    from bench.baselines import stop_on_sigterm

    trips = count_process_round_trips()
    publisher = TracedPublisher(_settings(database_url, redis_url), stop_on_sigterm(), trips)
    publisher.run()
    Path(trace).write_text(json.dumps(publisher.records))


def run_traced_worker(database_url: str, redis_url: str, trace: str) -> None:
    """Process entry point: our worker (as `profilesync worker` makes it) until SIGTERM, then its trace."""
    trips = count_process_round_trips()
    settings = _settings(database_url, redis_url)
    runtime.configure(settings)
    worker = _make_worker(settings, None)
    worker.__class__ = type("TracedWorker", (TracedWorkerMixin, type(worker)), {})
    traced: Any = worker
    traced.trips, traced.records = trips, []
    try:
        worker.work(with_scheduler=True, logging_level="INFO")
    finally:
        runtime.close()
        Path(trace).write_text(json.dumps(traced.records))


def _trips_per_signup(records: list[dict[str, Any]], key: str, mine: set[str], signups: int) -> float | None:
    """Requests counted from the last record before these signups' first one to their last one, per signup."""
    ours = [i for i, r in enumerate(records) if mine & set(r.get("users", [r["job_id"]]))]
    if not ours or not signups:
        return None
    before = int(records[ours[0] - 1][key]) if ours[0] > 0 else 0
    return round((int(records[ours[-1]][key]) - before) / signups, 2)


def breakdown(trace_dir: Path, commits: dict[str, float]) -> dict[str, Any]:
    """p50/p99 (ms) of each stage over the signups in `commits` (user id → commit time), and the Redis
    requests per signup of each process."""
    publisher = json.loads((trace_dir / "publisher.json").read_text())
    worker = json.loads((trace_dir / "worker.json").read_text())
    by_job = {record["job_id"]: record for record in worker}
    times: dict[str, list[float]] = {name: [] for name, _, _ in STAGES}
    mine_jobs: set[str] = set()
    for record in publisher:
        done = by_job.get(record["job_id"])
        for user in record["users"]:
            if user not in commits or done is None:
                continue
            mine_jobs.add(record["job_id"])
            point = {**record, **done, "commit": commits[user]}
            for name, start, end in STAGES:
                times[name].append(point[end] - point[start])
    stages = {
        name: {
            "p50_ms": round(percentile(values, 50) * 1000, 3),
            "p99_ms": round(percentile(values, 99) * 1000, 3),
        }
        for name, values in times.items()
        if values
    }
    users = set(commits)
    return {
        "signups_traced": len(times["commit_to_profile"]),
        "jobs": len(mine_jobs),
        "stages": stages,
        "redis_round_trips_per_signup": {
            "publisher": _trips_per_signup(publisher, "publisher_trips", users, len(commits)),
            "worker": _trips_per_signup(worker, "worker_trips", mine_jobs, len(commits)),
        },
    }
