"""Reading a running process's /metrics and /healthz (PROFILESYNC_METRICS_PORT) in tests."""

from __future__ import annotations

import urllib.error
import urllib.request

from prometheus_client.parser import text_string_to_metric_families


def get(port: int, path: str) -> tuple[int, str]:
    """Status and body of GET http://127.0.0.1:PORT/PATH; (0, error) while nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


def sample(port: int, name: str) -> float | None:
    """The value of sample NAME (no labels) in the process's /metrics; None when absent."""
    status, text = get(port, "/metrics")
    if status != 200:
        return None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and not s.labels:
                return float(s.value)
    return None
