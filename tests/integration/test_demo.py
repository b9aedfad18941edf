"""`profilesync demo` end to end, as a user runs it: its own embedded servers and subprocesses."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from profilesync.devkit.demo import NEXT_STEPS

DEMO = [sys.executable, "-m", "profilesync.cli", "demo"]


def _env() -> dict[str, str]:
    """No servers configured: the demo must not need (or touch) DATABASE_URL / REDIS_URL."""
    drop = {"DATABASE_URL", "REDIS_URL", "LISTEN_DATABASE_URL"}
    return {k: v for k, v in os.environ.items() if k not in drop}


def _listening(url: str) -> bool:
    parts = urlsplit(url)
    with socket.socket() as sock:
        return sock.connect_ex((parts.hostname or "127.0.0.1", parts.port or 0)) == 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_demo_runs_end_to_end_and_passes() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*DEMO, "--users", "200", "--rate", "200"], env=_env(), capture_output=True, text=True, timeout=120
    )
    elapsed = time.monotonic() - started
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    assert "demo PASSED" in out
    assert re.search(r"users \(live\) +200\n", out)
    assert re.search(r"profiles +200\n", out)
    assert re.search(r"users without profiles +0\n", out)
    assert re.search(r"conversations +200\n", out)
    assert re.search(r"chat failures +0\n", out)
    assert re.search(r"signups 200/200  profiles 200 ", out)  # the final progress line
    assert out.endswith(NEXT_STEPS)
    logdir = re.search(r"process logs in (\S+) \(kept if the demo fails\)", out)
    assert logdir is not None and not Path(logdir.group(1)).exists()
    assert elapsed < 60
    servers = re.search(r"PostgreSQL (\S+), Redis (\S+):", out)
    assert servers is not None
    assert not _listening(servers.group(1)) and not _listening(servers.group(2))


def test_demo_cleans_up_on_ctrl_c() -> None:
    demo = subprocess.Popen(
        [*DEMO, "--users", "100000", "--rate", "100"],
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert demo.stdout is not None
    lines = []
    try:
        for line in demo.stdout:
            lines.append(line)
            if "signups" in line and "/100000" in line:  # the first progress line
                break
        demo.send_signal(signal.SIGINT)
        rest = demo.stdout.read()
        code = demo.wait(timeout=60)
    finally:
        if demo.poll() is None:
            demo.kill()
            demo.wait()
    out = "".join(lines) + rest
    assert code == 130, out
    assert "interrupted: stopping processes and servers" in out
    servers = re.search(r"PostgreSQL (\S+), Redis (\S+):", out)
    assert servers is not None
    assert not _listening(servers.group(1)) and not _listening(servers.group(2))
    pids = re.search(r"running \(pids ([\d, ]+)\)", out)
    assert pids is not None
    for pid in pids.group(1).split(", "):
        assert not _alive(int(pid)), f"process {pid} survived the demo"
    logdir = re.search(r"process logs in (\S+)", out)
    assert logdir is not None
    shutil.rmtree(logdir.group(1))  # kept for the user after an interrupt; the test removes it
