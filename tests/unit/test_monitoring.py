"""The shipped alert rules, scrape config and dashboard read only metrics the code exports: a renamed metric
fails here. (promtool's own checks and rule unit tests: tests/integration/test_monitoring.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.registry import Collector

from profilesync.config import Settings
from profilesync.publisher.gauges import publisher_metrics
from profilesync.worker.main import WORKER_METRICS

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "profilesync.rules.yml"
DASHBOARD = DEPLOY / "grafana" / "profilesync.json"
SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_sum", "_count", "_created")}
NAME = re.compile(r"\bprofilesync_[a-z_]+\b")


def exported() -> set[str]:
    """Every series name a publisher's or a worker's /metrics can carry."""
    settings = Settings(database_url="postgresql://nobody@127.0.0.1:1/none", redis_url="redis://127.0.0.1:1")
    collectors: list[Collector] = [*publisher_metrics(settings), *WORKER_METRICS]
    names = set()
    for collector in collectors:
        for family in collector.describe():
            names |= {family.name + suffix for suffix in SUFFIXES.get(family.type, ("",))}
    return names


def rule_expressions() -> dict[str, str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return {rule["alert"]: rule["expr"] for group in groups for rule in group["rules"]}


def dashboard_targets() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [(panel, target) for panel in panels for target in panel["targets"]]


def test_the_alerts_read_only_exported_metrics_and_name_a_runbook_section() -> None:
    names = exported()
    assert {"profilesync_outbox_pending", "profilesync_signup_to_profile_seconds_bucket"} <= names
    for alert, expr in rule_expressions().items():
        assert set(NAME.findall(expr)) <= names, alert
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    anchors = {_anchor(line) for line in operations.splitlines() if line.startswith("#")}
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            page, _, anchor = rule["annotations"]["runbook"].partition("#")
            assert page == "docs/operations.md" and anchor in anchors, rule["alert"]


def test_the_dashboard_reads_only_exported_metrics_through_its_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    (variable,) = dashboard["templating"]["list"]
    assert (variable["type"], variable["query"]) == ("datasource", "prometheus")
    datasource = {"type": "prometheus", "uid": "${" + variable["name"] + "}"}
    names = exported()
    pairs = dashboard_targets()
    assert len({panel["id"] for panel, _ in pairs}) == len(dashboard["panels"])  # every panel queries
    for panel, target in pairs:
        assert panel["datasource"] == target["datasource"] == datasource, panel["title"]
        assert target["expr"].strip() and target["refId"], panel["title"]
        used = set(NAME.findall(target["expr"]))
        assert used <= names, (panel["title"], used - names)
        assert used or 'up{job=~"profilesync-' in target["expr"], panel["title"]
    used_anywhere = {name for _, target in pairs for name in NAME.findall(target["expr"])}
    assert "profilesync_profiles_created_total" in used_anywhere
    assert "profilesync_events_enqueued_total" in used_anywhere


def test_the_jobs_the_alerts_name_are_the_scrape_configs_jobs() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"] for job in config["scrape_configs"]}
    named = {job for expr in rule_expressions().values() for job in re.findall(r'job="([^"]+)"', expr)}
    assert named == jobs == {"profilesync-publisher", "profilesync-worker"}


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = heading.lstrip("#").strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
