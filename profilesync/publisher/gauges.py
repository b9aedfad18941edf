"""The database as Prometheus gauges, read at scrape time: the outbox (pending events, the oldest one's age,
failed events) and users without a profile; and the queue's failed jobs from Redis.

Each database figure is one small aggregate on the gauges' own connection, bounded by a statement timeout and
cached (CachedQuery.every) so that scrapes, however many, cost the database at most one query per interval.
When a query fails its gauges are left out of the scrape (an absent series alerts; a stale value would not).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
import redis
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from rq.registry import FailedJobRegistry
from rq.serializers import JSONSerializer

from profilesync import db, metrics
from profilesync.config import Settings
from profilesync.logs import get_logger
from profilesync.queueing import connect_redis

# Users without a profile (doctor's count) scans auth.users against the profile table: once a minute at most.
_PROFILE_GAP = "SELECT without_profile, unrecorded FROM profile_sync.profile_gap()"

_OUTBOX = """
SELECT count(*) FILTER (WHERE failed_at IS NULL),
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE failed_at IS NULL)), 0)::float8,
       count(*) FILTER (WHERE failed_at IS NOT NULL)
FROM profile_sync.signup_events
"""


@dataclass(frozen=True)
class CachedQuery:
    """One query whose row's columns are gauges, read at most once per `every` seconds."""

    sql: str
    gauges: tuple[tuple[str, str], ...]  # (name, help) per column
    every: float
    timeout_ms: int


OUTBOX = CachedQuery(
    _OUTBOX,
    (
        ("profilesync_outbox_pending", "Signup events waiting for their profile (enqueued or not)"),
        ("profilesync_outbox_oldest_age_seconds", "Age of the oldest event waiting for its profile"),
        ("profilesync_failed_events", "Signup events that failed for good (profilesync replay --events)"),
    ),
    every=2.0,
    timeout_ms=2000,
)
PROFILE_GAP = CachedQuery(
    _PROFILE_GAP,
    (
        ("profilesync_users_without_profile", "Live users without a profile (in flight or stuck)"),
        (
            "profilesync_users_unrecorded",
            "Live users with neither a profile nor a signup event (the sweeper or a backfill records them)",
        ),
    ),
    every=60.0,
    timeout_ms=10_000,
)

log = get_logger(__name__)


class DatabaseGauges(Collector):
    def __init__(self, database_url: str, queries: tuple[CachedQuery, ...] = (OUTBOX, PROFILE_GAP)) -> None:
        self.database_url = database_url
        self.queries = queries
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._read_at = {query: float("-inf") for query in queries}
        self._values: dict[CachedQuery, tuple[float, ...] | None] = {}

    def describe(self) -> Iterator[GaugeMetricFamily]:
        """The families without values (prometheus_client calls collect() at registration otherwise)."""
        for query in self.queries:
            for name, help_text in query.gauges:
                yield GaugeMetricFamily(name, help_text)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        for query in self.queries:
            values = self._cached(query)
            if values is not None:
                for (name, help_text), value in zip(query.gauges, values, strict=True):
                    yield GaugeMetricFamily(name, help_text, value)

    def _cached(self, query: CachedQuery) -> tuple[float, ...] | None:
        with self._lock:
            if time.monotonic() - self._read_at[query] >= query.every:
                self._read_at[query] = time.monotonic()
                self._values[query] = self._read(query)
            return self._values.get(query)

    def _read(self, query: CachedQuery) -> tuple[float, ...] | None:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = db.connect(
                    self.database_url, autocommit=True, application_name="profilesync-gauges"
                )
            with self._conn.transaction():  # SET LOCAL: also right behind a transaction pooler
                self._conn.execute(f"SET LOCAL statement_timeout = {query.timeout_ms}")
                row = self._conn.execute(query.sql).fetchone()
        except psycopg.Error as exc:
            log.warning("cannot read gauges", gauges=query.gauges[0][0], error=str(exc).partition("\n")[0])
            return None
        assert row is not None
        return tuple(float(value) for value in row)

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class FailedJobsGauge(Collector):
    """The queue's failed jobs (RQ's FailedJobRegistry, as `profilesync failed` lists them): one ZCARD."""

    def __init__(self, connection: redis.Redis, queue: str) -> None:
        self.connection = connection
        self.key = FailedJobRegistry(queue, connection=connection, serializer=JSONSerializer).key

    def describe(self) -> Iterator[GaugeMetricFamily]:
        yield GaugeMetricFamily(FAILED_JOBS[0], FAILED_JOBS[1])

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            failed = int(self.connection.zcard(self.key))
        except redis.RedisError as exc:
            log.warning("cannot read the failed jobs gauge", error=str(exc))
            return
        yield GaugeMetricFamily(FAILED_JOBS[0], FAILED_JOBS[1], failed)


def publisher_metrics(settings: Settings) -> list[Collector]:
    """What a publisher's /metrics serves (and what the shipped alerts and dashboard may read)."""
    return [
        metrics.EVENTS_ENQUEUED,
        metrics.SWEEPER_RECORDED,
        DatabaseGauges(settings.database_url),
        FailedJobsGauge(connect_redis(settings.redis_url), settings.queue),
    ]


FAILED_JOBS = ("profilesync_failed_jobs", "Jobs in the queue's failed registry (profilesync failed; replay)")
