"""`profilesync` subcommands as child processes: the demo's publisher and workers, the fault suite's."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType


class Children:
    """Named children, each in its own session: Ctrl-C reaches only the parent, and a kill takes the child's
    whole process group (a worker's forked RQ scheduler too), as when a container dies.

    A child's output goes to LOGDIR/NAME.log, appended to when a name is started again. With `open_files`,
    children start with that soft limit of open files (a service manager's usual 1,024), whatever the
    parent's.
    """

    def __init__(self, env: dict[str, str], logdir: Path, open_files: int | None = None) -> None:
        self.env = env
        self.logdir = logdir
        self.open_files = open_files
        self.running: dict[str, subprocess.Popen[bytes]] = {}
        self.commands: dict[str, tuple[tuple[str, ...], dict[str, str]]] = {}

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> None:
        """`profilesync ARGS…` as child NAME; `env` adds to (overrides) the shared environment."""
        assert name not in self.running, f"{name} already running"
        self.commands[name] = (args, env or {})
        with (self.logdir / f"{name}.log").open("ab") as sink, _soft_open_files(self.open_files):
            self.running[name] = subprocess.Popen(
                [sys.executable, "-m", "profilesync.cli", *args],
                env={**self.env, **(env or {})},
                stdout=sink,
                stderr=sink,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    def restart(self, name: str) -> int | None:
        """Start NAME again as it was last started, as a supervisor does; returns the exit code of the one
        before (None: it was still running, and is killed first)."""
        process = self.running.get(name)
        code = None if process is None else process.poll()
        if process is not None and code is None:
            self.kill(name)
        self.running.pop(name, None)
        args, env = self.commands[name]
        self.start(name, *args, env=env)
        return code

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


@contextmanager
def _soft_open_files(limit: int | None) -> Iterator[None]:
    """This process's soft limit of open files lowered to `limit` while a child spawns (it inherits it)."""
    if limit is None:
        yield
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(limit, hard), hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@contextmanager
def sigterm_interrupts() -> Iterator[None]:
    """SIGTERM unwinds like Ctrl-C, so servers and subprocesses are cleaned up either way."""

    def handler(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
