"""/metrics and /healthz of the real `profilesync publisher` and `profilesync worker` processes."""

from __future__ import annotations

import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

from profilesync.config import Settings
from profilesync.devkit.children import Children
from profilesync.devkit.embedded import free_port
from profilesync.publisher.gauges import OUTBOX, PROFILE_GAP, DatabaseGauges
from tests.harness import bulk_signup, count, process_env, reject_profile_of, signup, wait_for
from tests.scrape import get, sample

BURST = 40


def test_metrics_count_a_burst_of_signups_and_healthz_is_ok(
    conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path
) -> None:
    env = process_env(settings)
    publisher, worker = free_port(), free_port()
    children = Children(env, tmp_path)
    children.start("publisher", "publisher", env={"PROFILESYNC_METRICS_PORT": str(publisher)})
    children.start("worker", "worker", env={"PROFILESYNC_METRICS_PORT": str(worker)})
    try:
        for port in (publisher, worker):
            assert wait_for(lambda port=port: get(port, "/healthz") == (200, "ok\n")), children.logs()[-3000:]
        assert sample(publisher, "profilesync_events_enqueued_total") == 0
        assert sample(publisher, "profilesync_outbox_pending") == 0
        assert sample(worker, "profilesync_profiles_created_total") == 0
        assert sample(worker, "profilesync_signup_to_profile_seconds_count") == 0
        assert get(worker, "/nothing")[0] == 404

        # The app's own constraint rejects one user's profile for good: a failed job and a failed event.
        mallory = uuid.uuid4()
        reject_profile_of(conn, mallory)
        bulk_signup(conn, BURST)
        signup(conn, "google", id=mallory, user_meta={"full_name": "Mallory"})
        assert wait_for(lambda: count(conn, "SELECT count(*) FROM public.user_profiles") == BURST)

        assert wait_for(lambda: sample(publisher, "profilesync_failed_events") == 1)
        assert sample(publisher, "profilesync_outbox_pending") == 0
        assert sample(publisher, "profilesync_outbox_oldest_age_seconds") == 0
        assert sample(publisher, "profilesync_events_enqueued_total") == BURST + 1
        assert sample(worker, "profilesync_profiles_created_total") == BURST
        assert sample(worker, "profilesync_signup_to_profile_seconds_count") == BURST
        latency = sample(worker, "profilesync_signup_to_profile_seconds_sum")
        assert latency is not None and 0 < latency / BURST < 20
        failed = sample(worker, "profilesync_jobs_failed_total")
        assert failed is not None and failed >= 1
        assert get(publisher, "/healthz") == (200, "ok\n")
        assert get(worker, "/healthz") == (200, "ok\n")
    finally:
        codes = children.stop(timeout=15)
    assert codes == {"publisher": 0, "worker": 0}, children.logs()[-4000:]


def test_outbox_gauges_show_a_backlog_while_no_worker_runs(
    conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path
) -> None:
    env = {**os.environ, "DATABASE_URL": settings.database_url, "REDIS_URL": settings.redis_url}
    port = free_port()
    children = Children(env, tmp_path)
    children.start("publisher", "publisher", env={"PROFILESYNC_METRICS_PORT": str(port)})
    try:
        assert wait_for(lambda: get(port, "/healthz") == (200, "ok\n")), children.logs()[-3000:]
        bulk_signup(conn, 7)
        assert wait_for(lambda: sample(port, "profilesync_events_enqueued_total") == 7)
        assert wait_for(lambda: sample(port, "profilesync_outbox_pending") == 7)
        age = sample(port, "profilesync_outbox_oldest_age_seconds")
        assert age is not None and age > 0
    finally:
        children.stop(timeout=15)


def test_outbox_gauges_query_the_database_at_most_once_per_cache_interval(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    bulk_signup(conn, 3)
    gauges = DatabaseGauges(database_url, (OUTBOX,))
    reads: list[object] = []
    read = gauges._read
    gauges._read = lambda query: reads.append(query) or read(query)
    try:
        scrapes = [{m.name: m.samples[0].value for m in gauges.collect()} for _ in range(50)]
    finally:
        gauges.close()
    assert len(reads) == 1
    assert scrapes[-1]["profilesync_outbox_pending"] == 3


def test_outbox_gauges_give_up_at_their_statement_timeout(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    gauges = DatabaseGauges(database_url, (OUTBOX,))
    try:
        with conn.transaction():
            conn.execute("LOCK TABLE profile_sync.signup_events IN ACCESS EXCLUSIVE MODE")
            started = time.monotonic()
            assert list(gauges.collect()) == []  # left out of the scrape, not waited for
            assert time.monotonic() - started < OUTBOX.timeout_ms / 1000 + 8
    finally:
        gauges.close()


FLOOD = 300  # half-open connections, well above the server's cap (profilesync.httpserve.MAX_CONNECTIONS)


def _threads(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("Threads:")))


def _sessions(conn: psycopg.Connection[Any]) -> int:
    """Sessions ever opened to this database (PostgreSQL counts each backend at its start)."""
    return count(conn, "SELECT sessions FROM pg_stat_database WHERE datname = current_database()")


def test_a_flood_of_half_open_connections_starves_neither_healthz_nor_the_worker(
    conn: psycopg.Connection[Any], settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    children = Children(process_env(settings), tmp_path)
    children.start("publisher", "publisher")
    children.start("worker", "worker", env={"PROFILESYNC_METRICS_PORT": str(port)})
    flood: list[socket.socket] = []
    try:
        assert wait_for(lambda: get(port, "/healthz") == (200, "ok\n")), children.logs()[-3000:]
        pid = children.running["worker"].pid
        threads = _threads(pid)
        for _ in range(FLOOD):  # each sends the start of a request and never finishes it
            client = socket.create_connection(("127.0.0.1", port), timeout=5)
            client.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            flood.append(client)

        sessions = _sessions(conn)
        answers = [get(port, "/healthz") for _ in range(20)]
        bulk_signup(conn, BURST)  # the worker keeps creating profiles meanwhile
        assert wait_for(lambda: count(conn, "SELECT count(*) FROM public.user_profiles") == BURST)
        psycopg.connect(settings.database_url).close()  # one session the counter must show
        assert wait_for(lambda: _sessions(conn) >= sessions + 1)
        assert _threads(pid) <= threads + 1, (threads, _threads(pid))
    finally:
        for client in flood:
            client.close()
        codes = children.stop(timeout=15)
    assert answers == [(200, "ok\n")] * 20
    # /healthz opened no database session: one per request would be 20 or more; the publisher and worker may
    # open a few of their own meanwhile (a connection replaced after an interrupted batch) on a loaded box
    assert _sessions(conn) - (sessions + 1) < len(answers)
    assert codes == {"publisher": 0, "worker": 0}, children.logs()[-3000:]


def test_users_without_a_profile_are_counted_and_those_without_an_event_too(
    conn: psycopg.Connection[Any], database_url: str
) -> None:
    bulk_signup(conn, 3)  # no worker runs: three users in flight
    conn.execute(
        "DELETE FROM profile_sync.signup_events WHERE user_id IN (SELECT id FROM auth.users LIMIT 2)"
    )  # two of them as if their trigger had been missing

    def scrape() -> dict[str, float]:
        gauges = DatabaseGauges(database_url, (PROFILE_GAP,))
        try:
            return {m.name: m.samples[0].value for m in gauges.collect()}
        finally:
            gauges.close()

    assert scrape() == {"profilesync_users_without_profile": 3, "profilesync_users_unrecorded": 2}
