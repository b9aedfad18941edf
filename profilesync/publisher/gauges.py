"""The outbox as Prometheus gauges, read at scrape time: pending events, the oldest one's age, failed events.

One small aggregate over profile_sync.signup_events (rows leave it once their profile exists), on the gauges'
own connection, bounded by a statement timeout and cached for CACHE_SECONDS so that scrapes, however many,
cost the database at most one query per interval. When the query fails the gauges are left out of the scrape
(an absent series alerts; a stale value would not).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import psycopg
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from profilesync import db
from profilesync.logs import get_logger

CACHE_SECONDS = 2.0
STATEMENT_TIMEOUT_MS = 2000

_OUTBOX = """
SELECT count(*) FILTER (WHERE failed_at IS NULL),
       coalesce(extract(epoch FROM now() - min(created_at) FILTER (WHERE failed_at IS NULL)), 0)::float8,
       count(*) FILTER (WHERE failed_at IS NOT NULL)
FROM profile_sync.signup_events
"""

log = get_logger(__name__)


class OutboxGauges(Collector):
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._read_at = float("-inf")
        self._values: tuple[int, float, int] | None = None

    def collect(self) -> Iterator[GaugeMetricFamily]:
        values = self._cached()
        if values is None:
            return
        pending, oldest_age, failed = values
        yield GaugeMetricFamily(
            "profilesync_outbox_pending", "Signup events waiting for their profile (enqueued or not)", pending
        )
        yield GaugeMetricFamily(
            "profilesync_outbox_oldest_age_seconds",
            "Age of the oldest event waiting for its profile",
            oldest_age,
        )
        yield GaugeMetricFamily(
            "profilesync_failed_events",
            "Signup events that failed for good (profilesync replay --events)",
            failed,
        )

    def _cached(self) -> tuple[int, float, int] | None:
        with self._lock:
            if time.monotonic() - self._read_at >= CACHE_SECONDS:
                self._read_at = time.monotonic()
                self._values = self._read()
            return self._values

    def _read(self) -> tuple[int, float, int] | None:
        try:
            if self._conn is None or self._conn.closed or self._conn.broken:
                self._conn = db.connect(
                    self.database_url, autocommit=True, application_name="profilesync-gauges"
                )
            with self._conn.transaction():  # SET LOCAL: also right behind a transaction pooler
                self._conn.execute(f"SET LOCAL statement_timeout = {STATEMENT_TIMEOUT_MS}")
                row = self._conn.execute(_OUTBOX).fetchone()
        except psycopg.Error as exc:
            log.warning("cannot read the outbox gauges", error=str(exc).partition("\n")[0])
            return None
        assert row is not None
        return int(row[0]), float(row[1]), int(row[2])

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
