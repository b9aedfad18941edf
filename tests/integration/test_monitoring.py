"""promtool on the shipped Prometheus files: the rules and the scrape config are valid, and the rule unit
tests (deploy/prometheus/profilesync.rules.test.yml: each alert fires when it should, quiet otherwise) pass.

promtool comes from Debian's `prometheus` package; `./dev test --all` (CI) installs it, so there a missing
promtool fails; elsewhere the tests skip with one line saying how to get it."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

PROMETHEUS = Path(__file__).resolve().parents[2] / "deploy" / "prometheus"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    found = shutil.which("promtool")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool not found: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool not found (apt-get install prometheus): the rule tests run in ./dev test --all")
    return subprocess.run([found, *args], cwd=PROMETHEUS, capture_output=True, text=True, timeout=120)


def test_promtool_accepts_the_rules_and_the_scrape_config() -> None:
    for args in (("check", "rules", "profilesync.rules.yml"), ("check", "config", "prometheus.yml")):
        done = promtool(*args)
        assert done.returncode == 0, done.stdout + done.stderr


def test_each_alert_fires_when_it_should_and_stays_quiet_otherwise() -> None:
    done = promtool("test", "rules", "profilesync.rules.test.yml")
    assert done.returncode == 0, done.stdout + done.stderr
