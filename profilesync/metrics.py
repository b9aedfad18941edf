"""Prometheus metrics, /metrics and /healthz of a long-running process (PROFILESYNC_METRICS_PORT).

Each process registers only what it produces: the publisher its enqueued events and the outbox gauges, a
worker its profiles, failed jobs and signup→profile latencies. Producing a figure costs a counter increment;
anything that needs a query runs at scrape time, in the server's thread, cached (the outbox gauges). /healthz
answers from the process's own state: no request opens a connection anywhere. One thread serves both, with a
cap on connections and a read timeout (profilesync.httpserve).
"""

from __future__ import annotations

import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from profilesync.config import Settings
from profilesync.errors import ConfigError
from profilesync.httpserve import Answer, BoundedHTTPServer
from profilesync.logs import get_logger

EVENTS_ENQUEUED = Counter(
    "profilesync_events_enqueued", "Signup events the publisher put into Redis as jobs", registry=None
)
PROFILES_CREATED = Counter("profilesync_profiles_created", "Profiles this worker created", registry=None)
JOBS_FAILED = Counter(
    "profilesync_jobs_failed", "Job executions that raised (a retried job counts each time)", registry=None
)
DROPPED_VALUES = Counter(
    "profilesync_dropped_values",
    "Mapped values the profile table's constraints rejected: stored as NULL, the profile created anyway",
    registry=None,
)
SWEEPER_RECORDED = Counter(
    "profilesync_sweeper_recorded",
    "Users the sweeper found with neither profile nor signup event (their signup trigger missing or gave up)",
    registry=None,
)
SIGNUP_TO_PROFILE = Histogram(
    "profilesync_signup_to_profile_seconds",
    "From a signup's outbox row (written in the signup transaction) to its profile",
    # From 1 ms: a healthy pipeline profiles a signup in a few milliseconds.
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 1800),
    registry=None,
)

HealthCheck = Callable[[], str | None]
"""Returns None when the process is healthy, else a one-line reason."""

log = get_logger(__name__)


def registry(collectors: Iterable[Collector]) -> CollectorRegistry:
    """A registry of the process's own collectors, plus its CPU, memory and open files."""
    result = CollectorRegistry()
    ProcessCollector(registry=result)
    for collector in collectors:
        result.register(collector)
    return result


def pool_registry() -> CollectorRegistry:
    """The metrics of a pool's forked workers, added up (prometheus_client's multiprocess mode).

    Only when PROMETHEUS_MULTIPROC_DIR was set before prometheus_client was first imported (`profilesync
    worker --processes N` does); the pool's own process produces none.
    """
    result = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        MultiProcessCollector(result)  # type: ignore[no-untyped-call]
    return result


def serve(settings: Settings, metrics: CollectorRegistry, health: HealthCheck) -> BoundedHTTPServer | None:
    """Serve /metrics and /healthz in a daemon thread when PROFILESYNC_METRICS_PORT is set; None otherwise."""
    if settings.metrics_port is None:
        return None
    try:
        server = BoundedHTTPServer(
            (settings.metrics_host, settings.metrics_port), _responder(metrics, health)
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot serve metrics on PROFILESYNC_METRICS_HOST:PROFILESYNC_METRICS_PORT "
            f"{settings.metrics_host}:{settings.metrics_port}: {exc.strerror or exc}"
        ) from exc
    threading.Thread(target=server.serve_forever, name="profilesync-metrics", daemon=True).start()
    log.info("serving /metrics and /healthz", host=settings.metrics_host, port=server.server_address[1])
    return server


def cached(check: HealthCheck, seconds: float, clock: Callable[[], float] = time.monotonic) -> HealthCheck:
    """`check` run at most once per `seconds`; the answers in between repeat its last one."""
    last: list[tuple[float, str | None]] = []

    def answer() -> str | None:
        now = clock()
        if not last or now - last[0][0] >= seconds:
            last[:] = [(now, check())]
        return last[0][1]

    return answer


def one_line(exc: BaseException) -> str:
    """An error as one line, for /healthz: its first line, or its class when it has no message."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


_TEXT = "text/plain; charset=utf-8"


def _responder(metrics: CollectorRegistry, health: HealthCheck) -> Callable[[str], Answer]:
    def respond(path: str) -> Answer:
        if path == "/metrics":
            return 200, generate_latest(metrics), CONTENT_TYPE_LATEST
        if path == "/healthz":
            try:
                reason = health()
            except Exception as exc:  # a probe that broke is itself the reason
                reason = f"health check failed: {one_line(exc)}"
            return (200, b"ok\n", _TEXT) if reason is None else (503, reason.encode() + b"\n", _TEXT)
        return 404, b"not found: try /metrics or /healthz\n", _TEXT

    return respond


def probe(settings: Settings) -> tuple[bool, str]:
    """`profilesync healthcheck`: GET /healthz of the process serving on PROFILESYNC_METRICS_PORT here;
    (healthy, its answer)."""
    if settings.metrics_port is None:
        return False, "PROFILESYNC_METRICS_PORT is not set"
    host = "127.0.0.1" if settings.metrics_host in ("0.0.0.0", "") else settings.metrics_host
    url = f"http://{host}:{settings.metrics_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return True, response.read().decode().strip()
    except urllib.error.HTTPError as exc:
        return False, exc.read().decode().strip()
    except OSError as exc:
        return False, f"{url}: {one_line(exc)}"
