"""docker-compose.yml and Dockerfile: no Docker engine here, so check they parse and every command exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

from profilesync import cli
from profilesync.config import Settings, is_transaction_pooler

ROOT = Path(__file__).resolve().parents[2]
HEALTHZ = ["CMD", "profilesync", "healthcheck"]  # GET its own /healthz (tests/unit/test_metrics.py)

# `rq-dashboard --help` of rq-dashboard 0.9.0 (the version the Dockerfile pins).
RQ_DASHBOARD_OPTIONS = {
    "-b", "--bind", "-p", "--port", "--url-prefix", "--username", "--password", "-c", "--config",
    "-u", "--redis-url", "--poll-interval", "--interval", "--extra-path", "--disable-delete", "--debug",
    "--normal", "-v", "--verbose", "-j", "--json", "--show-full-args",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = compose["services"]
    return result


def _app_services(services: dict[str, Any]) -> dict[str, Any]:
    return {name: s for name, s in services.items() if s.get("build", {}).get("target") == "app"}


def test_compose_has_the_designed_services(services: dict[str, Any]) -> None:
    assert {"postgres", "redis", "migrate", "publisher", "worker", "dashboard"} <= set(services)
    assert set(_app_services(services)) == {"migrate", "publisher", "worker", "ops"}


def test_every_app_command_and_healthcheck_is_a_valid_profilesync_invocation(
    services: dict[str, Any],
) -> None:
    parser = cli.build_parser()
    for name, service in _app_services(services).items():
        args = parser.parse_args(service["command"])  # exits (fails the test) on an unknown command or flag
        assert args.func is not None, name
        health = service.get("healthcheck", {}).get("test")
        if health:
            assert health[:2] == ["CMD", "profilesync"], name
            assert parser.parse_args(health[2:]).command in ("doctor", "healthcheck"), name


def test_roles(services: dict[str, Any]) -> None:
    assert services["migrate"]["command"] == ["migrate", "--dev-auth-stub"]
    assert services["migrate"]["restart"] == "no"
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert services["publisher"]["command"] == ["publisher"]
    assert services["publisher"]["deploy"]["replicas"] == 2
    assert services["worker"]["command"] == ["worker"]
    assert "container_name" not in services["worker"]  # scalable: docker compose up --scale worker=N
    for name in ("publisher", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"


def test_publisher_and_worker_healthchecks_probe_their_own_healthz(services: dict[str, Any]) -> None:
    for name in ("publisher", "worker"):
        service = services[name]
        assert service["healthcheck"]["test"] == HEALTHZ, name
        env = service["environment"]
        settings = Settings(
            metrics_port=env["PROFILESYNC_METRICS_PORT"], metrics_host=env["PROFILESYNC_METRICS_HOST"]
        )
        assert settings.metrics_port == 9100 and settings.metrics_host == "0.0.0.0", name
        assert "ports" not in service  # scraped on the compose network; replicas would clash on a host port


def test_redis_never_evicts_and_keeps_an_append_only_file(services: dict[str, Any]) -> None:
    command = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in command
    assert "--maxmemory-policy noeviction" in command


def test_listen_connection_is_not_a_transaction_pooler(services: dict[str, Any]) -> None:
    for name, service in _app_services(services).items():
        env = service["environment"]
        listen = env.get("LISTEN_DATABASE_URL") or env["DATABASE_URL"]
        assert not is_transaction_pooler(listen), name


def test_dashboard_uses_the_json_serializer_and_known_flags(services: dict[str, Any]) -> None:
    dashboard = services["dashboard"]
    assert dashboard["build"]["target"] == "dashboard"
    flags = [arg for arg in dashboard["command"] if arg.startswith("-")]
    assert set(flags) <= RQ_DASHBOARD_OPTIONS
    assert "--json" in flags
    assert dashboard["command"][dashboard["command"].index("--redis-url") + 1].startswith("redis://redis:")


def test_prometheus_loads_the_shipped_rules_and_scrapes_both_roles(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    assert prometheus["profiles"] == ["monitoring"]  # opt-in: `docker compose --profile monitoring up`
    assert "./deploy/prometheus:/etc/prometheus:ro" in prometheus["volumes"]
    assert prometheus["command"] == ["--config.file=/etc/prometheus/prometheus.yml"]
    config = yaml.safe_load((ROOT / "deploy" / "prometheus" / "prometheus.yml").read_text())
    assert config["rule_files"] == ["profilesync.rules.yml"]  # beside the config in the mounted folder
    targets = {
        job["job_name"]: (sd["names"], sd["port"])
        for job in config["scrape_configs"]
        for sd in job["dns_sd_configs"]
    }
    port = int(services["publisher"]["environment"]["PROFILESYNC_METRICS_PORT"])
    assert targets == {
        "profilesync-publisher": (["publisher"], port),
        "profilesync-worker": (["worker"], port),
    }


def test_dockerfile_builds_from_the_source_tree() -> None:
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+) AS (\S+)$", text, re.MULTILINE)
    assert stages == [("python:3.11-slim", "app"), ("app", "dashboard")]
    # a regular install, as from a wheel, at the versions the tests ran with
    assert "pip install -c constraints.txt . " in text and "pip install -e" not in text
    assert 'ENTRYPOINT ["profilesync"]' in text
    assert 'pip install "rq-dashboard==0.9.0"' in text
    for source in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE):
        for path in source.split():
            assert (ROOT / path.rstrip("/")).exists(), path
    # every directory the wheel is built from (pyproject's package-dir: sql/ becomes profilesync.sql)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    sources = {pyproject["package-dir"].get(p, p.replace(".", "/")) for p in pyproject["packages"]}
    copied = {
        path.rstrip("/")
        for line in re.findall(r"^COPY (.+) \S+$", text, re.MULTILINE)
        for path in line.split()
    }
    assert {s.split("/")[0] for s in sources} <= copied
