"""The /metrics + /healthz server and the container healthcheck that probes it (no database needed)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest

from profilesync import metrics
from profilesync.config import Settings
from profilesync.devkit.embedded import free_port
from profilesync.errors import ConfigError
from profilesync.publisher.gauges import DatabaseGauges
from profilesync.publisher.service import Publisher
from tests.scrape import get, sample


@pytest.fixture
def reason() -> list[str | None]:
    return [None]


@pytest.fixture
def settings(reason: list[str | None]) -> Iterator[Settings]:
    settings = Settings(metrics_port=free_port())
    registry = metrics.registry([metrics.PROFILES_CREATED])
    server = metrics.serve(settings, registry, lambda: reason[0])
    assert server is not None
    yield settings
    server.shutdown()


def test_metrics_and_healthz_answer_and_healthz_gives_its_reason(
    settings: Settings, reason: list[str | None]
) -> None:
    port = settings.metrics_port
    assert port is not None
    before = sample(port, "profilesync_profiles_created_total")
    metrics.PROFILES_CREATED.inc(3)
    assert sample(port, "profilesync_profiles_created_total") == (before or 0) + 3
    assert sample(port, "profilesync_events_enqueued_total") is None  # only what this process produces
    assert sample(port, "process_cpu_seconds_total") is not None
    assert get(port, "/healthz") == (200, "ok\n")
    reason[0] = "database: connection refused"
    assert get(port, "/healthz") == (503, "database: connection refused\n")
    assert get(port, "/")[0] == 404


def test_metrics_are_off_unless_a_port_is_set() -> None:
    assert metrics.serve(Settings(), metrics.registry([]), lambda: None) is None


def test_a_port_in_use_is_a_one_line_config_error(settings: Settings) -> None:
    with pytest.raises(ConfigError, match="PROFILESYNC_METRICS_PORT"):
        metrics.serve(settings, metrics.registry([]), lambda: None)


def test_container_healthcheck_exits_by_the_answer_of_healthz(
    settings: Settings, reason: list[str | None]
) -> None:
    env = {
        **os.environ,
        "PROFILESYNC_METRICS_PORT": str(settings.metrics_port),
        "PROFILESYNC_METRICS_HOST": "0.0.0.0",
    }
    check = [sys.executable, "-m", "profilesync", "healthcheck"]
    healthy = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
    assert (healthy.returncode, healthy.stdout) == (0, "ok\n")
    reason[0] = "publisher loop stalled: no pass for 42s"
    sick = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
    assert (sick.returncode, sick.stderr) == (1, "publisher loop stalled: no pass for 42s\n")
    env["PROFILESYNC_METRICS_PORT"] = str(free_port())
    nobody = subprocess.run(check, env=env, capture_output=True, text=True, timeout=60)
    assert nobody.returncode == 1 and "Connection refused" in nobody.stderr


def test_outbox_gauges_are_left_out_while_the_database_does_not_answer() -> None:
    gauges = DatabaseGauges(f"postgresql://postgres@127.0.0.1:{free_port()}/postgres")
    assert list(gauges.collect()) == []


def test_publisher_health_names_what_is_wrong() -> None:
    publisher = Publisher(Settings(safety_interval=1.0))
    assert publisher.health() == "not connected yet"
    publisher._down = None
    assert publisher.health() is None
    publisher._beat -= 13
    assert (publisher.health() or "").startswith("publisher loop stalled: no pass for 13s")
