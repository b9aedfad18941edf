"""`profilesync` subcommands as child processes: the demo's publisher and workers, the fault suite's."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path


class Children:
    """Named children, each in its own session: Ctrl-C reaches only the parent, and a kill takes the child's
    whole process group (a worker's forked RQ scheduler too), as when a container dies.

    A child's output goes to LOGDIR/NAME.log, appended to when a name is started again.
    """

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self.env = env
        self.logdir = logdir
        self.running: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """`profilesync ARGS…` as child NAME; `env` adds to (overrides) the shared environment."""
        assert name not in self.running, f"{name} already running"
        with (self.logdir / f"{name}.log").open("ab") as sink:
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", "profilesync.cli", *args],
                env={**self.env, **(env or {})},
                stdout=sink,
                stderr=sink,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def dead(self) -> dict[str, int | None]:
        """Children that exited on their own: name → exit code."""
        return {name: p.returncode for name, p in self.running.items() if p.poll() is not None}

    def kill(self, name: str) -> None:
        """SIGKILL the child's process group (kill -9, no clean shutdown)."""
        process = self.running.pop(name)
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)

    def stop(self, timeout: float = 20.0) -> dict[str, int | None]:
        """SIGTERM every child (their clean shutdown path); SIGKILL the groups still there after `timeout`.

        Returns name → exit code, None for a child that had to be killed.
        """
        for process in self.running.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes: dict[str, int | None] = {}
        deadline = time.monotonic() + timeout
        for name, process in self.running.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                codes[name] = None
        self.running.clear()
        return codes

    def log(self, name: str) -> str:
        path = self.logdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def logs(self) -> str:
        """Every child's log, one after the other."""
        return "".join(p.read_text(errors="replace") for p in sorted(self.logdir.glob("*.log")))
